"""`client.models`: the models Triton can serve now, as openai `Model` objects,
each followed by its LoRA adapters, as vLLM's OpenAI server lists them."""

from __future__ import annotations

from typing import Any

from openai.types import Model

from .._adapters import ServedModel
from .._concurrency import LoopThread
from .._transport import Connection
from .._types import ModelList

_OWNER = "triton"


class AsyncModels:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def list(self) -> ModelList:
        """Ready models of the server's repository index, each followed by
        the LoRA adapters it serves. An adapter's `id` is its name, the
        `model` that selects it in `create`, and its `parent` the Triton
        model serving it; `max_model_len` is set where the model says it, and
        `ready` (False while the model's engine is restarting).
        Models that are loading, failed or unloaded are left out: requests to
        them would fail. Models that do not answer the model-info question
        (not this project's) are listed without adapters."""
        served = await self._connection.served_models()
        return ModelList(data=[entry for model in served for entry in _entries(model)])


def _entries(model: ServedModel) -> list[Model]:
    extra: dict[str, Any] = {}
    for key, name in (("max_model_len", "max_model_len"), ("engine_ready", "ready")):
        if model.info is not None and model.info.get(key) is not None:
            extra[name] = model.info[key]
    # openai's Model keeps fields beyond its own (vLLM's parent, max_model_len).
    fields = {"id": model.name, "created": 0, "object": "model", "owned_by": _OWNER, **extra}
    base = Model.model_validate(fields)
    adapters = [base.model_copy(update={"id": name, "parent": model.name}) for name in model.adapters]
    return [base, *adapters]


class Models:
    def __init__(self, models: AsyncModels, loop: LoopThread, owner: object) -> None:
        self._async = models
        self._loop = loop
        self._owner = owner  # keeps the client, and so its loop, alive

    def list(self) -> ModelList:
        return self._loop.call(self._async.list())

    list.__doc__ = AsyncModels.list.__doc__
