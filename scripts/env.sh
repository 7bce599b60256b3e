# Sourced by run.sh and test.sh: create or reuse the project's virtual environment (.venv) from the lock
# (requirements.lock: every extra and the test references, pinned and hashed) and put it on PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZOO_VENV:-$ROOT/.venv}"
"$ROOT/scripts/venv.sh" "$VENV" "${ZOO_LOCK:-$ROOT/requirements.lock}"
export PATH="$VENV/bin:$PATH"
export HF_HUB_DISABLE_TELEMETRY=1
cd "$ROOT"
