"""`client.completions`: openai-python's completions API over Triton.

Responses are openai's own `Completion` objects, built without validation as
openai-python builds them, so the server's "abort" finish reason and the
`None` finish reason of mid-stream chunks pass through unchanged. A choice
carries `prompt_logprobs` as vLLM's server puts it there (an extra field of
openai's type), only when asked for.
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

from .._choices import check_n, choice_number
from .._concurrency import LoopThread
from .._logprobs import clamp_prompt_logprobs, completion_logprobs, completion_top_logprobs
from .._requests import build_requests, sampling_parameters
from .._streaming import AsyncStream, Stream
from .._structured import with_response_format
from .._transport import Connection
from .._types import Delta, PromptLogprobs, TokenLogprobs, construct
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
        response_format: dict[str, Any] | None = None,
        stream: bool = False,
        stream_options: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = NOT_GIVEN,
    ) -> Completion | AsyncStream[Completion]:
        """Complete a text prompt or prompt embeddings.

        `prompt_embeds`: torch.Tensor, numpy array, base64 string (as vLLM's
        and Dynamo's API take it), torch.save bytes, or a list of these;
        (S, H) and (1, S, H) are one prompt, (B, S, H) or a list are several,
        answered as choices with matching `index`. `model` is a Triton
        model or one of its LoRA adapters, as `client.models.list()` shows
        them. `n` (1 to 16) sequences per prompt are choices `p * n + s`, as
        in vLLM. `logprobs=k` (0 to 20) gives each choice, and each streamed
        chunk for its own tokens, openai's `Logprobs`: every token, its log
        probability, a dict of it and its top k alternatives, and its offset
        into the text, as vLLM gives them. `response_format`
        (`{"type": "json_object"}` or `{"type": "json_schema", "json_schema":
        {"schema": ...}}`) constrains the text, as in vLLM.

        `extra_body` may carry `prompt_embeds` (with `prompt=""`, as in
        vLLM's docs) and any further key of the server's sampling
        parameters, which it checks by name: `ignore_eos`, `min_tokens`,
        `structured_outputs` (or vLLM's `guided_json`, `guided_regex`,
        `guided_choice`, `guided_grammar`), `lora_name` (with the base model
        as `model`), `truncate_prompt_tokens`, `cache_salt`, and
        `prompt_logprobs=k` (text prompts only), which puts the prompt's
        logprobs on each choice as `choice.prompt_logprobs`, as vLLM does.

        `timeout` bounds the whole request, streamed or not; on expiry it is
        cancelled. With `stream=True` this returns once the first chunk has
        arrived, so a rejected request raises here, as in openai-python.
        """
        top_logprobs = completion_top_logprobs(logprobs)
        check_n(n)
        connection = self._connection
        extra = with_response_format(dict(extra_body or {}), response_format)
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
            n=None if n == 1 else n,
        )
        sequences = check_n(sampling.get("n"))  # extra_body may set it too
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
        builder = _Builder(model=model, count=len(requests), n=sequences, top_logprobs=top_logprobs)
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
    n: int = 1
    top_logprobs: int | None = None
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    tokens: TokenCounts = field(default_factory=TokenCounts)
    # Per choice: where the text of its next tokens starts, across chunks.
    _text_offsets: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    async def completion(self, deltas: AsyncGenerator[Delta, None]) -> Completion:
        answers = await collect(deltas, self.count, self.tokens, self.n)
        choices = [
            _choice(
                number,
                answer.text,
                answer.finish_reason,
                self._logprobs(number, answer.logprobs),
                answer.prompt_logprobs,
            )
            for number, answer in enumerate(answers)
        ]
        return self._make(choices, self.tokens.usage())

    def chunks(self, deltas: AsyncGenerator[Delta, None], usage: bool) -> AsyncGenerator[Completion, None]:
        return stream_chunks(deltas, self.tokens, self._chunks, self._usage_chunk if usage else None)

    def _chunks(self, delta: Delta) -> list[Completion]:
        """A chunk per delta, its text empty when its tokens decode to none
        yet, as vLLM sends them: the model sends a response only for new
        tokens, a finish or extras, so each chunk marks progress (and the
        first one the first token). The prompt's logprobs ride on the chunk
        of the response that brought them, the request's first."""
        number = choice_number(delta, self.n)
        logprobs = self._logprobs(number, delta.logprobs)
        prompt = None if delta.prompt_logprobs is None else clamp_prompt_logprobs(delta.prompt_logprobs)
        return [self._make([_choice(number, delta.text, delta.finish_reason, logprobs, prompt)], None)]

    def _logprobs(self, number: int, entries: list[TokenLogprobs] | None) -> Logprobs | None:
        if self.top_logprobs is None:
            return None
        offset = self._text_offsets.get(number, 0)
        logprobs, self._text_offsets[number] = completion_logprobs(entries or (), self.top_logprobs, offset)
        return logprobs

    def _usage_chunk(self, usage: CompletionUsage) -> Completion:
        return self._make([], usage)

    def _make(self, choices: list[CompletionChoice], usage: CompletionUsage | None) -> Completion:
        return construct(
            Completion,
            id=self.id,
            choices=choices,
            created=self.created,
            model=self.model,
            object="text_completion",
            system_fingerprint=None,
            usage=usage,
        )


def _choice(
    index: int,
    text: str,
    finish_reason: str | None,
    logprobs: Logprobs | None,
    prompt_logprobs: PromptLogprobs | None = None,
) -> CompletionChoice:
    # prompt_logprobs is not a field of openai's type: set only when there
    # are some, so other choices dump exactly as openai's own.
    extra: dict[str, Any] = {} if prompt_logprobs is None else {"prompt_logprobs": prompt_logprobs}
    return construct(
        CompletionChoice, index=index, text=text, finish_reason=finish_reason, logprobs=logprobs, **extra
    )
