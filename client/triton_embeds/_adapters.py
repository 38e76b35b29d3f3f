"""LoRA adapters as models of their own, as vLLM's OpenAI server lists them.

A model of this project answers a request whose only input is
`return_model_info` with its `model_info` JSON, which names the adapters it
serves. `client.models.list()` shows each ready Triton model and then its
adapters; `model="<adapter>"` in `create` sends the request to the adapter's
base model with the sampling key `lora_name` set.

Which base serves an adapter is read from the server and kept per client:
names the client has not seen are looked up on a miss (Triton answers "not
found" for a model it does not have), so a call to a plain Triton model never
pays for the look-up. A Triton model and an adapter of the same name: the
model wins; `extra_body={"lora_name": ...}` with the base as `model` always
names the adapter explicitly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ._errors import APIError, InternalServerError
from .protocol import RETURN_MODEL_INFO_INPUT

# The sampling key that selects an adapter.
LORA_KEY = "lora_name"


@dataclass(frozen=True)
class ServedModel:
    """A ready Triton model and its `model_info` (None: the model does not
    answer the question, e.g. one that is not this project's)."""

    name: str
    info: dict[str, Any] | None = None

    @property
    def adapters(self) -> list[str]:
        names = (self.info or {}).get("adapters") or []
        return [str(name) for name in names]


def parse_model_info(raw: str | bytes) -> dict[str, Any]:
    """The `model_info` output: a JSON object."""
    try:
        info = json.loads(raw)
    except ValueError:
        raise InternalServerError("the server sent a model_info output that is not JSON") from None
    if not isinstance(info, dict):
        raise InternalServerError("the server sent a model_info output that is not an object")
    return info


@dataclass
class AdapterIndex:
    """Adapter name to the Triton model that serves it, as last read."""

    _bases: dict[str, str] = field(default_factory=dict)

    def base_of(self, name: str) -> str | None:
        return self._bases.get(name)

    def update(self, models: Iterable[ServedModel]) -> None:
        """Replace the index with what the server serves now."""
        models = list(models)
        names = {model.name for model in models}
        self._bases = {
            adapter: model.name for model in models for adapter in model.adapters if adapter not in names
        }


async def read_served_models(
    ready: list[str],
    model_inputs: Callable[[str], Awaitable[frozenset[str]]],
    model_info: Callable[[str], Awaitable[dict[str, Any]]],
) -> list[ServedModel]:
    """Each ready model with its model info, asked of all at once. Models
    without the `return_model_info` input are not asked, and one that fails
    to answer is listed without adapters: a listing must not fail because
    one model is not this project's or is being unloaded."""

    async def served(name: str) -> ServedModel:
        try:
            if RETURN_MODEL_INFO_INPUT not in await model_inputs(name):
                return ServedModel(name)
            return ServedModel(name, await model_info(name))
        except APIError:
            return ServedModel(name)

    return list(await asyncio.gather(*(served(name) for name in ready)))
