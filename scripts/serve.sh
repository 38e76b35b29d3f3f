#!/usr/bin/env bash
# Installs what is missing, prepares the default model (SmolLM2-135M-Instruct)
# and serves model_repository/ on localhost until Ctrl-C.
# and the OpenAI-compatible API in front of it.
# Ports: HTTP_PORT (8000), GRPC_PORT (8001), METRICS_PORT (8002), OPENAI_PORT
# (9000; 0 leaves the OpenAI API off).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
.venv/bin/python -m tools.models.smollm2
exec .venv/bin/python -m tools.server.serve --model-repository model_repository \
  --http-port "${HTTP_PORT:-8000}" --grpc-port "${GRPC_PORT:-8001}" \
  --metrics-port "${METRICS_PORT:-8002}" --openai-port "${OPENAI_PORT:-9000}" -- "$@"
