#!/usr/bin/env bash
# Run the whole test suite (offline; starts and stops its own tritonserver on free loopback ports).
source "$(dirname "$0")/env.sh"
# espeak-ng speaks generated captions; chromium runs the browser test
source scripts/system-deps.sh espeak-ng:espeak-ng chromium:chromium
# the client libraries the door is tested with, in their own environment (pyproject.toml: [dependency-groups])
export ZOO_CLIENTS_VENV="${ZOO_CLIENTS_VENV:-$ROOT/.venv-clients}"
"$ROOT/scripts/venv.sh" "$ZOO_CLIENTS_VENV" "${ZOO_CLIENTS_LOCK:-$ROOT/requirements-clients.lock}" --no-project
export HF_HUB_OFFLINE=1
exec python -m pytest "$@"
