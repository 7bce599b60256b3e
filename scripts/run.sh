#!/usr/bin/env bash
# The main job: serve the default models (zoo/defaults.py, exported in model_repository/) through a real
# tritonserver on 127.0.0.1 (gRPC 8001, HTTP 8000, metrics 8002, zoo /health 8003) under supervision, and open the Gradio retrieval demo on
# http://127.0.0.1:7860 using it. Extra arguments go to `zoo serve`.
source "$(dirname "$0")/env.sh"
source scripts/system-deps.sh espeak-ng:espeak-ng  # spoken captions in the demo corpus
export HF_HUB_OFFLINE=1
exec zoo serve --repository model_repository --ui "$@"
