#!/usr/bin/env bash
# The main job: serve the default models (see zoo/defaults.py) through Triton.
source "$(dirname "$0")/env.sh"
exec zoo encode sentence-transformers/all-MiniLM-L6-v2 "a cat on a sofa" "an astronaut" "$@"
