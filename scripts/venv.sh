#!/usr/bin/env bash
# Create or update a virtual environment holding exactly the packages of one lock file, plus this project.
# Usage: scripts/venv.sh VENV LOCK [--no-project]
# The environment is made anew whenever the lock changes, so nothing from an older lock stays behind; when
# only pyproject.toml changes (entry points, extras), the project alone is reinstalled. Every package is
# checked against the lock's hashes. --no-project: the lock's packages alone (the clients' environment, which
# only talks to a server). Python 3.11: the torch wheels on this machine's disk, and the
# python-backend stub that tritonserver ships for it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$1"
lock="$2"
project="${3:-}"
PY="${ZOO_PYTHON:-$(command -v python3.11 || command -v python3)}"
digest() { sha256sum "$1" | cut -d' ' -f1; }

run_logged() {  # run a command with its output in the venv's log; on failure show the log's end
  local log="$venv/install.log"
  if ! "$@" >>"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "installation failed; full log: $log" >&2
    exit 1
  fi
}

want_lock="$(digest "$lock")"
if [ "$(cat "$venv/.zoo-lock" 2>/dev/null || true)" != "$want_lock" ]; then
  if [ -e "$venv" ]; then
    [ -f "$venv/pyvenv.cfg" ] || { echo "$venv exists and is not a virtual environment; not touching it" >&2; exit 1; }
    echo "$(basename "$lock") changed: recreating $venv" >&2
    rm -rf "$venv"
  fi
  echo "creating $venv with $PY from $(basename "$lock") (first run takes a few minutes)" >&2
  "$PY" -m venv "$venv"
  # ZOO_VENV_NO_COMPILE=1: no .pyc files at install (a throw-away environment that imports a few modules once)
  compile=$([ -n "${ZOO_VENV_NO_COMPILE:-}" ] && echo --no-compile || echo --compile)
  run_logged "$venv/bin/python" -m pip install --no-input "$compile" --require-hashes --no-deps -r "$lock"
  echo "$want_lock" >"$venv/.zoo-lock"
  rm -f "$venv/.zoo-project"
fi
[ "$project" = "--no-project" ] && exit 0
want_project="$(digest "$ROOT/pyproject.toml")"
if [ "$(cat "$venv/.zoo-project" 2>/dev/null || true)" != "$want_project" ]; then
  # --no-deps: the lock alone decides every dependency; --no-build-isolation: setuptools comes from the lock
  run_logged "$venv/bin/python" -m pip install --no-input --no-deps --no-build-isolation -e "$ROOT"
  echo "$want_project" >"$venv/.zoo-project"
fi
