"""What each generation feature costs: requests/s through a real
tritonserver for plain generation, with logprobs, with n=4, with a JSON
schema, with a regex, and with a LoRA adapter, all against one server in one
run, the cases interleaved round by round so drift hits them alike.

Starts its own server on the tiny test model (LoRA enabled, one adapter)
unless --grpc-url is given (the model must then serve --adapter).
Usage: python -m tools.bench.features [--rounds 3] [--requests 24] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from triton_embeds.protocol import RETURN_CUMULATIVE_LOGPROB_INPUT, RETURN_LOGPROBS_INPUT

from ..infer import grpc_infer, make_inputs
from ..models import ensure_models
from ..models.lora import build_adapter
from ..paths import TINY_MODEL_DIR
from ..server.repository import TINY_ADAPTER, TINY_LORA_RANK, tiny_engine_args
from .servers import tiny_triton

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"}},
    "required": ["name", "ok"],
}


def cases(max_tokens: int, adapter: str) -> dict[str, dict[str, Any]]:
    """Inputs per case. Every case generates max_tokens tokens per sequence
    (ignore_eos), except the constrained ones, which stop when the
    constraint is met: their tokens per request are printed beside them."""
    base = {"temperature": 0, "max_tokens": max_tokens, "ignore_eos": True}
    prompt = "Describe the weather today in a few words"
    return {
        "plain": make_inputs(text=prompt, sampling=base),
        "logprobs (top 5)": make_inputs(
            text=prompt,
            sampling={**base, "logprobs": 5},
            returns=(RETURN_LOGPROBS_INPUT, RETURN_CUMULATIVE_LOGPROB_INPUT),
        ),
        "n=4": make_inputs(text=prompt, sampling={**base, "n": 4, "temperature": 1.0, "seed": 1}),
        "json schema": make_inputs(
            text=prompt,
            sampling={"temperature": 0, "max_tokens": max_tokens, "structured_outputs": {"json": SCHEMA}},
        ),
        "regex": make_inputs(text=prompt, sampling={**base, "guided_regex": f"[a-z]{{{max_tokens * 4}}}"}),
        "LoRA adapter": make_inputs(text=prompt, sampling={**base, "lora_name": adapter}),
    }


def one_round(
    grpc_url: str, model: str, inputs: dict, requests: int, concurrency: int
) -> tuple[float, float]:
    """(requests/s, generated tokens per request) for `requests` requests
    sent `concurrency` at a time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: grpc_infer(grpc_url, model, inputs), range(requests)))
    elapsed = time.perf_counter() - start
    for result in results:
        assert result.error is None, result.error
    return requests / elapsed, statistics.mean(r.completion_tokens for r in results)


def run(
    grpc_url: str, model: str, adapter: str, rounds: int, requests: int, concurrency: int, max_tokens: int
) -> None:
    table = cases(max_tokens, adapter)
    for inputs in table.values():  # warm-up: adapters load and grammars compile on first use
        assert grpc_infer(grpc_url, model, inputs).error is None
    rates: dict[str, list[float]] = {name: [] for name in table}
    tokens: dict[str, float] = {}
    for _ in range(rounds):
        for name, inputs in table.items():
            rate, tokens[name] = one_round(grpc_url, model, inputs, requests, concurrency)
            rates[name].append(rate)
    plain = statistics.median(rates["plain"])
    print(f"\n{requests} requests x {rounds} rounds, concurrency {concurrency}, max_tokens {max_tokens}")
    print(f"{'case':<18} {'requests/s':>11} {'vs plain':>9} {'tokens/request':>15}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:<18} {median:>11.1f} {median / plain:>9.2f} {tokens[name]:>15.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.features", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--grpc-url", help="use a running server instead of starting one")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--adapter", default=TINY_ADAPTER)
    args = parser.parse_args()
    measure = (args.rounds, args.requests, args.concurrency, args.max_tokens)
    if args.grpc_url:
        run(args.grpc_url, args.model, args.adapter, *measure)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ensure_models(smollm2=False)
        adapter = build_adapter(TINY_MODEL_DIR, Path(tmp) / "adapter", rank=TINY_LORA_RANK)
        engine_args = tiny_engine_args(enable_lora=True, max_lora_rank=TINY_LORA_RANK, max_loras=1)
        with tiny_triton(engine_args, {TINY_ADAPTER: adapter}) as server:
            run(server.grpc_url, "tiny", TINY_ADAPTER, *measure)


if __name__ == "__main__":
    main()
