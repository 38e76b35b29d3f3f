"""Several Triton replicas behind one client.

A Kubernetes Service balances connections, not calls, and gRPC multiplexes
every call of a client on one HTTP/2 connection, so without more one
client's load lands on one pod. A client given several addresses, or a
`dns:///` target that resolves to several (a headless Service), spreads its
calls instead:

- IP addresses of one family become one static gRPC target,
  `ipv4:10.0.0.1:8001,10.0.0.2:8001` (or `ipv6:[::1]:8001,...`), on one
  channel whose `round_robin` policy sends each call to the next ready
  replica and skips unreachable ones. gRPC's `ipv4:`/`ipv6:` schemes take IP
  literals only, so
- host names get a channel each, and the client takes them in turn per call
  (`BalancedTransport`); HTTP addresses get a session each, in turn per
  request, the same way.

A gRPC target URI (`dns:///name:8001`, `ipv4:...`, `unix:...`) goes to gRPC
as it is. The load-balancing policy is gRPC's `grpc.lb_policy_name` for
every channel, and the client's own rule across channels or sessions:
"round_robin" (the default with several addresses or a `dns:` target) or
"pick_first" (the default otherwise: the first address until it cannot be
reached, then the next).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ._errors import APIConnectionError, APITimeoutError
from ._transport import Transport
from ._types import Delta, GenerateRequest

LoadBalancing = Literal["round_robin", "pick_first"]
LOAD_BALANCING: tuple[LoadBalancing, ...] = ("round_robin", "pick_first")

# Schemes of gRPC's own target URIs (grpc/doc/naming.md); anything else is
# a plain `host:port` address.
_GRPC_URI = re.compile(r"^(dns|ipv4|ipv6|unix|unix-abstract|vsock):", re.IGNORECASE)
_IPV4 = re.compile(r"^(?P<host>[0-9.]+):(?P<port>\d+)$")
_IPV6 = re.compile(r"^\[(?P<host>[^\]]+)\]:(?P<port>\d+)$")

T = TypeVar("T")


def is_grpc_uri(address: str) -> bool:
    """Whether `address` is a gRPC target URI (`dns:///name:8001`,
    `ipv4:10.0.0.1:8001,10.0.0.2:8001`, ...) rather than `host:port`."""
    return _GRPC_URI.match(address) is not None


def split_addresses(url: str | Sequence[str]) -> list[str]:
    """The addresses of a client's `url`: a list or tuple of them, one
    comma-separated string, or one gRPC target URI (kept whole: its commas
    are gRPC's)."""
    if isinstance(url, str):
        items = [url] if is_grpc_uri(url.strip()) else url.split(",")
    elif isinstance(url, Sequence) and all(isinstance(item, str) for item in url):
        items = list(url)
        for item in items:
            if "," in item and not is_grpc_uri(item.strip()):
                raise ValueError(f"give one address per list item, got {item!r}")
    else:
        raise TypeError(f'url must be "host:port", a comma-separated string or a list of them, got {url!r}')
    addresses = [item.strip() for item in items]
    if not addresses or not all(addresses):
        raise ValueError(f"url has an empty address: {url!r}")
    return addresses


def is_http(address: str) -> bool:
    return address.lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class Targets:
    """What a client connects to: a gRPC channel target, or an HTTP base
    URL, per entry, and the policy that spreads calls over them."""

    addresses: tuple[str, ...]
    load_balancing: LoadBalancing


def grpc_targets(addresses: Sequence[str], load_balancing: str | None = None) -> Targets:
    """The gRPC channel targets for `addresses` (see the module docstring)."""
    plain = [channel_target(address) for address in addresses]
    for target in plain:
        _check_static_uri(target)
    if len(plain) == 1:
        (target,) = plain
        spread = is_grpc_uri(target) and ("," in target or target.lower().startswith("dns:"))
        return Targets((target,), _policy(load_balancing, several=spread))
    static = static_target(plain)
    return Targets((static,) if static else tuple(plain), _policy(load_balancing, several=True))


def http_targets(addresses: Sequence[str], load_balancing: str | None = None) -> Targets:
    """The HTTP base URL of each address; calls go to them in turn."""
    for address in addresses:
        if is_grpc_uri(address):
            raise ValueError(f"{address!r} is a gRPC target; it needs protocol='grpc'")
    bases = tuple((a if "://" in a else f"http://{a}").rstrip("/") for a in addresses)
    return Targets(bases, _policy(load_balancing, several=len(bases) > 1))


def channel_target(address: str) -> str:
    """A gRPC channel's target: URIs as they are, `grpc://host:port` (or any
    scheme://) as `host:port`."""
    return address if is_grpc_uri(address) else address.split("://", 1)[-1]


def static_target(addresses: Sequence[str]) -> str | None:
    """One `ipv4:` or `ipv6:` target for IP `address:port`s of one family;
    None when any is a host name, has no port, or the families differ."""
    for pattern, scheme, version in ((_IPV4, "ipv4", 4), (_IPV6, "ipv6", 6)):
        matches = [pattern.match(address) for address in addresses]
        if all(match is not None and _is_ip(match["host"], version) for match in matches):
            return f"{scheme}:{','.join(addresses)}"
    return None


def _check_static_uri(target: str) -> None:
    """gRPC's `ipv4:`/`ipv6:` targets take IP addresses only; a host name in
    one would fail every call, so it is refused here."""
    scheme, _, rest = target.partition(":")
    version = {"ipv4": 4, "ipv6": 6}.get(scheme.lower())
    if version is None:
        return
    for address in rest.split(","):
        bracketed = re.match(r"^\[(?P<host>[^\]]+)\](:\d+)?$", address)
        if bracketed is not None:
            host = bracketed["host"]
        else:  # an IPv4 address may have a port; a bare IPv6 one cannot
            host = address.rsplit(":", 1)[0] if version == 4 else address
        if not _is_ip(host, version):
            raise ValueError(
                f"{target!r}: gRPC's {scheme}: targets take IP addresses only; give host names as a list"
            )


def _is_ip(host: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(host).version == version
    except ValueError:
        return False


def _policy(load_balancing: str | None, several: bool) -> LoadBalancing:
    if load_balancing is None:
        return "round_robin" if several else "pick_first"
    if load_balancing not in LOAD_BALANCING:
        raise ValueError(f'load_balancing must be "round_robin" or "pick_first", got {load_balancing!r}')
    return "round_robin" if load_balancing == "round_robin" else "pick_first"


class BalancedTransport:
    """Several transports, one per replica, as one. "round_robin" takes them
    in turn per call: generation calls on their own turn, so N requests over
    k replicas put N/k on each, whatever listings and config reads happen in
    between. "pick_first" stays on one until it cannot be reached, then
    moves on to the next."""

    def __init__(self, transports: Sequence[Transport], load_balancing: LoadBalancing) -> None:
        if not transports:
            raise ValueError("at least one transport is needed")
        self.transports = tuple(transports)
        self.load_balancing = load_balancing
        self._turns = {"generate": 0, "read": 0}
        self._current = 0  # pick_first: the replica in use

    def _pick(self, kind: str) -> int:
        if self.load_balancing == "pick_first":
            return self._current
        index = self._turns[kind]
        self._turns[kind] = (index + 1) % len(self.transports)
        return index

    def _unreachable(self, index: int) -> None:
        """pick_first: a replica that cannot be reached gives way to the next."""
        if self._current == index:
            self._current = (index + 1) % len(self.transports)

    async def generate(self, model: str, requests: list[GenerateRequest]) -> AsyncGenerator[Delta, None]:
        index = self._pick("generate")
        try:
            async with aclosing(self.transports[index].generate(model, requests)) as deltas:
                async for delta in deltas:
                    yield delta
        except APIConnectionError as exc:
            if not isinstance(exc, APITimeoutError):
                self._unreachable(index)
            raise

    async def _read(self, call: Callable[[Transport], Awaitable[T]]) -> T:
        index = self._pick("read")
        try:
            return await call(self.transports[index])
        except APIConnectionError as exc:
            if not isinstance(exc, APITimeoutError):
                self._unreachable(index)
            raise

    async def model_inputs(self, model: str) -> frozenset[str]:
        return await self._read(lambda transport: transport.model_inputs(model))

    async def list_models(self) -> list[tuple[str, str]]:
        return await self._read(lambda transport: transport.list_models())

    async def model_info(self, model: str) -> dict[str, Any]:
        return await self._read(lambda transport: transport.model_info(model))

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()
