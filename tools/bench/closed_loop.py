"""A closed loop: `concurrency` slots, each sending its next request as soon
as the previous one finished, until the payloads run out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .stats import RequestRecord

Send = Callable[[Any], Awaitable[RequestRecord]]


async def run_closed_loop(send: Send, payloads: Sequence[Any], concurrency: int) -> list[RequestRecord]:
    pending = iter(payloads)
    records: list[RequestRecord] = []

    async def slot() -> None:
        for payload in pending:  # one shared iterator: each payload is taken once
            records.append(await _guarded(send, payload))

    slots = max(1, min(concurrency, len(payloads)))
    await asyncio.gather(*(slot() for _ in range(slots)))
    return records


async def _guarded(send: Send, payload: Any) -> RequestRecord:
    """A transport error becomes a failed record, so one bad request does not stop the run."""
    start = time.monotonic()
    try:
        return await send(payload)
    except Exception as exc:  # noqa: BLE001 - every failure is counted, not raised
        return RequestRecord(start, time.monotonic(), error=f"{type(exc).__name__}: {exc}"[:300])
