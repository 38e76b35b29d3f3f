"""End-to-end latency at concurrency 1 through a real tritonserver: text vs
binary embeddings vs base64 embeddings, and each as a chat conversation
templated on the server beside the same prompt sent as a completion, over
gRPC streaming.

Starts its own server on the tiny test model unless --grpc-url is given.
Usage: python -m tools.bench.latency [--requests 50] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from ..infer import grpc_infer, make_inputs
from ..paths import TINY_MODEL_DIR
from ..payloads import bf16_exact, torch_b64
from ..server.repository import TINY_HIDDEN
from .servers import tiny_triton


def measure(grpc_url: str, model: str, inputs: dict, requests: int) -> list[float]:
    grpc_infer(grpc_url, model, inputs)  # warm-up
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        result = grpc_infer(grpc_url, model, inputs)
        times.append(time.perf_counter() - start)
        assert result.error is None, result.error
    return times


def whole_prompt_embeds(
    tokenizer, model_dir: str, conversation: list[dict], rows: torch.Tensor
) -> torch.Tensor:
    """What a client would send to get a chat-with-rows prompt as a plain
    embeddings completion: the template's token embeddings with `rows`
    where the "<rows>" text stands."""
    from safetensors import safe_open

    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as weights:
        table = weights.get_tensor("model.embed_tokens.weight").float()
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    before, after = text.split("<rows>")
    ids = [tokenizer(piece, add_special_tokens=False).input_ids for piece in (before, after)]
    return torch.cat([table[ids[0]], rows.float(), table[ids[1]]])


def run(grpc_url: str, model: str, hidden: int, requests: int, max_tokens: int, tokenizer_dir: str) -> None:
    from transformers import AutoTokenizer

    sampling = {"temperature": 0, "max_tokens": max_tokens, "ignore_eos": True}
    embeds = bf16_exact((8, hidden))
    question = "Hello world, how are"
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    templated = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def chat_with(part: dict) -> list[dict]:
        return [conversation[0], {"role": "user", "content": [part]}]

    whole = whole_prompt_embeds(
        tokenizer, tokenizer_dir, [conversation[0], {"role": "user", "content": "<rows>"}], embeds
    )

    cases = {
        "text": make_inputs(text=question, exclude_input=True, sampling=sampling),
        "embeds tensor (fp32)": make_inputs(embeds=embeds.numpy(), sampling=sampling),
        "embeds base64": make_inputs(embeds_b64=torch_b64(embeds), sampling=sampling),
        "completion: conversation templated by the client": make_inputs(
            text=templated, exclude_input=True, sampling=sampling
        ),
        "chat: the same conversation, templated by the model": make_inputs(
            messages=conversation, sampling=sampling
        ),
        f"completion: that chat's whole prompt as {whole.shape[0]} rows of embeddings": make_inputs(
            embeds=whole.numpy(), sampling=sampling
        ),
        "chat: user content as 8 raw rows (fp32)": make_inputs(
            messages=chat_with({"type": "prompt_embeds", "rows": 8}), embeds=embeds.numpy(), sampling=sampling
        ),
        "chat: user content as a base64 part": make_inputs(
            messages=chat_with({"type": "prompt_embeds", "data": torch_b64(embeds)}), sampling=sampling
        ),
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
    parser.add_argument(
        "--tokenizer",
        default=str(TINY_MODEL_DIR),
        help="the served model's folder, for client-side templating",
    )
    args = parser.parse_args()
    if args.grpc_url:
        run(args.grpc_url, args.model, args.hidden, args.requests, args.max_tokens, args.tokenizer)
        return
    with tiny_triton() as server:
        run(server.grpc_url, "tiny", TINY_HIDDEN, args.requests, args.max_tokens, args.tokenizer)


if __name__ == "__main__":
    main()
