"""`client.completions`: openai-python's completions API over Triton.

Responses are openai's own `Completion` objects, built without validation as
openai-python builds them, so the server's "abort" finish reason and the
`None` finish reason of mid-stream chunks pass through unchanged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from openai.types import Completion, CompletionChoice, CompletionUsage
from openai.types.completion_choice import Logprobs
from typing_extensions import Unpack

from .._concurrency import LoopThread
from .._logprobs import check_n, completion_logprobs, completion_top_logprobs
from .._requests import build_requests, sampling_parameters
from .._streaming import AsyncStream, Stream
from .._transport import Connection
from .._types import Delta, TokenLogprobs
from ._generation import (
    NOT_GIVEN,
    GenerationParams,
    TokenCounts,
    call_sync,
    collect,
    generate,
    include_usage,
    signature_of,
    stream_chunks,
)


class CompletionParams(GenerationParams, total=False):
    """The arguments of `create` besides `model` and `stream`."""

    prompt: str | list[str] | None
    prompt_embeds: Any
    logprobs: int | None


class AsyncCompletions:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @overload
    async def create(
        self, *, model: str, stream: Literal[False] = False, **params: Unpack[CompletionParams]
    ) -> Completion: ...

    @overload
    async def create(
        self, *, model: str, stream: Literal[True], **params: Unpack[CompletionParams]
    ) -> AsyncStream[Completion]: ...

    @overload
    async def create(
        self, *, model: str, stream: bool, **params: Unpack[CompletionParams]
    ) -> Completion | AsyncStream[Completion]: ...

    async def create(
        self,
        *,
        model: str,
        prompt: str | list[str] | None = None,
        prompt_embeds: Any = None,
        max_tokens: int | None = 16,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        logprobs: int | None = None,
        n: int | None = None,
        stream: bool = False,
        stream_options: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = NOT_GIVEN,
    ) -> Completion | AsyncStream[Completion]:
        """Complete a text prompt or prompt embeddings.

        `prompt_embeds`: torch.Tensor, numpy array, base64 string (as vLLM's
        and Dynamo's API take it), torch.save bytes, or a list of these;
        (S, H) and (1, S, H) are one prompt, (B, S, H) or a list are several,
        answered as choices with matching `index`. `extra_body` may carry
        `prompt_embeds` (with `prompt=""`, as in vLLM's docs) and further
        sampling keys such as `ignore_eos` or `min_tokens`. `logprobs=k`
        (0 to 20) gives each choice, and each streamed chunk for its own
        tokens, openai's `Logprobs`: every token, its log probability, a dict
        of it and its top k alternatives, and its offset into the text, as
        vLLM gives them. `n` may only be 1. `timeout` bounds the whole
        request, streamed or not; on expiry it is cancelled. With
        `stream=True` this returns once the first chunk has arrived, so a
        rejected request raises here, as in openai-python.
        """
        top_logprobs = completion_top_logprobs(logprobs)
        check_n(n)
        connection = self._connection
        extra = dict(extra_body or {})
        embeds_from_extra = extra.pop("prompt_embeds", None)
        sampling = sampling_parameters(
            extra,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop=stop,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            logprobs=top_logprobs,
        )
        requests = await build_requests(
            prompt=prompt,
            prompt_embeds=prompt_embeds if prompt_embeds is not None else embeds_from_extra,
            sampling=sampling,
            stream=stream,
            embeds_transport=connection.embeds_transport,
            model_inputs=lambda: connection.model_inputs(model),
            return_logprobs=top_logprobs is not None,
        )
        deltas = generate(connection, model, requests, timeout)
        builder = _Builder(model=model, count=len(requests), top_logprobs=top_logprobs)
        if not stream:
            return await builder.completion(deltas)
        return await AsyncStream.start(builder.chunks(deltas, include_usage(stream_options)))


class Completions:
    """Synchronous face of AsyncCompletions: same arguments, same results."""

    def __init__(self, completions: AsyncCompletions, loop: LoopThread, owner: object) -> None:
        self._async = completions
        self._loop = loop
        self._owner = owner  # a stream keeps it (and so the loop) alive

    @overload
    def create(
        self, *, model: str, stream: Literal[False] = False, **params: Unpack[CompletionParams]
    ) -> Completion: ...

    @overload
    def create(
        self, *, model: str, stream: Literal[True], **params: Unpack[CompletionParams]
    ) -> Stream[Completion]: ...

    @overload
    def create(
        self, *, model: str, stream: bool, **params: Unpack[CompletionParams]
    ) -> Completion | Stream[Completion]: ...

    @signature_of(AsyncCompletions.create)
    def create(
        self, *, model: str, stream: bool = False, **params: Unpack[CompletionParams]
    ) -> Completion | Stream[Completion]:
        return call_sync(self._loop, self._owner, self._async.create(model=model, stream=stream, **params))


@dataclass
class _Builder:
    """Turns the model's deltas into openai `Completion` objects;
    `top_logprobs` is the call's `logprobs` (None: none asked for)."""

    model: str
    count: int
    top_logprobs: int | None = None
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    tokens: TokenCounts = field(default_factory=TokenCounts)
    # Per choice: where the text of its next tokens starts, across chunks.
    _text_offsets: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    async def completion(self, deltas: AsyncGenerator[Delta, None]) -> Completion:
        answers = await collect(deltas, self.count, self.tokens)
        choices = [
            _choice(index, answer.text, answer.finish_reason, self._logprobs(index, answer.logprobs))
            for index, answer in enumerate(answers)
        ]
        return self._make(choices, self.tokens.usage())

    def chunks(self, deltas: AsyncGenerator[Delta, None], usage: bool) -> AsyncGenerator[Completion, None]:
        return stream_chunks(deltas, self.tokens, self._chunks, self._usage_chunk if usage else None)

    def _chunks(self, delta: Delta) -> list[Completion]:
        if delta.text or delta.finish_reason or delta.logprobs:  # vLLM skips empty chunks too
            logprobs = self._logprobs(delta.index, delta.logprobs)
            return [self._make([_choice(delta.index, delta.text, delta.finish_reason, logprobs)], None)]
        return []

    def _logprobs(self, index: int, entries: list[TokenLogprobs] | None) -> Logprobs | None:
        if self.top_logprobs is None:
            return None
        offset = self._text_offsets.get(index, 0)
        logprobs, self._text_offsets[index] = completion_logprobs(entries or (), self.top_logprobs, offset)
        return logprobs

    def _usage_chunk(self, usage: CompletionUsage) -> Completion:
        return self._make([], usage)

    def _make(self, choices: list[CompletionChoice], usage: CompletionUsage | None) -> Completion:
        return Completion.model_construct(
            id=self.id,
            choices=choices,
            created=self.created,
            model=self.model,
            object="text_completion",
            system_fingerprint=None,
            usage=usage,
        )


def _choice(index: int, text: str, finish_reason: str | None, logprobs: Logprobs | None) -> CompletionChoice:
    return CompletionChoice.model_construct(
        index=index, text=text, finish_reason=finish_reason, logprobs=logprobs
    )
