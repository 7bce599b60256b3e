# Sourced by run.sh and test.sh: create or reuse the project's virtual environment (.venv) and put it on
# PATH. Reinstalls only when pyproject.toml changed. Uses Python 3.11 (the torch wheels on this machine's
# disk, and a python-backend stub that tritonserver ships for it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZOO_VENV:-$ROOT/.venv}"
PY="${ZOO_PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment $VENV with $PY" >&2
  "$PY" -m venv "$VENV"
fi
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$VENV/.zoo-installed" 2>/dev/null || true)" != "$want" ]; then
  echo "installing embedding-zoo and its dependencies into $VENV (first run takes a few minutes)" >&2
  log="$VENV/pip-install.log"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e "$ROOT[dev]"; } \
      > "$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "installation failed; full log: $log" >&2
    exit 1
  fi
  echo "$want" > "$VENV/.zoo-installed"
fi
export PATH="$VENV/bin:$PATH"
export HF_HUB_DISABLE_TELEMETRY=1
cd "$ROOT"
