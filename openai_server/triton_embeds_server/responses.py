"""JSON responses: openai's objects as they are, anything else with msgspec."""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel
from starlette.responses import Response


def json_response(value: BaseModel | Any, status: int = 200) -> Response:
    body = (
        value.model_dump_json(warnings=False).encode()
        if isinstance(value, BaseModel)
        else msgspec.json.encode(value)
    )
    return Response(body, status_code=status, media_type="application/json")
