#!/usr/bin/env bash
# Installs what is missing, then runs the whole test suite against a real
# tritonserver + vLLM (CPU). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
.venv/bin/python scripts/make_tiny_model.py --out models/tiny-llama
.venv/bin/python scripts/prepare_smollm2.py --out models/SmolLM2-135M-Instruct
exec .venv/bin/python -m pytest -ra "$@"
