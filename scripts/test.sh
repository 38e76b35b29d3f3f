#!/usr/bin/env bash
# Installs what is missing, then runs the test suite. Extra arguments go to pytest.
#
#   ./scripts/test.sh           every test: the unit tier, then the server tier
#   ./scripts/test.sh unit      pure logic, no tritonserver, engine or model files
#   ./scripts/test.sh server    through a real tritonserver + vLLM (CPU); builds the models
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
tier="all"
if [[ $# -gt 0 && ( "$1" == "unit" || "$1" == "server" || "$1" == "all" ) ]]; then
  tier="$1"
  shift
fi
bash scripts/bootstrap.sh
case "$tier" in
  unit) exec .venv/bin/python -m pytest -ra tests/unit "$@" ;;
  server) paths=(tests/server) ;;
  all) paths=(tests/unit tests/server) ;;
esac
.venv/bin/python -m tools.models.tiny
.venv/bin/python -m tools.models.smollm2
exec .venv/bin/python -m pytest -ra "${paths[@]}" "$@"
