"""Turn a request's raw inputs into a ParsedRequest, applying the cheap rules
first (SPEC rule 1 and the sampling JSON). Nothing here knows Triton: inputs
arrive as a mapping of input name to bytes / bool / tensor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from .contract import (
    CHAT_PARAMETERS_INPUT,
    EMBEDS_BASE64_INPUT,
    EMBEDS_BF16_INPUT,
    EMBEDS_FP16_INPUT,
    EMBEDS_FP32_INPUT,
    EMBEDS_INPUTS,
    EMBEDS_PLACEHOLDER,
    EXCLUDE_INPUT,
    MESSAGES_INPUT,
    RETURN_CUMULATIVE_LOGPROB_INPUT,
    RETURN_FINISH_REASON_INPUT,
    RETURN_LOGPROBS_INPUT,
    RETURN_MODEL_INFO_INPUT,
    RETURN_NUM_INPUT_TOKENS_INPUT,
    RETURN_NUM_OUTPUT_TOKENS_INPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_INPUT,
    Rule,
)
from .errors import RequestRejected
from .sampling import NO_REQUEST_OPTIONS, RequestOptions, parse_sampling_parameters, split_request_options

# The dtype each raw-tensor input carries.
EMBEDS_TENSOR_DTYPES = {
    EMBEDS_FP32_INPUT: torch.float32,
    EMBEDS_FP16_INPUT: torch.float16,
    EMBEDS_BF16_INPUT: torch.bfloat16,
}


class PromptKind(str, Enum):
    TEXT = "text"
    EMBEDS_TENSOR = "embeds_tensor"
    EMBEDS_BASE64 = "embeds_base64"
    CHAT = "chat"
    # No prompt: a question about the model (return_model_info).
    MODEL_INFO = "model_info"


@dataclass(frozen=True)
class ExtraOutputs:
    """The outputs Triton's vLLM backend adds on request (its return_*
    inputs), each then on every response with the backend's meaning: the
    finish reason ("None" until the last), the input length, the tokens and
    the logprobs new in this response, the cumulative logprob so far."""

    finish_reason: bool = False
    num_input_tokens: bool = False
    num_output_tokens: bool = False
    logprobs: bool = False
    cumulative_logprob: bool = False

    @property
    def any(self) -> bool:
        return (
            self.finish_reason
            or self.num_input_tokens
            or self.num_output_tokens
            or self.logprobs
            or self.cumulative_logprob
        )

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Any]) -> ExtraOutputs:
        return cls(
            finish_reason=bool(inputs.get(RETURN_FINISH_REASON_INPUT)),
            num_input_tokens=bool(inputs.get(RETURN_NUM_INPUT_TOKENS_INPUT)),
            num_output_tokens=bool(inputs.get(RETURN_NUM_OUTPUT_TOKENS_INPUT)),
            logprobs=bool(inputs.get(RETURN_LOGPROBS_INPUT)),
            cumulative_logprob=bool(inputs.get(RETURN_CUMULATIVE_LOGPROB_INPUT)),
        )


NO_EXTRA_OUTPUTS = ExtraOutputs()


@dataclass
class ParsedRequest:
    kind: PromptKind
    sampling: dict[str, Any]
    stream: bool = False
    exclude_input_in_output: bool = False
    text: str | None = None
    embeds_tensor: torch.Tensor | None = None
    embeds_base64: bytes | None = None
    # Chat: the messages JSON, still unparsed (parsing it is work for a
    # worker thread), and the chat_parameters JSON.
    messages: bytes | None = None
    chat_parameters: str | None = None
    extra_outputs: ExtraOutputs = NO_EXTRA_OUTPUTS
    options: RequestOptions = NO_REQUEST_OPTIONS

    @property
    def max_tokens(self) -> int:
        return int(self.sampling["max_tokens"])

    @property
    def n(self) -> int:
        return int(self.sampling.get("n", 1))

    @property
    def features(self) -> list[str]:
        """The generation features the request uses, for operators' metrics."""
        checks = {
            "logprobs": self.sampling.get("logprobs") is not None,
            "prompt_logprobs": self.sampling.get("prompt_logprobs") is not None,
            "extra_outputs": self.extra_outputs.any,
            "n": self.n > 1,
            "structured": "structured_outputs" in self.sampling,
            "adapter": self.options.lora_name is not None,
            "truncate": self.options.truncate_prompt_tokens is not None,
            "cache_salt": self.options.cache_salt is not None,
        }
        return [name for name, used in checks.items() if used]


