"""End-to-end latency at concurrency 1 through a real tritonserver: text vs
binary embeddings vs base64 embeddings, over gRPC streaming.

Starts its own server on the tiny test model unless --grpc-url is given.
Usage: python -m tools.bench.latency [--requests 50] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ..infer import grpc_infer, make_inputs
from ..models import ensure_models
from ..payloads import bf16_exact, torch_b64
from ..server.launcher import start_ready_server
from ..server.repository import TINY_HIDDEN, tiny_engine_args, write_model


def measure(grpc_url: str, model: str, inputs: dict, requests: int) -> list[float]:
    grpc_infer(grpc_url, model, inputs)  # warm-up
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        result = grpc_infer(grpc_url, model, inputs)
        times.append(time.perf_counter() - start)
        assert result.error is None, result.error
    return times


def run(grpc_url: str, model: str, hidden: int, requests: int, max_tokens: int) -> None:
    sampling = {"temperature": 0, "max_tokens": max_tokens, "ignore_eos": True}
    embeds = bf16_exact((8, hidden))
    cases = {
        "text": make_inputs(text="Hello world, how are", exclude_input=True, sampling=sampling),
        "embeds tensor (fp32)": make_inputs(embeds=embeds.numpy(), sampling=sampling),
        "embeds base64": make_inputs(embeds_b64=torch_b64(embeds), sampling=sampling),
    }
    print(f"| prompt | p50 ms | p90 ms | ({requests} requests, {max_tokens} tokens, concurrency 1) |")
    print("|---|---|---|---|")
    for name, inputs in cases.items():
        times = sorted(measure(grpc_url, model, inputs, requests))
        p50, p90 = statistics.median(times), times[int(0.9 * (len(times) - 1))]
        print(f"| {name} | {p50 * 1000:.1f} | {p90 * 1000:.1f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.latency", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--grpc-url", help="use a running server instead of starting one")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--hidden", type=int, default=TINY_HIDDEN)
    args = parser.parse_args()
    if args.grpc_url:
        run(args.grpc_url, args.model, args.hidden, args.requests, args.max_tokens)
        return
    ensure_models(smollm2=False)
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp) / "repo"
        repository.mkdir()
        write_model(repository, "tiny", tiny_engine_args())
        server = start_ready_server(repository, Path(tmp) / "server.log")
        try:
            run(server.grpc_url, "tiny", TINY_HIDDEN, args.requests, args.max_tokens)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
