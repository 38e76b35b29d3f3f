"""/v1/models: every ready model of the Triton servers behind, and its LoRA
adapters (with `parent`), as vLLM's server lists them."""

from __future__ import annotations

from starlette.responses import Response

from ..errors import HTTPError
from ..responses import json_response
from ..upstream import Upstreams


async def list_models(upstreams: Upstreams) -> Response:
    return json_response({"object": "list", "data": await upstreams.models()})


async def retrieve_model(upstreams: Upstreams, model_id: str) -> Response:
    for entry in await upstreams.models():
        if entry["id"] == model_id:
            return json_response(entry)
    raise HTTPError(404, f"The model `{model_id}` does not exist.", "model_not_found", "model")
