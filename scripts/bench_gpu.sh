#!/usr/bin/env bash
# The GPU figures in about 8 minutes: MiniLM in-process beside sentence-transformers (fp32 and fp16) at batch
# 1, 32 and 128 and on short sentences, on torch, torch fp16, padding-free torch, torch with tokenization in
# line, and ONNX Runtime's CUDA provider; then served through tritonserver where its wheel runs here.
# Usage: scripts/bench_gpu.sh OUT [more scripts.bench arguments]
# OUT gets benchmarks-gpu.json and BENCHMARKS-GPU.md. Run from a checkout on a machine with a CUDA GPU: the
# environment is the one scripts/env.sh makes there (requirements-gpu.lock, onnxruntime-gpu), or, where
# ZOO_BENCH_PYTHON names one, that interpreter with torch, onnxruntime-gpu and sentence-transformers.
set -euo pipefail
out="${1:?usage: scripts/bench_gpu.sh OUT [scripts.bench arguments]}"
shift
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${ZOO_BENCH_PYTHON:-}" ]; then
  py="$ZOO_BENCH_PYTHON"
else
  ZOO_GPU=1 source scripts/env.sh
  py=python
fi
sections=text
if "$py" -c "from serving.server import find_tritonserver; find_tritonserver()" >/dev/null 2>&1; then
  sections=text,served
else
  echo "no tritonserver here: the served rows are left out" >&2
fi
export HF_HUB_OFFLINE=1
exec "$py" -m scripts.bench --sections "$sections" --device cuda --no-aligned \
  --runtimes torch,torch-fp16,torch-packed,torch-inline,onnx --served-runtimes torch,onnx \
  --n 2000 --singles 200 --short 2000 --served-items 640 --served-images 64 --images 64 --vit-images 64 \
  --repeat 2 --out "$out" "$@"
