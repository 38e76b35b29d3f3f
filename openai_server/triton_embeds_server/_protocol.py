"""What completions and chat requests share: vLLM's sampling fields beyond
OpenAI's, and how a decoded request becomes the client's arguments.

Requests are msgspec Structs that forbid unknown fields, so a typo is a 400
naming the field, and the body is decoded and type-checked in one pass (the
bodies carry megabytes of base64)."""

from __future__ import annotations

from typing import Any

import msgspec

JsonObject = dict[str, Any]


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False
    # OpenAI's SDK may send it; chunks are never padded here.
    include_obfuscation: bool | None = None


class SamplingFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """OpenAI's sampling fields and vLLM's extra ones, both endpoints alike."""

    model: str
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    response_format: JsonObject | None = None
    # vLLM's keys, passed to the model's sampling parameters as they are.
    ignore_eos: bool | None = None
    min_tokens: int | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    structured_outputs: JsonObject | None = None
    guided_json: Any = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    truncate_prompt_tokens: int | None = None
    cache_salt: str | None = None
    prompt_logprobs: int | None = None


# Fields the model's sampling parameters take under the same name.
PASSED_THROUGH = (
    "min_p",
    "stop_token_ids",
    "repetition_penalty",
    "ignore_eos",
    "min_tokens",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "include_stop_str_in_output",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "truncate_prompt_tokens",
    "cache_salt",
    "prompt_logprobs",
)


def common_arguments(request: SamplingFields) -> dict[str, Any]:
    """The client's `create` arguments both endpoints share; vLLM's keys go
    in `extra_body`, where the model checks them by name."""
    extra = {name: getattr(request, name) for name in PASSED_THROUGH if getattr(request, name) is not None}
    return {
        "model": request.model,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "seed": request.seed,
        "stop": request.stop,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "n": request.n,
        "response_format": request.response_format,
        "stream": request.stream,
        "stream_options": {"include_usage": request.stream_options.include_usage}
        if request.stream_options
        else None,
        "extra_body": extra,
    }
