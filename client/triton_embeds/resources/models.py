"""`client.models`: the models Triton can serve now, as openai `Model` objects."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openai.types import Model

from .._types import ModelList

if TYPE_CHECKING:
    from .._client import AsyncClient, Client


class AsyncModels:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> ModelList:
        """Ready models of the server's repository index. Models that are
        loading, failed or unloaded are left out: requests to them would fail."""
        entries = await self._client._transport.list_models()
        return ModelList(
            data=[
                Model(id=name, created=0, object="model", owned_by="triton")
                for name, state in entries
                if state == "READY"
            ]
        )


class Models:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> ModelList:
        return self._client._loop.call(self._client._async.models.list())

    list.__doc__ = AsyncModels.list.__doc__
