#!/usr/bin/env bash
# Installs what is missing, then runs the test suite. Extra arguments go to pytest.
#
#   ./scripts/test.sh           every test: the unit tier, then the server tier
#   ./scripts/test.sh unit      pure logic, no tritonserver, engine or model files
#   ./scripts/test.sh server    through a real tritonserver + vLLM (CPU); builds the models
#   ./scripts/test.sh replicas  two replicas behind HAProxy, through real servers (3-5 minutes)
#
# Test paths among the arguments replace the tier's folder:
#   ./scripts/test.sh server tests/server/test_faults.py -k concurrency
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
tier="all"
if [[ $# -gt 0 && ("$1" == "unit" || "$1" == "server" || "$1" == "replicas" || "$1" == "all") ]]; then
  tier="$1"
  shift
fi
case "$tier" in
  unit) paths=(tests/unit) ;;
  server) paths=(tests/server) ;;
  replicas) paths=(tests/replicas) ;;
  all) paths=(tests/unit tests/server) ;;
esac
for arg in "$@"; do
  if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then
    paths=()  # the caller named what to run
    break
  fi
done
bash scripts/bootstrap.sh
if [[ "$tier" != "unit" ]]; then
  .venv/bin/python -m tools.models.tiny
  if [[ "$tier" != "replicas" ]]; then
    .venv/bin/python -m tools.models.smollm2
  fi
fi
exec .venv/bin/python -m pytest -ra "${paths[@]}" "$@"
