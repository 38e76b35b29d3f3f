"""perf_analyzer against the real server: text, raw FP32 embeddings and base64
embeddings each measure nonzero throughput with no failed request, and the
text input file fits the tiny model's tokenizer (the rules that need neither
are in tests/unit/test_perf_inputs.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tools.paths import ROOT
from tools.perf import tools
from tools.perf.inputs import KINDS, InputSpec, build_input_data, write_input_data
from tools.perf.report import PerfRun, final_outputs, run_perf_analyzer
from tools.server.repository import TINY_HIDDEN
from triton_embeds.protocol import (
    EXCLUDE_INPUT,
    TEXT_INPUT,
)

SMOKE = InputSpec(entries=4, seq_len=8, hidden=TINY_HIDDEN, max_tokens=4, ignore_eos=True, stream=True)


@pytest.fixture(scope="module")
def perf_analyzer() -> Path:
    # Downloads the wheel (and, on glibc < 2.38, Debian's libraries) once into .cache/.
    return tools.ensure_perf_analyzer()


def smoke_run(grpc_url: str, spec: InputSpec, out_dir: Path) -> PerfRun:
    return PerfRun(
        url=grpc_url,
        model="tiny",
        input_data=write_input_data(spec, out_dir / "input.json"),
        out_dir=out_dir,
        concurrency="2",
        request_count=8,
        # Smoke only: any stable-or-not window is a result; the 2-core CI box is noisy.
        stability_percentage=1000,
        max_trials=3,
    )


@pytest.mark.server
@pytest.mark.parametrize("kind", KINDS)
def test_perf_analyzer_measures_every_prompt_form(kind, perf_analyzer, grpc_url, tmp_path):
    spec = replace(SMOKE, kind=kind)
    run = smoke_run(grpc_url, spec, tmp_path)
    result = run_perf_analyzer(run, perf_analyzer, timeout_s=300)
    assert result.returncode == 0, result.output
    assert "error" not in result.output.lower(), result.output
    [figures] = result.figures
    assert figures.throughput_rps > 0 and figures.output_tokens_per_s > 0
    outputs = final_outputs(run.export_path)
    assert len(outputs) >= run.request_count
    # Every request ran to max_tokens on a prompt of the length that was sent.
    assert {(o["finish_reason"], o["num_output_tokens"]) for o in outputs} == {("length", spec.max_tokens)}
    if kind != "text":
        assert {o["num_input_tokens"] for o in outputs} == {spec.seq_len}


@pytest.mark.server
def test_perf_analyzer_reports_rejected_requests(perf_analyzer, grpc_url, tmp_path):
    spec = replace(SMOKE, kind="embeds", hidden=TINY_HIDDEN // 2, entries=1)
    result = run_perf_analyzer(smoke_run(grpc_url, spec, tmp_path), perf_analyzer, timeout_s=120)
    assert result.returncode != 0
    assert "does not match the model's hidden size" in result.output


def test_text_prompts_fit_the_tokenizer_exactly():
    tokenizer_dir = ROOT / "models" / "tiny-llama"
    if not (tokenizer_dir / "tokenizer.json").exists():
        pytest.skip("the tiny model is made by the server fixture")
    spec = InputSpec(kind="text", entries=3, seq_len=6, tokenizer=str(tokenizer_dir))
    entries = build_input_data(spec)["data"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    lengths = {len(tokenizer(e[TEXT_INPUT][0], add_special_tokens=False)["input_ids"]) for e in entries}
    assert (
        max(lengths) <= spec.seq_len and min(lengths) >= spec.seq_len - 1
    )  # re-tokenising may merge one pair
    assert entries[0][EXCLUDE_INPUT] == [True]
