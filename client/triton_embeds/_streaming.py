"""Stream objects returned by `create(..., stream=True)`, as in openai-python.

Closing a stream, leaving its `with` block, or breaking out of a loop over a
stream that nothing else references cancels the request on the server.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Generic, TypeVar

from ._concurrency import LoopThread

T = TypeVar("T")


_NOTHING: Any = object()


class AsyncStream(Generic[T]):
    """An async iterator of chunks; `await stream.close()` cancels the request."""

    def __init__(self, iterator: AsyncGenerator[T, None], first: Any = _NOTHING) -> None:
        self._iterator = iterator
        self._first = first

    @classmethod
    async def start(cls, iterator: AsyncGenerator[T, None]) -> AsyncStream[T]:
        """Wait for the first chunk, so that a rejected request raises from
        `create()` itself, as it does with openai-python."""
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            return cls(iterator)
        return cls(iterator, first)

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._first is not _NOTHING:
            first, self._first = self._first, _NOTHING
            return first
        return await self._iterator.__anext__()

    async def close(self) -> None:
        async with aclosing(self._iterator):
            pass

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


class Stream(Generic[T]):
    """An iterator of chunks; `stream.close()` cancels the request."""

    def __init__(self, loop: LoopThread, stream: AsyncStream[T], owner: Any = None) -> None:
        self._loop = loop
        self._stream = stream
        self._owner = owner  # keeps the client (and its loop) alive while streaming
        self._closed = False

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            return self._loop.call(_next(self._stream))
        except StopAsyncIteration:
            self._closed = True
            raise StopIteration from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.call(self._stream.close())

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # Without waiting: a finalizer may run on the loop's own thread.
        if not getattr(self, "_closed", True):
            self._closed = True
            self._loop.submit(self._stream.close())


async def _next(stream: AsyncStream[T]) -> T:
    return await stream.__anext__()
