"""`client.models`: the models Triton can serve now, as openai `Model` objects."""

from __future__ import annotations

from openai.types import Model

from .._concurrency import LoopThread
from .._transport import Connection
from .._types import ModelList


class AsyncModels:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def list(self) -> ModelList:
        """Ready models of the server's repository index. Models that are
        loading, failed or unloaded are left out: requests to them would fail."""
        entries = await self._connection.transport.list_models()
        return ModelList(
            data=[
                Model(id=name, created=0, object="model", owned_by="triton")
                for name, state in entries
                if state == "READY"
            ]
        )


class Models:
    def __init__(self, models: AsyncModels, loop: LoopThread, owner: object) -> None:
        self._async = models
        self._loop = loop
        self._owner = owner  # keeps the client, and so its loop, alive

    def list(self) -> ModelList:
        return self._loop.call(self._async.list())

    list.__doc__ = AsyncModels.list.__doc__
