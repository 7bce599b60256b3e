#!/usr/bin/env bash
# Run the whole test suite (offline; starts and stops its own tritonserver on free loopback ports).
source "$(dirname "$0")/env.sh"
# espeak-ng speaks generated captions; chromium runs the browser test
source scripts/system-deps.sh espeak-ng:espeak-ng chromium:chromium
export HF_HUB_OFFLINE=1
exec python -m pytest "$@"
