#!/usr/bin/env bash
# Run the whole test suite (offline; starts and stops its own tritonserver on free loopback ports).
source "$(dirname "$0")/env.sh"
export HF_HUB_OFFLINE=1
exec python -m pytest "$@"
