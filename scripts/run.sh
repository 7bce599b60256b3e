#!/usr/bin/env bash
# The main job: serve the default models (zoo/defaults.py, exported in model_repository/) through a real
# tritonserver on 127.0.0.1 (gRPC 8001, HTTP 8000, metrics 8002). Extra arguments go to `zoo serve`.
source "$(dirname "$0")/env.sh"
exec zoo serve --repository model_repository "$@"
