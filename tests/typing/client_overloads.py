"""Checked by mypy (scripts/lint.sh), never run: `create` returns a
completion or a stream according to `stream`, as in openai-python."""

from __future__ import annotations

from openai.types import Completion
from typing_extensions import assert_type

from triton_embeds import AsyncClient, AsyncStream, Client, Stream


def sync_calls(client: Client, flag: bool) -> None:
    assert_type(client.completions.create(model="m", prompt="hi"), Completion)
    assert_type(client.completions.create(model="m", prompt="hi", stream=False), Completion)
    assert_type(client.completions.create(model="m", prompt="hi", stream=True), Stream[Completion])
    assert_type(
        client.completions.create(model="m", prompt="hi", stream=flag), Completion | Stream[Completion]
    )


async def async_calls(client: AsyncClient) -> None:
    assert_type(await client.completions.create(model="m", prompt_embeds=[1.0]), Completion)
    stream = await client.completions.create(model="m", prompt="hi", stream=True, max_tokens=4)
    assert_type(stream, AsyncStream[Completion])
