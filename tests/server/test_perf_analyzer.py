"""perf_analyzer against the real server: text, raw FP32 embeddings and base64
embeddings each measure nonzero throughput with no failed request; plus the
input-file rules and the .deb reading, which need no server."""

from __future__ import annotations

import base64
import io
import json
import lzma
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from tools.paths import ROOT
from tools.perf import debian_runtime, tools
from tools.perf.inputs import KINDS, InputSpec, build_input_data, write_input_data
from tools.perf.report import PerfRun, final_outputs, run_perf_analyzer
from tools.server.repository import TINY_HIDDEN
from triton_embeds.protocol import (
    EMBEDS_BASE64_INPUT,
    EMBEDS_FP32_INPUT,
    EXCLUDE_INPUT,
    SAMPLING_INPUT,
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


def test_embeds_input_has_shape_and_float_values():
    data = build_input_data(InputSpec(kind="embeds", entries=2, seq_len=3, hidden=4, stream=False))
    entry = data["data"][0]
    assert entry[EMBEDS_FP32_INPUT]["shape"] == [3, 4]
    # perf_analyzer refuses integer literals for FP32, so every value must serialise as a float.
    assert all(isinstance(v, float) for v in entry[EMBEDS_FP32_INPUT]["content"])
    assert entry["stream"] == [False]
    assert json.loads(entry[SAMPLING_INPUT][0]) == {"max_tokens": 16, "ignore_eos": True, "temperature": 0}
    assert data["data"][0][EMBEDS_FP32_INPUT] != data["data"][1][EMBEDS_FP32_INPUT]


def test_base64_input_is_torch_save_of_the_right_shape():
    torch = pytest.importorskip("torch")
    data = build_input_data(InputSpec(kind="base64", entries=1, seq_len=5, hidden=8))
    payload = base64.b64decode(data["data"][0][EMBEDS_BASE64_INPUT][0])
    tensor = torch.load(io.BytesIO(payload), weights_only=True)
    assert tensor.shape == (5, 8) and tensor.dtype == torch.float32


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


def test_packages_index_and_deb_reading(tmp_path):
    index = debian_runtime.parse_packages_index(
        "Package: libc6\nVersion: 2.41\nFilename: pool/main/g/glibc/libc6.deb\nSHA256: ab\n"
        "Description: x\n more text: with a colon\n\nPackage: zlib1g\nFilename: pool/z.deb\n"
    )
    assert index["libc6"]["Filename"] == "pool/main/g/glibc/libc6.deb" and "zlib1g" in index
    triplet = debian_runtime.host_arch().triplet
    deb = fake_deb({f"./usr/lib/{triplet}/libdemo.so.1": b"ELF", "./usr/share/doc/demo": b"doc"})
    debian_runtime.extract_data_tar(deb, tmp_path)
    assert (tmp_path / "usr" / "lib" / triplet / "libdemo.so.1").read_bytes() == b"ELF"
    assert not (tmp_path / "usr" / "share").exists()  # only the library directory is unpacked


def fake_deb(files: dict[str, bytes]) -> bytes:
    """A minimal .deb: an ar archive holding debian-binary and data.tar.xz."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    members = {"debian-binary": b"2.0\n", "data.tar.xz": lzma.compress(tar_bytes.getvalue())}
    blob = b"!<arch>\n"
    for name, content in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode()
        blob += header + content + (b"\n" if len(content) % 2 else b"")
    return blob
