"""What the resources need from a connection to Triton, and nothing more.

`Transport` is implemented by the gRPC and HTTP transports; `Connection` is
one client's transport with its settings, the only thing a resource holds.
Resources never reach into the client object itself.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ._types import Delta, GenerateRequest

EmbedsTransport = Literal["binary", "base64"]


class Transport(Protocol):
    """One Triton endpoint, over one wire protocol."""

    def generate(self, model: str, requests: list[GenerateRequest]) -> AsyncGenerator[Delta, None]:
        """Deltas of every request, interleaved, until each has finished;
        closing the iterator cancels whatever is still running."""
        ...

    async def model_inputs(self, model: str) -> frozenset[str]:
        """The input names of the model's config."""
        ...

    async def list_models(self) -> list[tuple[str, str]]:
        """(name, state) of every model in the server's repository index."""
        ...

    async def close(self) -> None: ...


@dataclass
class Connection:
    """A transport and the settings every request of one client shares."""

    transport: Transport
    embeds_transport: EmbedsTransport
    timeout: float | None
    _inputs: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False)

    async def model_inputs(self, model: str) -> frozenset[str]:
        """The model's input names, read once: they pick the embeddings dtype."""
        if model not in self._inputs:
            self._inputs[model] = await self.transport.model_inputs(model)
        return self._inputs[model]
