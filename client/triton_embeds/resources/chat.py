"""`client.chat.completions`: openai-python's chat completions API over Triton.

The model applies its chat template to the conversation. Responses are
openai's own `ChatCompletion` and `ChatCompletionChunk` objects, built
without validation as openai-python builds them, so the server's "abort"
finish reason passes through unchanged. A stream starts with a chunk whose
delta has the role, as OpenAI's and vLLM's do.
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
from .._concurrency import LoopThread
from .._logprobs import chat_logprobs, chat_top_logprobs, check_n
from .._requests import build_chat_request, sampling_parameters, split_chat_parameters
from .._streaming import AsyncStream, Stream
from .._transport import Connection
from .._types import Delta
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
        text. `max_completion_tokens` wins over `max_tokens`, as in vLLM;
        with neither, the model's default applies. `extra_body` may carry
        vLLM's `add_generation_prompt`, `continue_final_message` and
        `chat_template_kwargs`, and further sampling keys such as
        `ignore_eos`. `logprobs=True` gives the choice, and each streamed
        chunk for its own tokens, openai's `ChoiceLogprobs`: every token with
        its log probability, UTF-8 bytes and `top_logprobs` (0 to 20, 0 by
        default) alternatives, as vLLM gives them. `n` may only be 1.
        `timeout` and `stream` behave as in `client.completions.create`.
        """
        top = chat_top_logprobs(logprobs, top_logprobs)
        check_n(n)
        connection = self._connection
        chat_parameters, extra = split_chat_parameters(dict(extra_body or {}))
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
        )
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
        builder = _ChatBuilder(model=model, top_logprobs=top)
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
    top_logprobs: int | None = None
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    tokens: TokenCounts = field(default_factory=TokenCounts)
    _role_sent: bool = False

    async def completion(self, deltas: AsyncGenerator[Delta, None]) -> ChatCompletion:
        [answer] = await collect(deltas, 1, self.tokens)
        message = ChatCompletionMessage.model_construct(role="assistant", content=answer.text)
        logprobs = None
        if self.top_logprobs is not None:
            content = chat_logprobs(answer.logprobs, self.top_logprobs)
            logprobs = ChoiceLogprobs.model_construct(content=content)
        choice = Choice.model_construct(
            index=0, message=message, finish_reason=answer.finish_reason, logprobs=logprobs
        )
        return ChatCompletion.model_construct(
            id=self.id,
            choices=[choice],
            created=self.created,
            model=self.model,
            object="chat.completion",
            system_fingerprint=None,
            usage=self.tokens.usage(),
        )

    def chunks(
        self, deltas: AsyncGenerator[Delta, None], usage: bool
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        return stream_chunks(deltas, self.tokens, self._chunks, self._usage_chunk if usage else None)

    def _chunks(self, delta: Delta) -> list[ChatCompletionChunk]:
        """The role first, once the model has answered (so a rejected request
        still raises from `create`); then each text delta, the last with the
        finish reason, each with its tokens' logprobs when asked for. Empty
        deltas are skipped, as vLLM skips them."""
        chunks = []
        if not self._role_sent:
            self._role_sent = True
            chunks.append(self._chunk(ChoiceDelta.model_construct(role="assistant", content=""), None))
        if delta.text or delta.finish_reason or delta.logprobs:
            logprobs = None
            if self.top_logprobs is not None:
                content = chat_logprobs(delta.logprobs or (), self.top_logprobs)
                logprobs = ChunkChoiceLogprobs.model_construct(content=content)
            content_delta = ChoiceDelta.model_construct(content=delta.text)
            chunks.append(self._chunk(content_delta, delta.finish_reason, logprobs))
        return chunks

    def _chunk(
        self, delta: ChoiceDelta, finish_reason: str | None, logprobs: ChunkChoiceLogprobs | None = None
    ) -> ChatCompletionChunk:
        choice = ChunkChoice.model_construct(
            index=0, delta=delta, finish_reason=finish_reason, logprobs=logprobs
        )
        return self._make([choice], None)

    def _usage_chunk(self, usage: CompletionUsage) -> ChatCompletionChunk:
        return self._make([], usage)

    def _make(self, choices: list[ChunkChoice], usage: CompletionUsage | None) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_construct(
            id=self.id,
            choices=choices,
            created=self.created,
            model=self.model,
            object="chat.completion.chunk",
            system_fingerprint=None,
            usage=usage,
        )
