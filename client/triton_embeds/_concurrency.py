"""The asyncio plumbing shared by both clients.

The request logic exists once, as coroutines. The synchronous `Client` runs
them on a private event loop thread (`LoopThread`), so closing a sync stream
cancels a request exactly as closing an async one does, and a sync batch
runs its prompts concurrently without a thread per prompt.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Coroutine
from contextlib import aclosing
from typing import Any, TypeVar

from ._errors import APITimeoutError

T = TypeVar("T")


async def merge(iterators: list[AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
    """Items of several async iterators as they arrive. Closing the merged
    iterator cancels every source, which closes their connections."""
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    done = object()

    async def pump(iterator: AsyncGenerator[T, None]) -> None:
        try:
            async for item in iterator:
                queue.put_nowait((item, None))
            queue.put_nowait((done, None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            queue.put_nowait((None, exc))

    tasks = [asyncio.ensure_future(pump(iterator)) for iterator in iterators]
    try:
        pending = len(tasks)
        while pending:
            item, error = await queue.get()
            if error is not None:
                raise error
            if item is done:
                pending -= 1
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def with_deadline(iterator: AsyncGenerator[T, None], timeout: float | None) -> AsyncGenerator[T, None]:
    """Bound a whole request, streamed or not, by `timeout` seconds. On expiry
    the pending read is cancelled, which cancels the request on the server."""
    async with aclosing(iterator):
        if timeout is None:
            async for item in iterator:
                yield item
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                item = await asyncio.wait_for(_next(iterator), deadline - loop.time())
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise APITimeoutError(f"request timed out after {timeout:g} s and was cancelled") from None
            yield item


async def _next(iterator: AsyncGenerator[T, None]) -> T:
    return await iterator.__anext__()


class LoopThread:
    """An event loop on a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def is_running(self) -> bool:
        return self._loop is not None

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop and wait for it. Interrupting the wait
        (Ctrl-C) cancels the coroutine rather than leaving it running."""
        loop = self._started()
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a blocking client call cannot run on the client's own loop thread")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Schedule without waiting: safe from finalizers on any thread."""
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("loop not running")
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(coroutine))
        except Exception:  # noqa: BLE001 - stopped, closed, or the interpreter is exiting
            coroutine.close()

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="triton-embeds-loop", daemon=True
                )
                self._thread.start()
            return self._loop
