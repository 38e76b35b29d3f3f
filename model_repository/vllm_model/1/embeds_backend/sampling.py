"""The `sampling_parameters` JSON: parsed strictly, so a typo is an error and
never a silently ignored setting.

Values may arrive as JSON numbers/booleans or, as Triton's vLLM backend
clients send them, as strings ("0.7", "true"); both are accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .contract import Rule
from .errors import RequestRejected


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("expected true or false")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, str):
        value = value.strip()
    result = int(value) if not isinstance(value, float) else _float_to_int(value)
    return result


def _float_to_int(value: float) -> int:
    if not value.is_integer():
        raise ValueError("expected an integer")
    return int(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return result


def _as_int_or_none(value: Any) -> int | None:
    return None if value is None else _as_int(value)


def _as_str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError("expected a string or a list of strings")


def _as_int_list(value: Any) -> list[int]:
    if isinstance(value, list):
        return [_as_int(v) for v in value]
    raise ValueError("expected a list of integers")


# Keys a client may set, with the converter each value goes through. The
# model returns one sequence per request, so `n` is accepted at 1 (clients of
# Triton's vLLM backend and its OpenAI frontend send it) and keys that would
# change the output's shape (best_of, output_kind) are not here.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "max_tokens": _as_int,
    "min_tokens": _as_int,
    "temperature": _as_float,
    "top_p": _as_float,
    "top_k": _as_int,
    "min_p": _as_float,
    "seed": _as_int_or_none,
    "stop": _as_str_list,
    "stop_token_ids": _as_int_list,
    "ignore_eos": _as_bool,
    "presence_penalty": _as_float,
    "frequency_penalty": _as_float,
    "repetition_penalty": _as_float,
    "include_stop_str_in_output": _as_bool,
    "skip_special_tokens": _as_bool,
    "spaces_between_special_tokens": _as_bool,
    "n": _as_int,
    # Top alternatives per generated token (the chosen token always comes
    # with its own); returned on the logprobs output (return_logprobs).
    "logprobs": _as_int_or_none,
}
ALLOWED_KEYS = tuple(sorted(_CONVERTERS))
DEFAULT_MAX_TOKENS = 16
# Bounds on what a client can make the engine carry per request: vLLM checks
# every stop string against each new token, so an unbounded list is a cheap
# way to slow every other request down.
MAX_SAMPLING_JSON_BYTES = 64 * 1024
MAX_STOP_STRINGS = 64
MAX_STOP_STRING_CHARS = 1024
MAX_STOP_TOKEN_IDS = 1024
# vLLM's own default max_logprobs; the engine enforces model.json's value too.
MAX_LOGPROBS = 20


def parse_sampling_parameters(text: str | None) -> dict[str, Any]:
    """Return validated keyword arguments for vllm.SamplingParams."""
    if text is None or not text.strip():
        return {"max_tokens": DEFAULT_MAX_TOKENS}
    if len(text) > MAX_SAMPLING_JSON_BYTES:
        raise RequestRejected(
            Rule.BAD_SAMPLING,
            f"sampling_parameters is {len(text)} characters long, above the limit of "
            f"{MAX_SAMPLING_JSON_BYTES}",
        )
    try:
        raw = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4300 digits
        raise RequestRejected(Rule.BAD_SAMPLING, f"sampling_parameters is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestRejected(Rule.BAD_SAMPLING, "sampling_parameters is nested too deeply") from None
    if not isinstance(raw, dict):
        raise RequestRejected(
            Rule.BAD_SAMPLING, f"sampling_parameters must be a JSON object, got {type(raw).__name__}"
        )
    params = {key: _convert(key, value) for key, value in raw.items()}
    params.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    _check_ranges(params)
    return params


def _convert(key: str, value: Any) -> Any:
    converter = _CONVERTERS.get(key)
    if converter is None:
        raise RequestRejected(
            Rule.BAD_SAMPLING,
            f"unknown sampling parameter {key!r}; accepted: {', '.join(ALLOWED_KEYS)}",
        )
    try:
        return converter(value)
    except (TypeError, ValueError) as exc:
        raise RequestRejected(
            Rule.BAD_SAMPLING, f"sampling parameter {key}={value!r} is invalid: {exc}"
        ) from None


def _check_ranges(params: dict[str, Any]) -> None:
    """Ranges vLLM itself would reject later, checked here so the engine
    never sees them and the message names the value."""
    rules: list[tuple[str, Callable[[Any], bool], str]] = [
        ("max_tokens", lambda v: v >= 1, "must be at least 1"),
        ("min_tokens", lambda v: v >= 0, "must be at least 0"),
        ("temperature", lambda v: 0.0 <= v <= 100.0, "must be in [0, 100]"),
        ("top_p", lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"),
        ("top_k", lambda v: v == -1 or v >= 0, "must be -1 (off), 0 (off) or positive"),
        ("min_p", lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]"),
        ("presence_penalty", lambda v: -2.0 <= v <= 2.0, "must be in [-2, 2]"),
        ("frequency_penalty", lambda v: -2.0 <= v <= 2.0, "must be in [-2, 2]"),
        ("repetition_penalty", lambda v: 0.0 < v <= 100.0, "must be in (0, 100]"),
        ("seed", lambda v: v is None or -(2**63) <= v < 2**63, "must fit in 64 bits"),
        ("n", lambda v: v == 1, "is not supported: this model returns one sequence per request (n=1)"),
        (
            "logprobs",
            lambda v: v is None or 0 <= v <= MAX_LOGPROBS,
            f"must be between 0 and {MAX_LOGPROBS} (top alternatives per token)",
        ),
    ]
    for key, ok, requirement in rules:
        if key in params and not ok(params[key]):
            raise RequestRejected(
                Rule.BAD_SAMPLING, f"sampling parameter {key}={params[key]!r} {requirement}"
            )
    _check_lists(params)
    if params.get("min_tokens", 0) > params["max_tokens"]:
        raise RequestRejected(
            Rule.BAD_SAMPLING,
            f"sampling parameter min_tokens={params['min_tokens']} exceeds max_tokens={params['max_tokens']}",
        )


def _check_lists(params: dict[str, Any]) -> None:
    stop = params.get("stop", [])
    if len(stop) > MAX_STOP_STRINGS:
        raise RequestRejected(
            Rule.BAD_SAMPLING, f"sampling parameter stop has {len(stop)} strings; at most {MAX_STOP_STRINGS}"
        )
    longest = max((len(s) for s in stop), default=0)
    if longest > MAX_STOP_STRING_CHARS:
        raise RequestRejected(
            Rule.BAD_SAMPLING,
            f"sampling parameter stop has a string of {longest} characters; at most {MAX_STOP_STRING_CHARS}",
        )
    ids = params.get("stop_token_ids", [])
    if len(ids) > MAX_STOP_TOKEN_IDS:
        raise RequestRejected(
            Rule.BAD_SAMPLING,
            f"sampling parameter stop_token_ids has {len(ids)} entries; at most {MAX_STOP_TOKEN_IDS}",
        )
