"""What the completions and chat resources share: a call's run under its
deadline, token usage, joining deltas into whole answers (texts and their
logprobs, one per choice), streamed chunks, and the synchronous face of an
async `create`."""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

from openai.types import CompletionUsage

from .._choices import choice_number
from .._concurrency import LoopThread, with_deadline
from .._errors import InternalServerError
from .._logprobs import clamp_prompt_logprobs
from .._streaming import AsyncStream, Stream
from .._transport import Connection
from .._types import Delta, GenerateRequest, PromptLogprobs, TokenLogprobs

T = TypeVar("T")
C = TypeVar("C")
F = TypeVar("F", bound=Callable[..., Any])


class GenerationParams(TypedDict, total=False):
    """The `create` arguments completions and chat completions share."""

    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    seed: int | None
    stop: str | list[str] | None
    presence_penalty: float | None
    frequency_penalty: float | None
    n: int | None
    response_format: dict[str, Any] | None
    stream_options: dict[str, Any] | None
    extra_body: dict[str, Any] | None
    timeout: float | None


# `timeout` not given: the client's own applies (None means no bound).
NOT_GIVEN: Any = object()


def generate(
    connection: Connection, model: str, requests: list[GenerateRequest], timeout: float | None
) -> AsyncGenerator[Delta, None]:
    """The deltas of a call's requests to `model` (a Triton model or an
    adapter), bounded as a whole, retries included, by `timeout`."""
    deadline = connection.timeout if timeout is NOT_GIVEN else timeout
    return with_deadline(connection.generate(model, requests, deadline), deadline)


def include_usage(stream_options: dict[str, Any] | None) -> bool:
    return bool((stream_options or {}).get("include_usage"))


@dataclass
class TokenCounts:
    """Token counts are cumulative per prompt: each prompt's latest is kept."""

    _tokens: dict[int, tuple[int, int]] = field(default_factory=dict, init=False, repr=False)

    def count(self, delta: Delta) -> None:
        if delta.prompt_tokens is not None and delta.completion_tokens is not None:
            self._tokens[delta.index] = (delta.prompt_tokens, delta.completion_tokens)

    def usage(self) -> CompletionUsage:
        prompt = sum(tokens[0] for tokens in self._tokens.values())
        completion = sum(tokens[1] for tokens in self._tokens.values())
        return CompletionUsage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )


@dataclass(frozen=True)
class Answer:
    """One choice's whole answer; `logprobs` has an entry per generated
    token when the call asked for them, else none. `prompt_logprobs` are its
    prompt's (every choice of a prompt has the same), when asked for."""

    text: str
    finish_reason: str
    logprobs: list[TokenLogprobs]
    prompt_logprobs: PromptLogprobs | None = None


async def collect(
    deltas: AsyncGenerator[Delta, None], count: int, tokens: TokenCounts, n: int = 1
) -> list[Answer]:
    """The answer of each of the `n` choices of each of `count` prompts, by
    choice index (see `_choices`)."""
    texts: dict[int, list[str]] = {number: [] for number in range(count * n)}
    logprobs: dict[int, list[TokenLogprobs]] = {number: [] for number in range(count * n)}
    reasons: dict[int, str] = {}
    prompt_logprobs: dict[int, PromptLogprobs] = {}
    async with aclosing(deltas):
        async for delta in deltas:
            tokens.count(delta)
            number = choice_number(delta, n)
            texts[number].append(delta.text)
            if delta.logprobs is not None:
                logprobs[number].extend(delta.logprobs)
            if delta.finish_reason:
                reasons[number] = delta.finish_reason
            if delta.prompt_logprobs is not None:
                prompt_logprobs[delta.index] = clamp_prompt_logprobs(delta.prompt_logprobs)
    missing = sorted(set(texts) - set(reasons))
    if missing:
        raise InternalServerError(f"the server ended choice(s) {missing} without a finish reason")
    return [
        Answer("".join(texts[number]), reasons[number], logprobs[number], prompt_logprobs.get(number // n))
        for number in range(count * n)
    ]


async def stream_chunks(
    deltas: AsyncGenerator[Delta, None],
    tokens: TokenCounts,
    to_chunks: Callable[[Delta], Iterable[C]],
    usage_chunk: Callable[[CompletionUsage], C] | None,
) -> AsyncGenerator[C, None]:
    """The chunks of each delta, then, when `usage_chunk` is given, one
    usage-only chunk, as openai's `stream_options.include_usage` asks."""
    async with aclosing(deltas):
        async for delta in deltas:
            tokens.count(delta)
            for chunk in to_chunks(delta):
                yield chunk
    if usage_chunk is not None:
        yield usage_chunk(tokens.usage())


def call_sync(
    loop: LoopThread, owner: object, coroutine: Coroutine[Any, Any, T | AsyncStream[C]]
) -> T | Stream[C]:
    """Run an async `create` on the client's loop; a stream becomes a
    blocking Stream that keeps `owner` (and so the loop) alive."""
    result = loop.call(coroutine)
    if isinstance(result, AsyncStream):
        return Stream(loop, result, owner=owner)
    return result


def signature_of(async_create: Callable[..., Any]) -> Callable[[F], F]:
    """help() and IDEs show the async method's parameters and documentation
    on the synchronous one, which takes the same arguments."""

    def apply(sync_create: F) -> F:
        sync_create.__doc__ = async_create.__doc__
        sync_create.__signature__ = inspect.signature(async_create)  # type: ignore[attr-defined]
        return sync_create

    return apply
