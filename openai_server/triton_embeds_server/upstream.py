"""The Triton servers behind this one: a `triton_embeds.AsyncClient` (gRPC)
per URL, taken in turn per request. Several URLs let one HTTP server spread
load over replicas; the client package does all of the Triton protocol."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

from triton_embeds import APIError, AsyncClient


class Upstreams:
    def __init__(self, urls: tuple[str, ...], timeout_s: float | None) -> None:
        if not urls:
            raise ValueError("at least one Triton URL is needed")
        self._clients = [AsyncClient(url, protocol="grpc", timeout=timeout_s) for url in urls]
        self._turns: Iterator[AsyncClient] = itertools.cycle(self._clients)

    def next(self) -> AsyncClient:
        """The client of the next Triton server in turn."""
        return next(self._turns)

    async def models(self) -> list[dict[str, Any]]:
        """Every model (and adapter) some Triton server serves, once each, as
        the JSON entries of /v1/models. A server that cannot be reached is
        left out: the others still serve."""
        listings = await asyncio.gather(
            *(client.models.list() for client in self._clients), return_exceptions=True
        )
        entries: dict[str, dict[str, Any]] = {}
        for listing in listings:
            if isinstance(listing, BaseException):
                if not isinstance(listing, APIError):
                    raise listing
                continue
            for model in listing.data:
                entries.setdefault(model.id, model.model_dump(exclude_none=True))
        return list(entries.values())

    async def ready(self) -> tuple[bool, str]:
        """Whether every Triton server answers and each of its models has a
        working engine, with the reason when not."""
        for client in self._clients:
            url = client.url
            try:
                listing = await client.models.list()
            except APIError as exc:
                return False, f"Triton at {url} does not answer: {exc}"
            if not listing.data:
                return False, f"Triton at {url} has no ready model"
            down = [m.id for m in listing.data if getattr(m, "ready", True) is False]
            if down:
                return False, f"the engine of {', '.join(down)} at {url} is not ready"
        return True, "ready"

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self._clients), return_exceptions=True)
