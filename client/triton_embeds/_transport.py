"""What the resources need from a connection to Triton, and nothing more.

`Transport` is implemented by the gRPC and HTTP transports; `Connection` is
one client's transport with its settings, the only thing a resource holds.
Resources never reach into the client object itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, Protocol

from ._adapters import LORA_KEY, AdapterIndex, ServedModel, read_served_models
from ._errors import APIError, APITimeoutError, NotFoundError
from ._retries import DEFAULT_MAX_RETRIES, retry_call, retry_stream
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

    async def model_info(self, model: str) -> dict[str, Any]:
        """The model's answer to a request with `return_model_info` alone."""
        ...

    async def close(self) -> None: ...


@dataclass
class Connection:
    """A transport, the settings every request of one client shares, and
    what the client has learnt of the server: model inputs and adapters.
    Generation requests, config reads and listings are retried up to
    `max_retries` times when the server refused them before any output
    (`_retries`); the model-info questions of a listing are not: a model
    that cannot answer is listed without adapters rather than delaying it."""

    transport: Transport
    embeds_transport: EmbedsTransport
    timeout: float | None
    max_retries: int = DEFAULT_MAX_RETRIES
    adapters: AdapterIndex = field(default_factory=AdapterIndex, init=False, repr=False)
    _inputs: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False)

    async def model_inputs(self, model: str) -> frozenset[str]:
        """The input names of `model`, or of the base model of an adapter of
        that name: they pick the embeddings dtype."""
        base = self.adapters.base_of(model)
        if base is not None:
            return await self._config_inputs(base)
        try:
            return await self._config_inputs(model)
        except NotFoundError:
            base = await self._find_base(model)
            if base is None:
                raise
            return await self._config_inputs(base)

    async def _config_inputs(self, name: str) -> frozenset[str]:
        """A Triton model's input names, read once."""
        if name not in self._inputs:
            read = partial(self.transport.model_inputs, name)
            self._inputs[name] = await retry_call(read, self.max_retries, self.timeout)
        return self._inputs[name]

    async def served_models(self) -> list[ServedModel]:
        """The ready models with their model info; refreshes the adapter index."""
        index = await retry_call(self.transport.list_models, self.max_retries, self.timeout)
        ready = [name for name, state in index if state == "READY"]
        models = await read_served_models(ready, self._config_inputs, self._model_info)
        self.adapters.update(models)
        return models

    async def _model_info(self, name: str) -> dict[str, Any]:
        """Bounded by the client's timeout: a listing waits on every model."""
        try:
            return await asyncio.wait_for(self.transport.model_info(name), self.timeout)
        except asyncio.TimeoutError:
            raise APITimeoutError(f"model {name!r} did not answer the model-info request in time") from None

    async def _find_base(self, name: str) -> str | None:
        """The base model of adapter `name`, read afresh; None when no ready
        model serves it (or the server cannot be asked now)."""
        try:
            await self.served_models()
        except APIError:
            return None
        return self.adapters.base_of(name)

    def generate(
        self, model: str, requests: list[GenerateRequest], timeout: float | None = None
    ) -> AsyncGenerator[Delta, None]:
        """The transport's deltas of `requests` to `model`, sent again while
        they fail retryably before their first delta; `timeout` (the
        request's own bound, enforced by the caller) ends the retrying."""
        return retry_stream(lambda: self._generate_once(model, requests), self.max_retries, timeout)

    async def _generate_once(
        self, model: str, requests: list[GenerateRequest]
    ) -> AsyncGenerator[Delta, None]:
        """The transport's deltas of `requests` to `model`: a Triton model, or
        an adapter, whose requests go to its base model with `lora_name`.
        An unknown name is looked up once Triton says it has no such model:
        a request to a model it does not have never ran, so it is safe to
        send again. A request that names its adapter itself goes as it is."""
        explicit = any(LORA_KEY in request.sampling for request in requests)
        base = None if explicit else self.adapters.base_of(model)
        if base is None:
            started = False
            try:
                async with aclosing(self.transport.generate(model, requests)) as deltas:
                    async for delta in deltas:
                        started = True
                        yield delta
                return
            except NotFoundError:
                if started or explicit:
                    raise
                base = await self._find_base(model)
                if base is None:
                    raise
        adapted = [replace(request, sampling={**request.sampling, LORA_KEY: model}) for request in requests]
        async with aclosing(self.transport.generate(base, adapted)) as deltas:
            async for delta in deltas:
                yield delta
