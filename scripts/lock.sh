#!/usr/bin/env bash
# Re-resolve every dependency to the newest versions pyproject.toml allows, run the whole test suite in a
# fresh virtual environment made from the new lock, and only if it passes, write the new lock files:
#   requirements.lock       the core, every extra and the test references (what run.sh and test.sh install)
#   requirements-core.lock  the core alone, at the same versions (tests/test_install.py builds it)
#   requirements-clients.lock  the client libraries the door is tested with ([dependency-groups] clients)
#   requirements-gpu.lock   requirements.lock with onnxruntime-gpu ([gpu]) in place of onnxruntime, at the
#                           same versions otherwise (scripts/env.sh takes it on a machine with a GPU)
# Both are for Linux x86-64 and Python 3.11. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/venv.sh" "${ZOO_VENV:-$ROOT/.venv}" "$ROOT/requirements.lock"  # uv, at its locked version
uv="${ZOO_VENV:-$ROOT/.venv}/bin/uv"
cd "$ROOT"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
compile() {
  # setuptools is locked too: the project is installed with --no-build-isolation. `typing` (a Python 2
  # backport that resemblyzer still names) is the standard library's on 3.11 and has no installable release.
  printf 'setuptools>=68,<81\n' | "$uv" pip compile pyproject.toml - --python-version 3.11 \
    --python-platform x86_64-manylinux_2_36 --generate-hashes --no-header --quiet --no-emit-package typing "$@"
}
compile --extra dev -o "$tmp/requirements.lock"
compile -c "$tmp/requirements.lock" -o "$tmp/requirements-core.lock"
# onnxruntime-gpu is the module `onnxruntime` too: the core's onnxruntime is left out of the GPU lock
compile --extra dev --extra gpu --no-emit-package onnxruntime -c "$tmp/requirements.lock" \
  -o "$tmp/requirements-gpu.lock"
# the annotations name the lock beside them, not the tmp copy
sed -i "s#-c $tmp/#-c #" "$tmp/requirements-core.lock" "$tmp/requirements-gpu.lock"
"$uv" pip compile --group pyproject.toml:clients --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
  --generate-hashes --no-header --quiet -o "$tmp/requirements-clients.lock"
ZOO_VENV="$tmp/venv" ZOO_LOCK="$tmp/requirements.lock" ZOO_CORE_LOCK="$tmp/requirements-core.lock" \
  ZOO_GPU=0 ZOO_GPU_LOCK="$tmp/requirements-gpu.lock" \
  ZOO_CLIENTS_VENV="$tmp/venv-clients" ZOO_CLIENTS_LOCK="$tmp/requirements-clients.lock" \
  "$ROOT/scripts/test.sh" "$@"
cp "$tmp/requirements.lock" "$tmp/requirements-core.lock" "$tmp/requirements-clients.lock" \
  "$tmp/requirements-gpu.lock" "$ROOT/"
echo "the suite passed: requirements.lock, requirements-core.lock, requirements-clients.lock and" \
  "requirements-gpu.lock rewritten" >&2
