"""`client.chat.completions`: openai-python's chat completions API over Triton.

The model applies its chat template to the conversation. Responses are
openai's own `ChatCompletion` and `ChatCompletionChunk` objects, built
without validation as openai-python builds them, so the server's "abort"
finish reason passes through unchanged. A stream starts each choice with a
chunk whose delta has the role, as OpenAI's and vLLM's do. The prompt's
logprobs, when asked for, are the response's `prompt_logprobs`, as vLLM's
server puts them (an extra field of openai's types).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice, ChoiceLogprobs
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_chunk import ChoiceLogprobs as ChunkChoiceLogprobs
from typing_extensions import Unpack

from .._chat_messages import ChatMessage
from .._choices import check_n, choice_number
from .._concurrency import LoopThread
from .._logprobs import chat_logprobs, chat_top_logprobs, clamp_prompt_logprobs
from .._requests import build_chat_request, sampling_parameters, split_chat_parameters
from .._streaming import AsyncStream, Stream
from .._structured import with_response_format
from .._transport import Connection
from .._types import Delta, PromptLogprobs, construct
from ._generation import (
    NOT_GIVEN,
    Answer,
    GenerationParams,
    TokenCounts,
    call_sync,
    collect,
    generate,
    include_usage,
    signature_of,
    stream_chunks,
)


class ChatCompletionParams(GenerationParams, total=False):
    """The arguments of `create` besides `model`, `messages` and `stream`."""

    max_completion_tokens: int | None
    logprobs: bool | None
    top_logprobs: int | None


class AsyncChatCompletions:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[ChatMessage],
        stream: Literal[False] = False,
        **params: Unpack[ChatCompletionParams],
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[ChatMessage],
        stream: Literal[True],
        **params: Unpack[ChatCompletionParams],
    ) -> AsyncStream[ChatCompletionChunk]: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Iterable[ChatMessage],
        stream: bool,
        **params: Unpack[ChatCompletionParams],
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]: ...

    async def create(
        self,
        *,
        model: str,
        messages: Iterable[ChatMessage],
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        n: int | None = None,
        response_format: dict[str, Any] | None = None,
        stream: bool = False,
        stream_options: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = NOT_GIVEN,
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """Answer a chat conversation; the model applies its chat template.

        `messages`: openai-style dicts with `role` (system, developer, user,
        assistant, tool), `content` (a string or a list of parts) and
        optionally `name`, or messages of earlier responses. Besides
        `{"type": "text", "text": ...}`, a part may be
        `{"type": "prompt_embeds", "data": X}`, X one prompt's (S, H) or
        (1, S, H) embeddings as a torch.Tensor, numpy array, base64 string
        (vLLM's form) or torch.save bytes; it stands where it is among the
        text. `model` is a Triton model or one of its LoRA adapters, as
        `client.models.list()` shows them. `max_completion_tokens` wins over
        `max_tokens`, as in vLLM; with neither, the model's default applies.
        `n` (1 to 16) answers are choices 0 to n - 1. `logprobs=True` gives
        each choice, and each streamed chunk for its own tokens, openai's
        `ChoiceLogprobs`: every token with its log probability, UTF-8 bytes
        and `top_logprobs` (0 to 20, 0 by default) alternatives, as vLLM
        gives them. `response_format` constrains the answer as in vLLM:
        `{"type": "json_schema", "json_schema": {"name": ..., "schema":
        {...}}}` to the schema, `{"type": "json_object"}` to any JSON object,
        `{"type": "text"}` not at all.

        `extra_body` may carry vLLM's `add_generation_prompt`,
        `continue_final_message` and `chat_template_kwargs`, and any further
        key of the server's sampling parameters, as in
        `client.completions.create` (`prompt_logprobs` then gives the
        response's `prompt_logprobs`; the server refuses it for a
        conversation with embeddings). `timeout` and `stream` behave as in
        `client.completions.create`.
        """
        top = chat_top_logprobs(logprobs, top_logprobs)
        check_n(n)
        connection = self._connection
        chat_parameters, extra = split_chat_parameters(dict(extra_body or {}))
        extra = with_response_format(extra, response_format)
        sampling = sampling_parameters(
            extra,
            max_tokens=max_completion_tokens if max_completion_tokens is not None else max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop=stop,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            logprobs=top,
            n=None if n == 1 else n,
        )
        sequences = check_n(sampling.get("n"))  # extra_body may set it too
        request = await build_chat_request(
            messages=messages,
            chat_parameters=chat_parameters,
            sampling=sampling,
            stream=stream,
            embeds_transport=connection.embeds_transport,
            model_inputs=lambda: connection.model_inputs(model),
            return_logprobs=top is not None,
        )
        deltas = generate(connection, model, [request], timeout)
        builder = _ChatBuilder(model=model, n=sequences, top_logprobs=top)
        if not stream:
            return await builder.completion(deltas)
        return await AsyncStream.start(builder.chunks(deltas, include_usage(stream_options)))


class ChatCompletions:
    """Synchronous face of AsyncChatCompletions: same arguments, same results."""

    def __init__(self, completions: AsyncChatCompletions, loop: LoopThread, owner: object) -> None:
        self._async = completions
        self._loop = loop
        self._owner = owner  # a stream keeps it (and so the loop) alive

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Iterable[ChatMessage],
        stream: Literal[False] = False,
        **params: Unpack[ChatCompletionParams],
    ) -> ChatCompletion: ...

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Iterable[ChatMessage],
        stream: Literal[True],
        **params: Unpack[ChatCompletionParams],
    ) -> Stream[ChatCompletionChunk]: ...

    @overload
    def create(
        self,
        *,
        model: str,
        messages: Iterable[ChatMessage],
        stream: bool,
        **params: Unpack[ChatCompletionParams],
    ) -> ChatCompletion | Stream[ChatCompletionChunk]: ...

    @signature_of(AsyncChatCompletions.create)
    def create(
        self,
        *,
        model: str,
        messages: Iterable[ChatMessage],
        stream: bool = False,
        **params: Unpack[ChatCompletionParams],
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        coroutine = self._async.create(model=model, messages=messages, stream=stream, **params)
        return call_sync(self._loop, self._owner, coroutine)


class AsyncChat:
    """`client.chat`, as in openai-python: holds `completions`."""

    def __init__(self, connection: Connection) -> None:
        self.completions = AsyncChatCompletions(connection)


class Chat:
    """`client.chat` of the synchronous client."""

    def __init__(self, chat: AsyncChat, loop: LoopThread, owner: object) -> None:
        self.completions = ChatCompletions(chat.completions, loop, owner)


@dataclass
class _ChatBuilder:
    """Turns the model's deltas into openai chat completion objects;
    `top_logprobs` is the call's (None: no logprobs asked for)."""

    model: str
    n: int = 1
    top_logprobs: int | None = None
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    tokens: TokenCounts = field(default_factory=TokenCounts)
    _started: set[int] = field(default_factory=set, init=False, repr=False)

    async def completion(self, deltas: AsyncGenerator[Delta, None]) -> ChatCompletion:
        answers = await collect(deltas, 1, self.tokens, self.n)
        return construct(
            ChatCompletion,
            id=self.id,
            choices=[self._choice(number, answer) for number, answer in enumerate(answers)],
            created=self.created,
            model=self.model,
            object="chat.completion",
            system_fingerprint=None,
            usage=self.tokens.usage(),
            **_prompt_logprobs(answers[0].prompt_logprobs),
        )

    def _choice(self, number: int, answer: Answer) -> Choice:
        message = construct(ChatCompletionMessage, role="assistant", content=answer.text)
        logprobs = None
        if self.top_logprobs is not None:
            content = chat_logprobs(answer.logprobs, self.top_logprobs)
            logprobs = construct(ChoiceLogprobs, content=content)
        return construct(
            Choice, index=number, message=message, finish_reason=answer.finish_reason, logprobs=logprobs
        )

    def chunks(
        self, deltas: AsyncGenerator[Delta, None], usage: bool
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        return stream_chunks(deltas, self.tokens, self._chunks, self._usage_chunk if usage else None)

    def _chunks(self, delta: Delta) -> list[ChatCompletionChunk]:
        """Each choice's role first, once the model has answered for it (so
        a rejected request still raises from `create`); then a chunk per
        delta, a choice's last with its finish reason, each with its tokens'
        logprobs when asked for. As in vLLM, a delta whose tokens decode to
        no text yet still gets its chunk (empty content): the model sends a
        response only for new tokens, a finish or extras. The prompt's
        logprobs ride on the chunk that brought them."""
        number = choice_number(delta, self.n)
        chunks = []
        if number not in self._started:
            self._started.add(number)
            role = construct(ChoiceDelta, role="assistant", content="")
            chunks.append(self._chunk(number, role, None))
        logprobs = None
        if self.top_logprobs is not None:
            content = chat_logprobs(delta.logprobs or (), self.top_logprobs)
            logprobs = construct(ChunkChoiceLogprobs, content=content)
        content_delta = construct(ChoiceDelta, content=delta.text)
        chunk = self._chunk(number, content_delta, delta.finish_reason, logprobs, delta.prompt_logprobs)
        chunks.append(chunk)
        return chunks

    def _chunk(
        self,
        number: int,
        delta: ChoiceDelta,
        finish_reason: str | None,
        logprobs: ChunkChoiceLogprobs | None = None,
        prompt_logprobs: PromptLogprobs | None = None,
    ) -> ChatCompletionChunk:
        choice = construct(
            ChunkChoice, index=number, delta=delta, finish_reason=finish_reason, logprobs=logprobs
        )
        return self._make([choice], None, prompt_logprobs)

    def _usage_chunk(self, usage: CompletionUsage) -> ChatCompletionChunk:
        return self._make([], usage)

    def _make(
        self,
        choices: list[ChunkChoice],
        usage: CompletionUsage | None,
        prompt_logprobs: PromptLogprobs | None = None,
    ) -> ChatCompletionChunk:
        return construct(
            ChatCompletionChunk,
            id=self.id,
            choices=choices,
            created=self.created,
            model=self.model,
            object="chat.completion.chunk",
            system_fingerprint=None,
            usage=usage,
            **_prompt_logprobs(prompt_logprobs),
        )


def _prompt_logprobs(entries: PromptLogprobs | None) -> dict[str, Any]:
    """The extra `prompt_logprobs` field, as vLLM's chat responses have it
    beside `choices`; set only when there are some, so other responses dump
    exactly as openai's own."""
    return {} if entries is None else {"prompt_logprobs": clamp_prompt_logprobs(entries)}
