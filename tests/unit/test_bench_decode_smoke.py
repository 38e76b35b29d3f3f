"""`python -m tools.bench.decode` runs and prints a row per input form, engine dtype
and reference loader (tiny sizes: a smoke run, not a measurement)."""

from __future__ import annotations

import subprocess
import sys

from triton_embeds.protocol import EMBEDS_INPUTS


def test_bench_decode_prints_every_row() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tools.bench.decode", "--seq-len", "4", "--hidden", "64", "-n", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = [line for line in run.stdout.splitlines() if line.startswith("| prompt_embeds")]
    forms = EMBEDS_INPUTS
    for dtype in ("bfloat16", "float32"):
        for form in forms:
            assert any(row.startswith(f"| {form} | {dtype} | this model |") for row in rows), (form, dtype)
        assert any(
            row.startswith(f"| prompt_embeds_base64 | {dtype} | vLLM's safe_load_prompt_embeds |")
            for row in rows
        ), dtype
    assert any("stdlib b64decode + torch.load" in row for row in rows)
    assert len(rows) == 2 * len(forms) + 2 + 1
