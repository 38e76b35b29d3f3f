"""Retrying what is safe to retry, as openai-python does: `max_retries`
(2 by default) more attempts, after 0.5 s, then twice as long each time up
to 8 s, each shortened by up to a quarter at random.

A request is tried again only when it failed before the server produced
any output for it, and only for a failure that says the server did not
serve it: the model's `unavailable` errors (concurrency limit, engine
restarting or down, server draining), Triton's "model is not ready", HTTP
503, 429 and 408, 502 from a proxy, and connection failures. Rejections
(400), unknown models (404), faults inside the model (500) and timeouts
are final. Once a delta has arrived nothing is retried: the caller may
already hold part of the answer.

A small loop rather than a retry library: the unit of retry here is the
part of an async generator before its first item, which decorators of
whole calls do not express, and the remaining deadline decides whether a
backoff is still worth sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

from ._errors import APIConnectionError, APIError, APIStatusError, APITimeoutError, ServiceUnavailableError

DEFAULT_MAX_RETRIES = 2  # openai-python's
INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 8.0
# HTTP statuses of a request refused before it ran (503 is ServiceUnavailableError).
_REFUSED_STATUSES = frozenset({408, 429, 502})

T = TypeVar("T")
log = logging.getLogger("triton_embeds")


def is_retryable(error: BaseException) -> bool:
    """Whether a request that failed with `error`, before any output, may be
    sent again."""
    if isinstance(error, APITimeoutError):
        return False  # the request's own time is spent
    if isinstance(error, (APIConnectionError, ServiceUnavailableError)):
        return True
    return isinstance(error, APIStatusError) and error.status_code in _REFUSED_STATUSES


def backoff_delay(retry: int) -> float:
    """Seconds to wait before retry number `retry` (0 for the first)."""
    delay = min(INITIAL_DELAY_S * 2.0**retry, MAX_DELAY_S)
    return delay * (1 - 0.25 * random.random())


def check_max_retries(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {value!r}")
    return value


class _Attempts:
    """The retry budget of one request: whether another attempt may follow
    `error`, and the wait before it, bounded by the request's `timeout`."""

    def __init__(self, max_retries: int, timeout: float | None) -> None:
        self._left = max_retries
        self._retry = 0
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._give_up_at = None if timeout is None else loop.time() + timeout

    def delay_after(self, error: APIError) -> float | None:
        """The wait before the next attempt; None when `error` is final."""
        if self._left <= 0 or not is_retryable(error):
            return None
        delay = backoff_delay(self._retry)
        if self._give_up_at is not None and self._clock() + delay >= self._give_up_at:
            return None  # the timeout would end the wait: report the error itself
        self._left -= 1
        self._retry += 1
        log.info("retrying in %.2f s after: %s", delay, error)
        return delay


async def retry_stream(
    start: Callable[[], AsyncGenerator[T, None]], max_retries: int, timeout: float | None
) -> AsyncGenerator[T, None]:
    """The items of `start()`, started again after a retryable error that
    came before its first item."""
    attempts = _Attempts(max_retries, timeout)
    while True:
        started = False
        try:
            async with aclosing(start()) as items:
                async for item in items:
                    started = True
                    yield item
            return
        except APIError as error:
            delay = None if started else attempts.delay_after(error)
            if delay is None:
                raise
        await asyncio.sleep(delay)


async def retry_call(call: Callable[[], Awaitable[T]], max_retries: int, timeout: float | None) -> T:
    """`await call()`, made again after a retryable error."""
    attempts = _Attempts(max_retries, timeout)
    while True:
        try:
            return await call()
        except APIError as error:
            delay = attempts.delay_after(error)
            if delay is None:
                raise
        await asyncio.sleep(delay)
