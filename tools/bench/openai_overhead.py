"""What the OpenAI server adds to a request's latency at concurrency 1: the
same completion sent straight to Triton over gRPC (a persistent
`triton_embeds` client) and through the OpenAI server (a persistent HTTP
connection), alternately, so drift on the host hits both alike.

Starts tritonserver (tiny model) and the OpenAI server unless --grpc-url and
--openai-url are given.
Usage: python -m tools.bench.openai_overhead [--requests 100] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import httpx
import torch

from triton_embeds import Client, encode_prompt_embeds

from ..server.openai_launcher import OpenAIServer
from ..server.repository import TINY_HIDDEN
from .servers import tiny_triton


def timed(call: Callable[[], None]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run(grpc_url: str, openai_url: str, model: str, hidden: int, requests: int, max_tokens: int) -> None:
    embeds = encode_prompt_embeds(torch.randn(16, hidden))
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    prompts = {
        "text": {"prompt": "Hello world, how are you today?"},
        "embeds base64": {"prompt_embeds": embeds},
    }
    print(f"{requests} requests each, {max_tokens} tokens, concurrency 1")
    print("| prompt | direct gRPC p50 ms | OpenAI server p50 ms | added p50 ms |")
    print("|---|---:|---:|---:|")
    with Client(grpc_url) as direct, httpx.Client(base_url=openai_url, timeout=120) as http:
        arguments = {k: v for k, v in body.items() if k != "ignore_eos"}
        for name, prompt in prompts.items():

            def straight(prompt: dict = prompt) -> None:
                direct.completions.create(**arguments, **prompt, extra_body={"ignore_eos": True})

            def through(prompt: dict = prompt) -> None:
                response = http.post("/v1/completions", json={**body, **prompt})
                response.raise_for_status()

            straight(), through()  # warm-up
            pairs = [(timed(straight), timed(through)) for _ in range(requests)]
            a = statistics.median(p[0] for p in pairs) * 1000
            b = statistics.median(p[1] for p in pairs) * 1000
            added = statistics.median((p[1] - p[0]) * 1000 for p in pairs)
            print(f"| {name} | {a:.1f} | {b:.1f} | {added:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.openai_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--grpc-url")
    parser.add_argument("--openai-url", help="http://host:port of a running OpenAI server")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--hidden", type=int, default=TINY_HIDDEN)
    args = parser.parse_args()
    if args.grpc_url and args.openai_url:
        run(args.grpc_url, args.openai_url, args.model, args.hidden, args.requests, args.max_tokens)
        return
    with tiny_triton() as server, OpenAIServer((server.grpc_url,)) as front:
        run(server.grpc_url, front.url, "tiny", TINY_HIDDEN, args.requests, args.max_tokens)


if __name__ == "__main__":
    main()
