"""Server-sent events exactly as the OpenAI API sends them: `data: {...}`
per chunk, `data: [DONE]` at the end. A stream the HTTP client leaves is
closed, which cancels the request on Triton."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from pydantic import BaseModel

from triton_embeds import APIError, AsyncStream

from .errors import error_body, from_client_error

DONE = b"data: [DONE]\n\n"


def event(chunk: BaseModel) -> bytes:
    # openai's objects are built unvalidated (the "abort" finish reason is
    # not in their Literal): serialize them as they are, without warnings.
    return b"data: " + chunk.model_dump_json(warnings=False).encode() + b"\n\n"


async def sse(stream: AsyncStream[Any], edit: Callable[[Any], Any] | None = None) -> AsyncIterator[bytes]:
    """The events of `stream`, each chunk passed through `edit` first. A
    failure after the first event can no longer change the status: it goes
    out as an error event (as vLLM's server sends it), then the stream ends."""
    try:
        async for chunk in stream:
            yield event(edit(chunk) if edit else chunk)
        yield DONE
    except APIError as exc:
        failure = from_client_error(exc)
        yield (
            b"data: "
            + msgspec.json.encode(error_body(failure.status, failure.message, failure.code))
            + b"\n\n"
        )
    finally:
        await stream.close()
