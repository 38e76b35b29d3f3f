"""`client.completions`: openai-python's completions API over Triton.

Responses are openai's own `Completion` objects, built without validation as
openai-python builds them, so the server's "abort" finish reason and the
`None` finish reason of mid-stream chunks pass through unchanged.
"""

from __future__ import annotations

import time
import uuid
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator

from openai.types import Completion, CompletionChoice, CompletionUsage

from .._concurrency import with_deadline
from .._errors import InternalServerError
from .._requests import build_requests, sampling_parameters
from .._streaming import AsyncStream, Stream
from .._types import Delta

if TYPE_CHECKING:
    from .._client import AsyncClient, Client

_NOT_GIVEN: Any = object()


class AsyncCompletions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

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
        stream: bool = False,
        stream_options: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = _NOT_GIVEN,
    ) -> Completion | AsyncStream[Completion]:
        """Complete a text prompt or prompt embeddings.

        `prompt_embeds`: torch.Tensor, numpy array, base64 string (as vLLM's
        and Dynamo's API take it), torch.save bytes, or a list of these;
        (S, H) and (1, S, H) are one prompt, (B, S, H) or a list are several,
        answered as choices with matching `index`. `extra_body` may carry
        `prompt_embeds` (with `prompt=""`, as in vLLM's docs) and further
        sampling keys such as `ignore_eos` or `min_tokens`. `timeout` bounds
        the whole request, streamed or not; on expiry it is cancelled. With
        `stream=True` this returns once the first chunk has arrived, so a
        rejected request raises here, as in openai-python.
        """
        extra = dict(extra_body or {})
        embeds_from_extra = extra.pop("prompt_embeds", None)
        sampling = sampling_parameters(
            extra, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
            seed=seed, stop=stop, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
        )
        requests = await build_requests(
            prompt=prompt,
            prompt_embeds=prompt_embeds if prompt_embeds is not None else embeds_from_extra,
            sampling=sampling,
            stream=stream,
            embeds_transport=self._client.embeds_transport,
            model_inputs=lambda: self._client._model_inputs(model),
        )
        deadline = self._client.timeout if timeout is _NOT_GIVEN else timeout
        deltas = with_deadline(self._client._transport.generate(model, requests), deadline)
        builder = _Builder(model=model, count=len(requests))
        if not stream:
            return await builder.completion(deltas)
        include_usage = bool((stream_options or {}).get("include_usage"))
        return await AsyncStream.start(builder.chunks(deltas, include_usage))


class Completions:
    """Synchronous face of AsyncCompletions: same arguments, same results."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
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
        stream: bool = False,
        stream_options: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = _NOT_GIVEN,
    ) -> Completion | Stream[Completion]:
        loop = self._client._loop
        result = loop.call(
            self._client._async.completions.create(
                model=model, prompt=prompt, prompt_embeds=prompt_embeds, max_tokens=max_tokens,
                temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=stop,
                presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                stream=stream, stream_options=stream_options, extra_body=extra_body,
                timeout=timeout,
            )
        )
        return Stream(loop, result, owner=self._client) if isinstance(result, AsyncStream) else result

    create.__doc__ = AsyncCompletions.create.__doc__


@dataclass
class _Builder:
    """Turns the model's deltas into openai `Completion` objects."""

    model: str
    count: int
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    _tokens: dict[int, tuple[int, int]] = field(default_factory=dict)

    async def completion(self, deltas: AsyncIterator[Delta]) -> Completion:
        texts: dict[int, list[str]] = {index: [] for index in range(self.count)}
        reasons: dict[int, str] = {}
        async with aclosing(deltas):  # type: ignore[type-var]
            async for delta in deltas:
                self._count(delta)
                texts[delta.index].append(delta.text)
                if delta.finish_reason:
                    reasons[delta.index] = delta.finish_reason
        missing = sorted(set(texts) - set(reasons))
        if missing:
            raise InternalServerError(f"the server ended prompt(s) {missing} without a finish reason")
        choices = [_choice(index, "".join(texts[index]), reasons[index]) for index in range(self.count)]
        return self._make(choices, self.usage())

    async def chunks(self, deltas: AsyncIterator[Delta], include_usage: bool) -> AsyncIterator[Completion]:
        async with aclosing(deltas):  # type: ignore[type-var]
            async for delta in deltas:
                self._count(delta)
                if delta.text or delta.finish_reason:  # vLLM skips empty chunks too
                    yield self._make([_choice(delta.index, delta.text, delta.finish_reason)], None)
        if include_usage:
            yield self._make([], self.usage())

    def _count(self, delta: Delta) -> None:
        """Token counts are cumulative per prompt: keep each prompt's latest."""
        if delta.prompt_tokens is not None and delta.completion_tokens is not None:
            self._tokens[delta.index] = (delta.prompt_tokens, delta.completion_tokens)

    def usage(self) -> CompletionUsage:
        prompt = sum(tokens[0] for tokens in self._tokens.values())
        completion = sum(tokens[1] for tokens in self._tokens.values())
        return CompletionUsage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )

    def _make(self, choices: list[CompletionChoice], usage: CompletionUsage | None) -> Completion:
        return Completion.model_construct(
            id=self.id, choices=choices, created=self.created, model=self.model,
            object="text_completion", system_fingerprint=None, usage=usage,
        )


def _choice(index: int, text: str, finish_reason: str | None) -> CompletionChoice:
    return CompletionChoice.model_construct(
        index=index, text=text, finish_reason=finish_reason, logprobs=None
    )
