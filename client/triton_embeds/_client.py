"""`Client` and `AsyncClient`: openai-python's shape over Triton gRPC or HTTP."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Literal

from ._concurrency import LoopThread
from ._replicas import (
    BalancedTransport,
    LoadBalancing,
    Targets,
    grpc_targets,
    http_targets,
    is_http,
    split_addresses,
)
from ._retries import DEFAULT_MAX_RETRIES, check_max_retries
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

    Several Triton replicas: `url` may be a list of addresses, one
    comma-separated string of them, or a gRPC target URI such as
    `dns:///triton-headless:8001` (a headless Service: every pod) or
    `ipv4:10.0.0.1:8001,10.0.0.2:8001`. `load_balancing` says how calls are
    spread: "round_robin" (the default with several addresses or a `dns:`
    target: each call to the next replica) or "pick_first" (the default
    otherwise: one replica until it cannot be reached). `targets` shows what
    the client connects to: one gRPC target per channel (IP addresses share
    one `ipv4:`/`ipv6:` channel balanced by gRPC; host names get a channel
    each, taken in turn), or one base URL per replica over HTTP.

    `transport` says how embeddings travel: "binary" (a raw tensor input, no
    serialization; gRPC only, the gRPC default) or "base64" (torch.save bytes,
    vLLM's and Dynamo's format; the only form the HTTP generate API carries).
    It applies to completions' `prompt_embeds` and to the tensors and arrays
    of chat messages' "prompt_embeds" parts alike.
    `timeout` bounds each whole request, retries included, in seconds; None
    waits forever. `max_retries` (2, as openai-python) is how many more times
    a request is sent when the server refused it before any output: the
    model overloaded, its engine restarting, the server draining or not
    ready, or no connection. Waits start at 0.5 s and double up to 8 s, with
    jitter; nothing is retried once output has arrived, nor any rejection.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        protocol: Protocol | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        transport: EmbedsTransport | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        load_balancing: LoadBalancing | None = None,
    ) -> None:
        given = None if url is None or url == "" else url  # "" has always meant the default
        addresses = None if given is None else split_addresses(given)
        self.protocol: Protocol = _protocol(addresses, protocol)
        self.url: str | Sequence[str] = given if given is not None else DEFAULT_URLS[self.protocol]
        resolved = _targets(self.protocol, addresses or [DEFAULT_URLS[self.protocol]], load_balancing)
        self.targets: tuple[str, ...] = resolved.addresses
        self.load_balancing: LoadBalancing = resolved.load_balancing
        wire = _wire(self.protocol, resolved, timeout)
        self._connection = Connection(
            wire, _embeds_transport(self.protocol, transport), timeout, check_max_retries(max_retries)
        )
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

    @property
    def max_retries(self) -> int:
        """How many more times a refused request is sent; may be changed."""
        return self._connection.max_retries

    @max_retries.setter
    def max_retries(self, value: int) -> None:
        self._connection.max_retries = check_max_retries(value)

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
        url: str | Sequence[str] | None = None,
        *,
        protocol: Protocol | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        transport: EmbedsTransport | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        load_balancing: LoadBalancing | None = None,
    ) -> None:
        self._async = AsyncClient(
            url,
            protocol=protocol,
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
            load_balancing=load_balancing,
        )
        self._loop = LoopThread()
        # Closes connections and stops the thread when the client is closed,
        # garbage collected, or the interpreter exits, whichever comes first.
        self._finalizer = weakref.finalize(self, _shut_down, self._loop, self._async)
        self.completions = Completions(self._async.completions, self._loop, owner=self)
        self.chat = Chat(self._async.chat, self._loop, owner=self)
        self.models = Models(self._async.models, self._loop, owner=self)

    @property
    def url(self) -> str | Sequence[str]:
        return self._async.url

    @property
    def targets(self) -> tuple[str, ...]:
        return self._async.targets

    @property
    def load_balancing(self) -> LoadBalancing:
        return self._async.load_balancing

    @property
    def max_retries(self) -> int:
        return self._async.max_retries

    @max_retries.setter
    def max_retries(self, value: int) -> None:
        self._async.max_retries = value

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


def _protocol(addresses: list[str] | None, protocol: str | None) -> Protocol:
    if protocol is None:
        http = [is_http(address) for address in addresses or []]
        if any(http) and not all(http):
            raise ValueError(f"url mixes HTTP and gRPC addresses: {addresses!r}")
        protocol = "http" if http and all(http) else "grpc"
    if protocol not in ("grpc", "http"):
        raise ValueError(f'protocol must be "grpc" or "http", got {protocol!r}')
    return "http" if protocol == "http" else "grpc"


def _targets(protocol: Protocol, addresses: list[str], load_balancing: str | None) -> Targets:
    if protocol == "grpc":
        return grpc_targets(addresses, load_balancing)
    return http_targets(addresses, load_balancing)


def _wire(protocol: Protocol, targets: Targets, timeout: float | None) -> Transport:
    """One transport per target; several are taken as `load_balancing` says."""
    transports: list[Transport] = [
        GrpcTransport(target, timeout, targets.load_balancing)
        if protocol == "grpc"
        else HttpTransport(target, timeout)
        for target in targets.addresses
    ]
    return transports[0] if len(transports) == 1 else BalancedTransport(transports, targets.load_balancing)


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
