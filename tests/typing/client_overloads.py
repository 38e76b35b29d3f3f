"""Checked by mypy (scripts/lint.sh), never run: `create` returns a
completion or a stream according to `stream`, as in openai-python."""

from __future__ import annotations

from typing import Any

from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.completion_choice import Logprobs
from typing_extensions import assert_type

from triton_embeds import AsyncClient, AsyncStream, Client, Stream

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]


def sync_calls(client: Client, flag: bool) -> None:
    assert_type(client.completions.create(model="m", prompt="hi"), Completion)
    assert_type(client.completions.create(model="m", prompt="hi", stream=False), Completion)
    assert_type(client.completions.create(model="m", prompt="hi", stream=True), Stream[Completion])
    assert_type(
        client.completions.create(model="m", prompt="hi", stream=flag), Completion | Stream[Completion]
    )


def sync_chat_calls(client: Client, flag: bool, typed: list[ChatCompletionMessageParam]) -> None:
    chat = client.chat.completions
    assert_type(chat.create(model="m", messages=MESSAGES), ChatCompletion)
    answer = chat.create(model="m", messages=typed)  # openai's own message types
    assert_type(chat.create(model="m", messages=[*MESSAGES, answer.choices[0].message]), ChatCompletion)
    assert_type(chat.create(model="m", messages=MESSAGES, stream=False, max_tokens=4), ChatCompletion)
    assert_type(chat.create(model="m", messages=MESSAGES, stream=True), Stream[ChatCompletionChunk])
    assert_type(
        chat.create(model="m", messages=MESSAGES, stream=flag), ChatCompletion | Stream[ChatCompletionChunk]
    )


def logprobs_calls(client: Client) -> None:
    completion = client.completions.create(model="m", prompt="hi", logprobs=2, n=1)
    assert_type(completion.choices[0].logprobs, Logprobs | None)
    chat = client.chat.completions
    answer = chat.create(model="m", messages=MESSAGES, logprobs=True, top_logprobs=2)
    assert_type(answer.choices[0].logprobs, ChoiceLogprobs | None)
    stream = chat.create(model="m", messages=MESSAGES, stream=True, logprobs=True)
    assert_type(stream, Stream[ChatCompletionChunk])
    chat.create(model="m", messages=MESSAGES, logprobs=2)  # type: ignore[call-overload]  # a bool in chat


async def async_calls(client: AsyncClient) -> None:
    assert_type(await client.completions.create(model="m", prompt_embeds=[1.0]), Completion)
    stream = await client.completions.create(model="m", prompt="hi", stream=True, max_tokens=4)
    assert_type(stream, AsyncStream[Completion])


async def async_chat_calls(client: AsyncClient, flag: bool) -> None:
    chat = client.chat.completions
    parts = [{"type": "prompt_embeds", "data": b"..."}, {"type": "text", "text": "Summarize."}]
    assert_type(
        await chat.create(model="m", messages=[{"role": "user", "content": parts}], extra_body={}),
        ChatCompletion,
    )
    usage = {"include_usage": True}
    stream = await chat.create(model="m", messages=MESSAGES, stream=True, stream_options=usage)
    assert_type(stream, AsyncStream[ChatCompletionChunk])
    assert_type(
        await chat.create(model="m", messages=MESSAGES, stream=flag),
        ChatCompletion | AsyncStream[ChatCompletionChunk],
    )
