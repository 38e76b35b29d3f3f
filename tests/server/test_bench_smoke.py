"""The serving benchmark end to end at tiny sizes: it starts its own engine,
tritonserver and `vllm serve` (one after another) and must measure every path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench.paths import PATHS, default_paths
from tools.bench.report import RATIO_HEADER
from tools.paths import ROOT


# Three engine starts one after another: minutes, more on a busy host.
@pytest.mark.timeout(1800)
def test_smoke_run_measures_every_path(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1700,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads((tmp_path / "serving.json").read_text())

    expected = default_paths(report["config"]["dtype"])
    assert list(report["paths"]) == expected
    assert {PATHS[name].system for name in expected} == {"engine", "triton", "vllm-serve"}
    for name, result in report["paths"].items():
        assert result["errors"] == 0, (name, result["error_samples"])
        assert result["ok"] == report["config"]["workload"]["requests"], name
        assert result["requests_per_s"] > 0 and result["output_tokens_per_s"] > 0, name
        assert result["output_tokens_mean"] == report["config"]["workload"]["max_tokens"], name
        assert result["ttft_ms_p50"] is not None, name

    ratio_names = {ratio["name"] for ratio in report["ratios"]}
    assert {"(2)/(1) embeds", "(2)/(4) embeds", "(3 gRPC)/(4) base64", "text (2)/(4)"} <= ratio_names
    assert RATIO_HEADER in run.stdout
    markdown = (tmp_path / "serving.md").read_text()
    assert all(f"| {name} |" in markdown for name in expected)
    assert (tmp_path / "serving.png").stat().st_size > 0
