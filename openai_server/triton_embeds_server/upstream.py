"""The Triton servers behind this one. Generation goes through one
`triton_embeds.AsyncClient` (gRPC) over every URL, which balances per call;
when that can reach several replicas (several URLs, or a `dns:///` name of a
headless Service) it also retries a refusal that came before any output
(a draining or restarting replica) on the next one, so the HTTP client never
sees it. Listings and health ask each URL's own client. The client package
does all of the Triton protocol."""

from __future__ import annotations

import asyncio
from typing import Any

from triton_embeds import APIError, AsyncClient


class Upstreams:
    def __init__(self, urls: tuple[str, ...], timeout_s: float | None) -> None:
        if not urls:
            raise ValueError("at least one Triton URL is needed")
        self._clients = [AsyncClient(url, protocol="grpc", timeout=timeout_s, max_retries=0) for url in urls]
        # One replica: a refusal is answered at once (503 with Retry-After;
        # HTTP clients such as the OpenAI SDK retry it themselves).
        several = len(urls) > 1 or urls[0].startswith("dns:")
        self._generation = AsyncClient(
            list(urls), protocol="grpc", timeout=timeout_s, max_retries=2 if several else 0
        )

    def next(self) -> AsyncClient:
        """The client that sends the next generation request."""
        return self._generation

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
        clients = [*self._clients, self._generation]
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
