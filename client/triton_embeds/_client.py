"""`Client` and `AsyncClient`: openai-python's shape over Triton gRPC or HTTP."""

from __future__ import annotations

import weakref
from typing import Any, Literal

from ._concurrency import LoopThread
from ._transport import Connection, EmbedsTransport, Transport
from ._transport_grpc import GrpcTransport
from ._transport_http import HttpTransport
from .resources import AsyncChat, AsyncCompletions, AsyncModels, Chat, Completions, Models

Protocol = Literal["grpc", "http"]
DEFAULT_URLS = {"grpc": "localhost:8001", "http": "localhost:8000"}
DEFAULT_TIMEOUT = 600.0  # seconds, openai-python's default


class AsyncClient:
    """Async client. `url` is `host:port`; a scheme picks the protocol when
    `protocol` is not given (`http://` or `https://` for HTTP, else gRPC).

    `transport` says how embeddings travel: "binary" (a raw tensor input, no
    serialization; gRPC only, the gRPC default) or "base64" (torch.save bytes,
    vLLM's and Dynamo's format; the only form the HTTP generate API carries).
    It applies to completions' `prompt_embeds` and to the tensors and arrays
    of chat messages' "prompt_embeds" parts alike.
    `timeout` bounds each whole request, in seconds; None waits forever.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        protocol: Protocol | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        transport: EmbedsTransport | None = None,
    ) -> None:
        self.protocol: Protocol = _protocol(url, protocol)
        self.url = url or DEFAULT_URLS[self.protocol]
        wire: Transport = (
            GrpcTransport(self.url, timeout) if self.protocol == "grpc" else HttpTransport(self.url, timeout)
        )
        self._connection = Connection(wire, _embeds_transport(self.protocol, transport), timeout)
        self.completions = AsyncCompletions(self._connection)
        self.chat = AsyncChat(self._connection)
        self.models = AsyncModels(self._connection)

    @property
    def timeout(self) -> float | None:
        """Default bound of each whole request, in seconds; may be changed."""
        return self._connection.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._connection.timeout = value

    @property
    def embeds_transport(self) -> EmbedsTransport:
        """How embeddings travel ("binary" or "base64"); may be changed."""
        return self._connection.embeds_transport

    @embeds_transport.setter
    def embeds_transport(self, value: EmbedsTransport) -> None:
        self._connection.embeds_transport = _embeds_transport(self.protocol, value)

    async def close(self) -> None:
        await self._connection.transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


class Client:
    """Synchronous client with the same arguments as AsyncClient. It runs the
    async client on a private event loop thread (started on first use), so it
    is safe to share between threads and works inside a running event loop."""

    def __init__(
        self,
        url: str | None = None,
        *,
        protocol: Protocol | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        transport: EmbedsTransport | None = None,
    ) -> None:
        self._async = AsyncClient(url, protocol=protocol, timeout=timeout, transport=transport)
        self._loop = LoopThread()
        # Closes connections and stops the thread when the client is closed,
        # garbage collected, or the interpreter exits, whichever comes first.
        self._finalizer = weakref.finalize(self, _shut_down, self._loop, self._async)
        self.completions = Completions(self._async.completions, self._loop, owner=self)
        self.chat = Chat(self._async.chat, self._loop, owner=self)
        self.models = Models(self._async.models, self._loop, owner=self)

    @property
    def url(self) -> str:
        return self._async.url

    @property
    def protocol(self) -> Protocol:
        return self._async.protocol

    @property
    def timeout(self) -> float | None:
        return self._async.timeout

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _shut_down(loop: LoopThread, client: AsyncClient) -> None:
    try:
        if loop.is_running():
            loop.call(client.close())
    finally:
        loop.stop()


def _protocol(url: str | None, protocol: str | None) -> Protocol:
    if protocol is None:
        scheme = url.split("://", 1)[0].lower() if url and "://" in url else "grpc"
        protocol = "http" if scheme in ("http", "https") else "grpc"
    if protocol not in ("grpc", "http"):
        raise ValueError(f'protocol must be "grpc" or "http", got {protocol!r}')
    return "http" if protocol == "http" else "grpc"


def _embeds_transport(protocol: Protocol, transport: str | None) -> EmbedsTransport:
    if transport is None:
        return "binary" if protocol == "grpc" else "base64"
    if transport not in ("binary", "base64"):
        raise ValueError(f'transport must be "binary" or "base64", got {transport!r}')
    if protocol == "http" and transport == "binary":
        raise ValueError(
            "Triton's HTTP generate API flattens arrays, so embeddings go as base64 there; "
            'use transport="base64" or protocol="grpc"'
        )
    return "binary" if transport == "binary" else "base64"