def parse_request(inputs: Mapping[str, Any], embeds_enabled: bool) -> ParsedRequest:
    if inputs.get(RETURN_MODEL_INFO_INPUT):
        return _parse_model_info_request(inputs)
    embeds_given = [name for name in EMBEDS_INPUTS if inputs.get(name) is not None]
    if embeds_given and not embeds_enabled:
        raise RequestRejected(
            Rule.EMBEDS_DISABLED,
            f"this model does not accept prompt embeddings ({embeds_given[0]} given); "
            f'set "enable_prompt_embeds": true in its model.json',
        )
    if len(embeds_given) > 1:
        raise RequestRejected(
            Rule.MULTIPLE_EMBEDS,
            f"send exactly one prompt embeddings input, got {', '.join(embeds_given)}",
        )
    messages = inputs.get(MESSAGES_INPUT)
    if messages is not None:
        return _parse_chat_request(inputs, messages, embeds_given)
    if inputs.get(CHAT_PARAMETERS_INPUT) is not None:
        raise RequestRejected(
            Rule.PROMPT_CONFLICT, f"{CHAT_PARAMETERS_INPUT} applies to {MESSAGES_INPUT}, which is missing"
        )
    text = _decode_text(inputs.get(TEXT_INPUT))
    if not embeds_given and text is None:
        raise RequestRejected(
            Rule.NO_PROMPT,
            f"no prompt: send {TEXT_INPUT}, {MESSAGES_INPUT} or one of {', '.join(EMBEDS_INPUTS)}",
        )
    sampling, options = _parse_sampling(inputs)
    parsed = ParsedRequest(
        kind=PromptKind.TEXT,
        sampling=sampling,
        stream=bool(inputs.get(STREAM_INPUT) or False),
        exclude_input_in_output=bool(inputs.get(EXCLUDE_INPUT) or False),
        text=text,
        extra_outputs=ExtraOutputs.from_inputs(inputs),
        options=options,
    )
    if embeds_given:  # embeds take precedence over text (Dynamo's rule)
        _attach_embeds(parsed, embeds_given[0], inputs[embeds_given[0]])
        reject_prompt_logprobs(parsed.sampling)
    elif embeds_enabled and text is not None and EMBEDS_PLACEHOLDER in text:
        # With embeddings on, vLLM's tokenizer holds the placeholder as a
        # special token: in text it would become a token that is no text.
        raise RequestRejected(
            Rule.RESERVED_PLACEHOLDER,
            f"{TEXT_INPUT} contains {EMBEDS_PLACEHOLDER!r}, reserved by this model to mark where "
            f"embeddings go",
        )
    return parsed


def _parse_chat_request(inputs: Mapping[str, Any], messages: Any, embeds_given: list[str]) -> ParsedRequest:
    """A conversation is the whole prompt: text_input would compete with it,
    and base64 embeddings belong inside it as "data" parts. A raw tensor
    input is allowed: "rows" parts place its rows."""
    conflicting = [TEXT_INPUT] if inputs.get(TEXT_INPUT) is not None else []
    conflicting += [name for name in embeds_given if name == EMBEDS_BASE64_INPUT]
    if conflicting:
        raise RequestRejected(
            Rule.PROMPT_CONFLICT,
            f"{MESSAGES_INPUT} is the whole prompt; do not also send {', '.join(conflicting)} "
            f'(embeddings go in the messages as "prompt_embeds" parts)',
        )
    sampling, options = _parse_sampling(inputs)
    return ParsedRequest(
        kind=PromptKind.CHAT,
        sampling=sampling,
        stream=bool(inputs.get(STREAM_INPUT) or False),
        embeds_tensor=inputs[embeds_given[0]] if embeds_given else None,
        messages=messages.encode("utf-8") if isinstance(messages, str) else messages,
        chat_parameters=_decode_text(inputs.get(CHAT_PARAMETERS_INPUT)),
        extra_outputs=ExtraOutputs.from_inputs(inputs),
        options=options,
    )


def _parse_sampling(inputs: Mapping[str, Any]) -> tuple[dict[str, Any], RequestOptions]:
    sampling = parse_sampling_parameters(_decode_text(inputs.get(SAMPLING_INPUT)))
    return sampling, split_request_options(sampling)


def reject_prompt_logprobs(sampling: Mapping[str, Any]) -> None:
    """Positions given as embeddings have no token whose logprob could be
    reported: vLLM's server refuses the combination, and so does this model."""
    if sampling.get("prompt_logprobs") is not None:
        raise RequestRejected(
            Rule.BAD_SAMPLING,
            "prompt_logprobs is not compatible with prompt embeds; ask for it with text prompts",
        )


def check_adapter(options: RequestOptions, adapters: tuple[str, ...]) -> None:
    if options.lora_name is not None and options.lora_name not in adapters:
        known = ", ".join(adapters) if adapters else "none (this model has no multi_lora.json)"
        raise RequestRejected(
            Rule.UNKNOWN_ADAPTER, f"LoRA adapter {options.lora_name!r} is not served here; adapters: {known}"
        )


def _parse_model_info_request(inputs: Mapping[str, Any]) -> ParsedRequest:
    """The question stands alone: anything that would make it a generation
    request is a conflict, not silently ignored."""
    others = [
        name
        for name, value in inputs.items()
        if name != RETURN_MODEL_INFO_INPUT and value not in (None, False)
    ]
    if others:
        raise RequestRejected(
            Rule.PROMPT_CONFLICT,
            f"{RETURN_MODEL_INFO_INPUT} is sent alone; this request also has {', '.join(sorted(others))}",
        )
    return ParsedRequest(kind=PromptKind.MODEL_INFO, sampling={})


def _attach_embeds(parsed: ParsedRequest, name: str, value: Any) -> None:
    parsed.text = None
    if name == EMBEDS_BASE64_INPUT:
        parsed.kind = PromptKind.EMBEDS_BASE64
        parsed.embeds_base64 = value
    else:
        parsed.kind = PromptKind.EMBEDS_TENSOR
        parsed.embeds_tensor = value


def _decode_text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestRejected(Rule.BAD_TEXT, f"string input is not valid UTF-8: {exc}") from None
