"""openai's `response_format` as the server's `structured_outputs`, the way
vLLM's OpenAI server maps it.

Constraints given directly (`extra_body={"structured_outputs": {...}}` or
vLLM's older `guided_json`, `guided_regex`, `guided_choice`,
`guided_grammar`) pass through unchanged; the server checks that a request
has exactly one constraint and the engine compiles it, so a conflict or an
invalid schema comes back as a BadRequestError naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

STRUCTURED_KEY = "structured_outputs"
_TYPES = ("text", "json_object", "json_schema")
# What constrains the output, as against the options that only tune it
# (disable_any_whitespace, whitespace_pattern, ...).
_KINDS = ("json", "regex", "choice", "grammar", "json_object")
_GUIDED_KEYS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


def constraint_of(response_format: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The structured_outputs entry a `response_format` stands for; None for
    free text. `strict` and the schema's `name` change nothing: the engine
    always holds the output to the schema."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind not in _TYPES:
        raise ValueError(f"response_format type must be one of {', '.join(_TYPES)}, not {kind!r}")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"json_object": True}
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if schema is None:
        raise ValueError('response_format {"type": "json_schema"} needs json_schema.schema')
    return {"json": schema}


def with_response_format(extra: dict[str, Any], response_format: Mapping[str, Any] | None) -> dict[str, Any]:
    """`extra` (the rest of extra_body) with the response format's
    constraint added to its structured_outputs, as vLLM adds it, beside any
    options given there. A second constraint is refused here: vLLM would
    silently replace a schema of the same kind."""
    constraint = constraint_of(response_format)
    if constraint is None:
        return extra
    given = extra.get(STRUCTURED_KEY)
    if isinstance(given, str):  # the server takes it as JSON text too
        given = json.loads(given)
    if given is not None and not isinstance(given, Mapping):
        raise ValueError(f"extra_body {STRUCTURED_KEY} must be an object, not {type(given).__name__}")
    given = dict(given or {})
    others = [f"{STRUCTURED_KEY}.{kind}" for kind in _KINDS if given.get(kind) is not None]
    others += [key for key in _GUIDED_KEYS if key in extra]
    if others:
        raise ValueError(f"response_format and extra_body {', '.join(others)} both constrain the output")
    return {**extra, STRUCTURED_KEY: {**given, **constraint}}
