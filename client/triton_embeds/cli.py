"""`triton-embeds` / `python -m triton_embeds`: complete a text prompt or a
saved embeddings tensor against a Triton server, or chat, streaming to the
terminal.

    triton-embeds --model vllm_model "The capital of France is"
    triton-embeds --model vllm_model --embeds prompt.pt --max-tokens 32
    triton-embeds --chat --system "Answer in one word." "What is the capital of France?"
    triton-embeds --chat --embeds prompt.pt "Summarize the text above."
    triton-embeds --url http://localhost:8000 --list-models
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from openai.types import CompletionUsage

from ._client import Client
from ._errors import TritonEmbedsError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="triton-embeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", nargs="?", help="text prompt (or use --embeds); with --chat, the user's")
    parser.add_argument("--embeds", type=Path, help="a torch.save file of an (S, H) or (1, S, H) tensor")
    parser.add_argument(
        "--chat",
        action="store_true",
        help="send a chat conversation (the model applies its chat template): the prompt, after "
        "--embeds when both are given, is the user message",
    )
    parser.add_argument("--system", default=None, help="with --chat: a system message before the user's")
    parser.add_argument("--model", default="vllm_model", help="Triton model name (default: vllm_model)")
    parser.add_argument(
        "--url",
        default=None,
        help="host:port for gRPC (default localhost:8001), http://host:port for HTTP; several "
        "comma-separated, or a gRPC target such as dns:///name:8001, take turns per request",
    )
    parser.add_argument("--protocol", choices=("grpc", "http"), default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole request")
    parser.add_argument(
        "--max-retries", type=int, default=2, help="resends of a request refused before any output"
    )
    parser.add_argument("--no-stream", action="store_true", help="print the text once it is complete")
    parser.add_argument("--list-models", action="store_true", help="list the server's ready models and exit")
    args = parser.parse_args(argv)
    if args.system is not None and not args.chat:
        parser.error("--system needs --chat")
    if args.list_models:
        return args
    if args.chat and args.prompt is None and args.embeds is None:
        parser.error("give a text prompt, --embeds FILE, or both")
    if not args.chat and (args.prompt is None) == (args.embeds is None):
        parser.error("give either a text prompt or --embeds FILE (or --chat for both)")
    return args


def chat_messages(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The optional system message, then the user's: the embeddings, then the text."""
    messages: list[dict[str, Any]] = []
    if args.system is not None:
        messages.append({"role": "system", "content": args.system})
    if args.embeds is None:
        messages.append({"role": "user", "content": args.prompt})
        return messages
    parts: list[dict[str, Any]] = [{"type": "prompt_embeds", "data": args.embeds.read_bytes()}]
    if args.prompt is not None:
        parts.append({"type": "text", "text": args.prompt})
    messages.append({"role": "user", "content": parts})
    return messages


def request_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The file's bytes are sent as they are (torch.save output), so neither
    torch nor a tensor copy is needed here; the server validates them."""
    prompt: dict[str, Any]
    if args.chat:
        prompt = {"messages": chat_messages(args)}
    elif args.embeds:
        prompt = {"prompt_embeds": args.embeds.read_bytes()}
    else:
        prompt = {"prompt": args.prompt}
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
    usage = _chat(client, args) if args.chat else _complete(client, args)
    if usage is not None:
        print(
            f"[{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens]", file=sys.stderr
        )


_USAGE = {"include_usage": True}  # the last chunk brings the token counts


def _complete(client: Client, args: argparse.Namespace) -> CompletionUsage | None:
    if args.no_stream:
        completion = client.completions.create(**request_arguments(args))
        print(completion.choices[0].text)
        return completion.usage
    with client.completions.create(**request_arguments(args), stream=True, stream_options=_USAGE) as stream:
        return _print_stream(stream, lambda chunk: "".join(choice.text for choice in chunk.choices))


def _chat(client: Client, args: argparse.Namespace) -> CompletionUsage | None:
    if args.no_stream:
        completion = client.chat.completions.create(**request_arguments(args))
        print(completion.choices[0].message.content or "")
        return completion.usage
    with client.chat.completions.create(
        **request_arguments(args), stream=True, stream_options=_USAGE
    ) as stream:
        return _print_stream(stream, lambda chunk: "".join(c.delta.content or "" for c in chunk.choices))


class _Chunk(Protocol):
    usage: CompletionUsage | None


ChunkT = TypeVar("ChunkT", bound=_Chunk)


def _print_stream(stream: Iterable[ChunkT], text: Callable[[ChunkT], str]) -> CompletionUsage | None:
    """Print each chunk's text as it arrives; the usage comes with the last."""
    usage = None
    for chunk in stream:
        print(text(chunk), end="", flush=True)
        usage = chunk.usage or usage
    print()
    return usage


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client = Client(args.url, protocol=args.protocol, timeout=args.timeout, max_retries=args.max_retries)
        with client:
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
