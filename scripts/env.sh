# Sourced by run.sh and test.sh: create or reuse the project's virtual environment (.venv) from the lock
# (requirements.lock: every extra and the test references, pinned and hashed) and put it on PATH.
# Where nvidia-smi sees a GPU, the lock is requirements-gpu.lock instead: the same versions with
# onnxruntime-gpu in place of onnxruntime (the [gpu] extra; both are the module `onnxruntime`, so one or the
# other). ZOO_GPU=0 or 1 decides instead of nvidia-smi; ZOO_LOCK names a lock outright.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZOO_VENV:-$ROOT/.venv}"
gpu="${ZOO_GPU:-}"
if [ -z "$gpu" ]; then
  gpu=0
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then gpu=1; fi
fi
LOCK="$ROOT/requirements.lock"
[ "$gpu" = 1 ] && LOCK="$ROOT/requirements-gpu.lock"
export ZOO_ENV_LOCK="${ZOO_LOCK:-$LOCK}"  # the lock this environment holds (tests/test_install.py checks it)
"$ROOT/scripts/venv.sh" "$VENV" "$ZOO_ENV_LOCK"
export PATH="$VENV/bin:$PATH"
export HF_HUB_DISABLE_TELEMETRY=1
cd "$ROOT"
