"""`triton-embeds` / `python -m triton_embeds`: complete a text prompt or a
saved embeddings tensor against a Triton server, streaming to the terminal.

    triton-embeds --model vllm_model "The capital of France is"
    triton-embeds --model vllm_model --embeds prompt.pt --max-tokens 32
    triton-embeds --url http://localhost:8000 --list-models
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._client import Client
from ._errors import TritonEmbedsError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="triton-embeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", nargs="?", help="text prompt (or use --embeds)")
    parser.add_argument("--embeds", type=Path, help="a torch.save file of an (S, H) or (1, S, H) tensor")
    parser.add_argument("--model", default="vllm_model", help="Triton model name (default: vllm_model)")
    parser.add_argument(
        "--url", default=None, help="host:port for gRPC (default localhost:8001), http://host:port for HTTP"
    )
    parser.add_argument("--protocol", choices=("grpc", "http"), default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole request")
    parser.add_argument("--no-stream", action="store_true", help="print the text once it is complete")
    parser.add_argument("--list-models", action="store_true", help="list the server's ready models and exit")
    args = parser.parse_args(argv)
    if not args.list_models and (args.prompt is None) == (args.embeds is None):
        parser.error("give either a text prompt or --embeds FILE")
    return args


def request_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The file's bytes are sent as they are (torch.save output), so neither
    torch nor a tensor copy is needed here; the server validates them."""
    prompt: dict[str, Any] = (
        {"prompt_embeds": args.embeds.read_bytes()} if args.embeds else {"prompt": args.prompt}
    )
    return {
        "model": args.model,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "timeout": args.timeout,
        **prompt,
    }


def run(client: Client, args: argparse.Namespace) -> None:
    if args.list_models:
        for model in client.models.list():
            print(model.id)
        return
    if args.no_stream:
        completion = client.completions.create(**request_arguments(args))
        print(completion.choices[0].text)
        usage = completion.usage
    else:
        usage = None
        with client.completions.create(
            **request_arguments(args), stream=True, stream_options={"include_usage": True}
        ) as stream:
            for chunk in stream:
                for choice in chunk.choices:
                    print(choice.text, end="", flush=True)
                usage = chunk.usage or usage
        print()
    if usage is not None:
        print(
            f"[{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens]", file=sys.stderr
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with Client(args.url, protocol=args.protocol, timeout=args.timeout) as client:
            run(client, args)
    except TritonEmbedsError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the stream was closed on the way out: the request is cancelled
        print(file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
