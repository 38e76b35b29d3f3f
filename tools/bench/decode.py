"""Cost of turning one request's embeddings into the engine's prompt: the
model's own parsing, decoding and validation (SPEC rules 1-8), per input form
and engine dtype, in this process and without a server.

This is the work the model's decode worker pool does per request, off the
engine's event loop. Reference rows for the base64 form: vLLM's own loader
(`safe_load_prompt_embeds`, what `vllm serve` runs on its API server's event
loop; it has no finiteness check), when this vLLM has it, and the stdlib's
b64decode + torch.load.

Usage: python -m tools.bench.decode [--seq-len 512] [--hidden 4096] [-n 50]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from embeds_backend.contract import EMBEDS_BASE64_INPUT, SAMPLING_INPUT
from embeds_backend.embeds import EmbedsLimits
from embeds_backend.prompts import build_embeds_prompt
from embeds_backend.request_parsing import EMBEDS_TENSOR_DTYPES, parse_request

from .stats import percentile

ENGINE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def request_inputs(seq_len: int, hidden: int, seed: int) -> dict[str, dict[str, Any]]:
    """Each input form of one random (seq_len, hidden) prompt, as read_inputs
    hands them to the model: tensors for raw forms, bytes for base64."""
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(seq_len, hidden, generator=generator)
    sampling = json.dumps({"max_tokens": 16}).encode()
    forms = {
        name: {name: embeds.to(dtype), SAMPLING_INPUT: sampling}
        for name, dtype in EMBEDS_TENSOR_DTYPES.items()
    }
    buffer = io.BytesIO()
    torch.save(embeds, buffer)
    forms[EMBEDS_BASE64_INPUT] = {
        EMBEDS_BASE64_INPUT: base64.b64encode(buffer.getvalue()),
        SAMPLING_INPUT: sampling,
    }
    return forms


def model_decode(inputs: dict[str, Any], limits: EmbedsLimits, max_model_len: int) -> Callable[[], Any]:
    def run() -> Any:
        return build_embeds_prompt(parse_request(inputs, embeds_enabled=True), limits, max_model_len)

    return run


def stdlib_base64_load(encoded: bytes) -> Callable[[], Any]:
    def run() -> Any:
        return torch.load(io.BytesIO(base64.b64decode(encoded)), weights_only=True)

    return run


class _ModelFacts:
    """The parts of vLLM's ModelConfig its embeds loader reads."""

    enable_prompt_embeds = True

    def __init__(self, hidden: int, dtype: torch.dtype) -> None:
        self.hidden, self.dtype = hidden, dtype

    def get_hidden_size(self) -> int:
        return self.hidden


def vllm_base64_load(encoded: bytes, hidden: int, dtype: torch.dtype) -> Callable[[], Any] | None:
    try:
        from vllm.renderers.embed_utils import safe_load_prompt_embeds
    except ImportError:  # another vLLM release keeps it elsewhere, or no vLLM
        return None
    facts = _ModelFacts(hidden, dtype)
    return lambda: safe_load_prompt_embeds(facts, encoded)


@dataclass
class Timing:
    times_ms: list[float]
    page_faults: float  # minor faults per call: fresh memory the allocator had to map

    def row(self) -> str:
        times = self.times_ms
        return (
            f"{percentile(times, 50):.2f} | {percentile(times, 99):.2f} | "
            f"{statistics.fmean(times):.2f} | {self.page_faults:.0f}"
        )


def timed(work: Callable[[], Any], iterations: int) -> Timing:
    work()  # warm-up: first-call allocations and imports
    times = []
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(iterations):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return Timing(times, faults / iterations)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.decode",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("-n", "--iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    forms = request_inputs(args.seq_len, args.hidden, seed=0)
    max_model_len = args.seq_len + 16
    encoded = forms[EMBEDS_BASE64_INPUT][EMBEDS_BASE64_INPUT]
    rows = []
    for dtype_name, dtype in ENGINE_DTYPES.items():
        limits = EmbedsLimits(hidden_size=args.hidden, dtype=dtype, max_bytes=64 * 1024 * 1024)
        for form, inputs in forms.items():
            times = timed(model_decode(inputs, limits, max_model_len), args.iterations)
            rows.append((form, dtype_name, "this model", times))
        if (vllm_load := vllm_base64_load(encoded, args.hidden, dtype)) is not None:
            rows.append(
                (
                    EMBEDS_BASE64_INPUT,
                    dtype_name,
                    "vLLM's safe_load_prompt_embeds",
                    timed(vllm_load, args.iterations),
                )
            )
    rows.append(
        (
            EMBEDS_BASE64_INPUT,
            "(as saved)",
            "stdlib b64decode + torch.load",
            timed(stdlib_base64_load(encoded), args.iterations),
        )
    )
    print(
        f"one ({args.seq_len}, {args.hidden}) prompt, {args.iterations} iterations, "
        f"torch threads {torch.get_num_threads()}, base64 size {len(encoded) / 1e6:.1f} MB\n"
    )
    print("| input | engine dtype | work | p50 ms | p99 ms | mean ms | page faults/call |")
    print("|---|---|---|---:|---:|---:|---:|")
    for form, dtype_name, work, timing in rows:
        print(f"| {form} | {dtype_name} | {work} | {timing.row()} |")


if __name__ == "__main__":
    main()
