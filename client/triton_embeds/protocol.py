"""The model's wire contract as a client sees it: input and output names, the
raw form of Triton's BYTES and BOOL tensors, and the `[kind:code] ` marker
that starts every error message the model sends.

The server's own copy is `embeds_backend/contract.py` beside `model.py` (the
model directory must stand alone, so it cannot import this package); a unit
test holds the two to each other. Tools and tests take names from here.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Final

# -- inputs ---------------------------------------------------------------------
TEXT_INPUT: Final = "text_input"
EMBEDS_FP32_INPUT: Final = "prompt_embeds"
EMBEDS_FP16_INPUT: Final = "prompt_embeds_fp16"
EMBEDS_BF16_INPUT: Final = "prompt_embeds_bf16"
EMBEDS_BASE64_INPUT: Final = "prompt_embeds_base64"
STREAM_INPUT: Final = "stream"
SAMPLING_INPUT: Final = "sampling_parameters"
EXCLUDE_INPUT: Final = "exclude_input_in_output"
MESSAGES_INPUT: Final = "messages"
CHAT_PARAMETERS_INPUT: Final = "chat_parameters"
RETURN_FINISH_REASON_INPUT: Final = "return_finish_reason"
RETURN_CUMULATIVE_LOGPROB_INPUT: Final = "return_cumulative_logprob"
RETURN_LOGPROBS_INPUT: Final = "return_logprobs"
RETURN_NUM_INPUT_TOKENS_INPUT: Final = "return_num_input_tokens"
RETURN_NUM_OUTPUT_TOKENS_INPUT: Final = "return_num_output_tokens"
RETURN_MODEL_INFO_INPUT: Final = "return_model_info"

# Raw-tensor embeddings inputs and the Triton datatype each carries.
EMBEDS_TENSOR_DATATYPES: Final = {
    EMBEDS_FP32_INPUT: "FP32",
    EMBEDS_FP16_INPUT: "FP16",
    EMBEDS_BF16_INPUT: "BF16",
}
EMBEDS_INPUTS: Final = (*EMBEDS_TENSOR_DATATYPES, EMBEDS_BASE64_INPUT)

# -- chat messages (the JSON of MESSAGES_INPUT) -------------------------------------
CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool")
TEXT_PART: Final = "text"
EMBEDS_PART: Final = "prompt_embeds"
EMBEDS_PART_DATA: Final = "data"  # base64 of torch.save bytes, as vLLM takes it
EMBEDS_PART_ROWS: Final = "rows"  # the next N rows of the raw embeddings input
EMBEDS_PLACEHOLDER: Final = "<prompt_embeds>"  # reserved: text may not contain it

# -- outputs --------------------------------------------------------------------
TEXT_OUTPUT: Final = "text_output"
FINISH_REASON_OUTPUT: Final = "finish_reason"
INPUT_TOKENS_OUTPUT: Final = "num_input_tokens"
OUTPUT_TOKENS_OUTPUT: Final = "num_output_tokens"
LOGPROBS_OUTPUT: Final = "logprobs"
CUMULATIVE_LOGPROB_OUTPUT: Final = "cumulative_logprob"
CHOICE_INDEX_OUTPUT: Final = "choice_index"
PROMPT_LOGPROBS_OUTPUT: Final = "prompt_logprobs"
MODEL_INFO_OUTPUT: Final = "model_info"
# A streamed response before a request's last carries only the text.
FINAL_OUTPUTS: Final = (TEXT_OUTPUT, FINISH_REASON_OUTPUT, INPUT_TOKENS_OUTPUT, OUTPUT_TOKENS_OUTPUT)


# -- raw tensor contents (gRPC raw_input_contents) --------------------------------
def bytes_element(value: str | bytes) -> bytes:
    """A one-element BYTES tensor's raw form: a 4-byte little-endian length, then the bytes."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack("<I", len(data)) + data


def bool_element(value: bool) -> bytes:
    """A one-element BOOL tensor's raw form."""
    return b"\x01" if value else b"\x00"


# -- errors -----------------------------------------------------------------------
class ErrorKind:
    """What the model's error messages say about the request, in their
    `[kind:code] ` marker. Over gRPC streams and inside HTTP event streams
    Triton carries a model's error as text alone, so the marker, not the
    prose after it, is what a client classifies by."""

    REJECTED: Final = "rejected"  # INVALID_ARG (HTTP 400): the request is wrong
    UNAVAILABLE: Final = "unavailable"  # UNAVAILABLE (HTTP 503): retry later
    INTERNAL: Final = "internal"  # INTERNAL (HTTP 500): a valid request failed


ERROR_KINDS: Final = frozenset({ErrorKind.REJECTED, ErrorKind.UNAVAILABLE, ErrorKind.INTERNAL})


class Rule:
    """Codes of rejections: the rule a request broke (`error.code`)."""

    EMBEDS_DISABLED: Final = "embeds_disabled"
    MULTIPLE_EMBEDS: Final = "multiple_embeds"
    NO_PROMPT: Final = "no_prompt"
    BAD_TEXT: Final = "bad_text"
    BAD_SAMPLING: Final = "bad_sampling"
    EMBEDS_TOO_SMALL: Final = "embeds_too_small"
    EMBEDS_TOO_LARGE: Final = "embeds_too_large"
    BAD_BASE64: Final = "bad_base64"
    NOT_A_TENSOR: Final = "not_a_tensor"
    NOT_DENSE: Final = "not_dense"
    BAD_SHAPE: Final = "bad_shape"
    HIDDEN_SIZE: Final = "hidden_size"
    BAD_DTYPE: Final = "bad_dtype"
    NOT_FINITE: Final = "not_finite"
    TOO_LONG: Final = "too_long"
    PROMPT_CONFLICT: Final = "prompt_conflict"
    CHAT_LIMIT: Final = "chat_limit"
    BAD_MESSAGES: Final = "bad_messages"
    RESERVED_PLACEHOLDER: Final = "reserved_placeholder"
    BAD_CHAT_PARAMETERS: Final = "bad_chat_parameters"
    CHAT_ROWS: Final = "chat_rows"
    NO_CHAT_TEMPLATE: Final = "no_chat_template"
    CHAT_TEMPLATE_FAILED: Final = "chat_template_failed"
    UNKNOWN_ADAPTER: Final = "unknown_adapter"
    ENGINE_VALIDATION: Final = "engine_validation"


class Unavailable:
    """Codes of requests the model could not serve now."""

    CONCURRENCY_LIMIT: Final = "concurrency_limit"
    ENGINE_RESTARTING: Final = "engine_restarting"
    ENGINE_DOWN: Final = "engine_down"
    # The replica is stopping: a new request is refused (retry elsewhere)...
    DRAINING: Final = "draining"
    # ...and one still running at the drain deadline or unload is ended.
    SHUTDOWN: Final = "shutdown"


# Code of a valid request that failed inside the model.
GENERATION_FAILED: Final = "generation_failed"

_MARKER = re.compile(r"\[(?P<kind>[a-z_]+):(?P<code>[a-z0-9_]+)\] ")


@dataclass(frozen=True)
class ErrorMarker:
    kind: str  # one of ERROR_KINDS
    code: str  # the rule (rejections) or reason (unavailable, internal)


def parse_error_marker(message: str) -> ErrorMarker | None:
    """The marker that starts a model error message; None for errors that did
    not come from the model (Triton's own: unknown model, bad input names,
    ...). Only the start counts: text echoed later in a message is not a
    marker."""
    match = _MARKER.match(message)
    if match is None or match["kind"] not in ERROR_KINDS:
        return None
    return ErrorMarker(match["kind"], match["code"])
