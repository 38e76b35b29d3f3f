"""The `sampling_parameters` JSON: parsed strictly, so a typo is an error and
never a silently ignored setting.

Values may arrive as JSON numbers/booleans or, as Triton's vLLM backend
clients send them, as strings ("0.7", "true"); both are accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("expected a string")


def _as_object(value: Any) -> dict[str, Any]:
    """A JSON object, or a string holding one (Triton's vLLM backend's
    clients send nested values as JSON strings)."""
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict):
        return value
    raise ValueError("expected a JSON object")


def _as_json_value(value: Any) -> Any:
    """Any JSON value; a string is kept as sent (a JSON schema may come
    serialized)."""
    return value


# Keys a client may set, with the converter each value goes through.
# output_kind is the model's to choose (it follows the stream input) and
# vLLM's v1 engine has no best_of.
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
    # Per prompt position, as for logprobs; text prompts only (vLLM's rule).
    "prompt_logprobs": _as_int_or_none,
    # vLLM's StructuredOutputsParams: one of json, regex, choice, grammar,
    # json_object, plus its whitespace options.
    "structured_outputs": _as_object,
    # The same constraints under vLLM's older request keys.
    "guided_json": _as_json_value,
    "guided_regex": _as_str,
    "guided_choice": _as_str_list,
    "guided_grammar": _as_str,
    # About the request rather than the sampler (RequestOptions).
    "lora_name": _as_str,
    "truncate_prompt_tokens": _as_int,
    "cache_salt": _as_str,
}
ALLOWED_KEYS = tuple(sorted(_CONVERTERS))
# The older guided_* keys and the structured_outputs field each stands for.
_GUIDED_KEYS = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}
STRUCTURED_KINDS = ("json", "regex", "choice", "grammar", "json_object")
_STRUCTURED_OPTIONS = ("disable_any_whitespace", "disable_additional_properties", "whitespace_pattern")
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
# Sequences per request: each is a full generation, so n multiplies the cost.
MAX_N = 16
# A schema, regex or grammar is compiled by the engine: bounded so one request
# cannot make it compile something huge. (The JSON above bounds it too.)
MAX_STRUCTURED_BYTES = 32 * 1024
MAX_CHOICES = 256
MAX_CACHE_SALT_CHARS = 256


@dataclass(frozen=True)
class RequestOptions:
    """The keys of sampling_parameters that configure the request rather
    than the sampler: taken out before the rest becomes SamplingParams."""

    lora_name: str | None = None
    # Keep only the prompt's last N positions (vLLM's left truncation).
    truncate_prompt_tokens: int | None = None
    # Prefix-cache sharing happens only between requests with the same salt.
    cache_salt: str | None = None


NO_REQUEST_OPTIONS = RequestOptions()


def split_request_options(params: dict[str, Any]) -> RequestOptions:
    """Remove the request options from validated parameters and return them."""
    return RequestOptions(
        lora_name=params.pop("lora_name", None),
        truncate_prompt_tokens=params.pop("truncate_prompt_tokens", None),
        cache_salt=params.pop("cache_salt", None),
    )


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
    _merge_guided_keys(params)
    if "structured_outputs" in params:
        params["structured_outputs"] = _check_structured(params["structured_outputs"])
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
        ("n", lambda v: 1 <= v <= MAX_N, f"must be between 1 and {MAX_N}"),
        (
            "logprobs",
            lambda v: v is None or 0 <= v <= MAX_LOGPROBS,
            f"must be between 0 and {MAX_LOGPROBS} (top alternatives per token)",
        ),
        (
            "prompt_logprobs",
            lambda v: v is None or 0 <= v <= MAX_LOGPROBS,
            f"must be between 0 and {MAX_LOGPROBS} (top alternatives per prompt token)",
        ),
        ("truncate_prompt_tokens", lambda v: v >= 1, "must be at least 1 (the prompt positions kept)"),
        (
            "cache_salt",
            lambda v: 0 < len(v) <= MAX_CACHE_SALT_CHARS,
            f"must be 1 to {MAX_CACHE_SALT_CHARS} characters",
        ),
        ("lora_name", lambda v: 0 < len(v) <= 256, "must be an adapter's name"),
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


def _merge_guided_keys(params: dict[str, Any]) -> None:
    """vLLM's older guided_* keys become the structured_outputs they stand
    for; one request may use one form, with one constraint."""
    guided = {field: params.pop(key) for key, field in _GUIDED_KEYS.items() if key in params}
    if not guided:
        return
    if "structured_outputs" in params or len(guided) > 1:
        used = sorted(guided) + (["structured_outputs"] if "structured_outputs" in params else [])
        raise RequestRejected(
            Rule.BAD_SAMPLING, f"use one structured output constraint per request, got {', '.join(used)}"
        )
    params["structured_outputs"] = guided


def _check_structured(spec: dict[str, Any]) -> dict[str, Any]:
    """Exactly one constraint, known option keys, and a size bound; whether
    the schema, regex or grammar is valid is the engine's front end's check
    (its error comes back as INVALID_ARG too)."""
    unknown = sorted(set(spec) - set(STRUCTURED_KINDS) - set(_STRUCTURED_OPTIONS))
    if unknown:
        raise RequestRejected(
            Rule.BAD_SAMPLING,
            f"structured_outputs has unknown keys {', '.join(map(repr, unknown))}; accepted: "
            f"{', '.join(STRUCTURED_KINDS + _STRUCTURED_OPTIONS)}",
        )
    kinds = [kind for kind in STRUCTURED_KINDS if spec.get(kind) is not None]
    if len(kinds) != 1:
        raise RequestRejected(
            Rule.BAD_SAMPLING,
            f"structured_outputs needs exactly one of {', '.join(STRUCTURED_KINDS)}, got {len(kinds)}",
        )
    kind = kinds[0]
    value = spec[kind]
    size = len(value) if isinstance(value, str) else len(json.dumps(value))
    if size > MAX_STRUCTURED_BYTES:
        raise RequestRejected(
            Rule.BAD_SAMPLING,
            f"structured_outputs.{kind} is {size} characters long, above the limit of {MAX_STRUCTURED_BYTES}",
        )
    _check_structured_type(kind, value)
    return spec


def _check_structured_type(kind: str, value: Any) -> None:
    valid = {
        "json": isinstance(value, dict) or (isinstance(value, str) and bool(value.strip())),
        "regex": isinstance(value, str) and bool(value),
        "grammar": isinstance(value, str) and bool(value.strip()),
        "json_object": value is True,
        "choice": isinstance(value, list)
        and 0 < len(value) <= MAX_CHOICES
        and all(isinstance(c, str) and c for c in value),
    }[kind]
    if not valid:
        raise RequestRejected(
            Rule.BAD_SAMPLING, f"structured_outputs.{kind} must be {_STRUCTURED_SHAPES[kind]}"
        )


_STRUCTURED_SHAPES = {
    "json": "a JSON schema (an object, or a string holding one)",
    "regex": "a non-empty regular expression",
    "grammar": "a non-empty grammar (EBNF or Lark)",
    "json_object": "true",
    "choice": f"a list of 1 to {MAX_CHOICES} non-empty strings",
}
