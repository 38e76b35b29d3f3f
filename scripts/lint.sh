#!/usr/bin/env bash
# Installs what is missing, then checks the code: ruff's linter and
# formatter over the whole tree, mypy over the server package and the client.
# `./scripts/lint.sh --fix` applies ruff's fixes and formatting instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
if [[ "${1:-}" == "--fix" ]]; then
  .venv/bin/ruff check --fix .
  .venv/bin/ruff format .
  exit 0
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "lint: ruff and mypy clean"
