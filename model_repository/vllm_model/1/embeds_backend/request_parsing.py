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
    EMBEDS_BASE64_INPUT,
    EMBEDS_BF16_INPUT,
    EMBEDS_FP16_INPUT,
    EMBEDS_FP32_INPUT,
    EMBEDS_INPUTS,
    EXCLUDE_INPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_INPUT,
    Rule,
)
from .errors import RequestRejected
from .sampling import parse_sampling_parameters

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


@dataclass
class ParsedRequest:
    kind: PromptKind
    sampling: dict[str, Any]
    stream: bool = False
    exclude_input_in_output: bool = False
    text: str | None = None
    embeds_tensor: torch.Tensor | None = None
    embeds_base64: bytes | None = None

    @property
    def max_tokens(self) -> int:
        return int(self.sampling["max_tokens"])


def parse_request(inputs: Mapping[str, Any], embeds_enabled: bool) -> ParsedRequest:
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
    text = _decode_text(inputs.get(TEXT_INPUT))
    if not embeds_given and text is None:
        raise RequestRejected(
            Rule.NO_PROMPT,
            f"no prompt: send {TEXT_INPUT} or one of {', '.join(EMBEDS_INPUTS)}",
        )
    parsed = ParsedRequest(
        kind=PromptKind.TEXT,
        sampling=parse_sampling_parameters(_decode_text(inputs.get(SAMPLING_INPUT))),
        stream=bool(inputs.get(STREAM_INPUT) or False),
        exclude_input_in_output=bool(inputs.get(EXCLUDE_INPUT) or False),
        text=text,
    )
    if embeds_given:  # embeds take precedence over text (Dynamo's rule)
        _attach_embeds(parsed, embeds_given[0], inputs[embeds_given[0]])
    return parsed


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
