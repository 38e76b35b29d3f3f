"""Reading a request body: bounded before it is read whole, decoded and
checked against its Struct in one pass."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from starlette.requests import Request

from .errors import HTTPError, validation_error

T = TypeVar("T")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass `limit`:
    at once when Content-Length says so, else once the bytes read do (a
    chunked body, or a Content-Length that lies, is never buffered past it)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPError(400, f"Content-Length {declared!r} is not a number", "invalid_request")
        if int(declared) > limit:
            raise too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(size: int, limit: int) -> HTTPError:
    return HTTPError(
        413,
        f"the request body is over {size} bytes, above this server's limit of {limit}",
        "request_too_large",
    )


def decode(body: bytes, kind: type[T]) -> T:
    if not body:
        raise HTTPError(400, "the request has no body: send a JSON object", "invalid_json")
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise validation_error(exc) from None
    except RecursionError:  # msgspec bounds its own depth this way
        raise HTTPError(400, "the body is nested too deeply", "invalid_json") from None
