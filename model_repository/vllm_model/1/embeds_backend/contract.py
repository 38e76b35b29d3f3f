"""The model's wire contract, in one place: input and output tensors (name,
Triton datatype, shape), the rule names rejections carry, and the error kinds
clients classify errors by.

`config.pbtxt`, the auto-complete (`triton_config`), request parsing and the
responses all take their names from here; a unit test holds `config.pbtxt`
and the client's `triton_embeds.protocol` to it. Nothing here imports torch
or Triton, so the contract can be read anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

# -- inputs ---------------------------------------------------------------------
TEXT_INPUT: Final = "text_input"
EMBEDS_FP32_INPUT: Final = "prompt_embeds"
EMBEDS_FP16_INPUT: Final = "prompt_embeds_fp16"
EMBEDS_BF16_INPUT: Final = "prompt_embeds_bf16"
EMBEDS_BASE64_INPUT: Final = "prompt_embeds_base64"
STREAM_INPUT: Final = "stream"
SAMPLING_INPUT: Final = "sampling_parameters"
EXCLUDE_INPUT: Final = "exclude_input_in_output"
# A chat conversation (OpenAI messages as JSON), templated on the server.
MESSAGES_INPUT: Final = "messages"
# JSON: add_generation_prompt, continue_final_message, chat_template_kwargs.
CHAT_PARAMETERS_INPUT: Final = "chat_parameters"
# Triton's vLLM backend's optional outputs, asked for per request: with one
# set, its output goes on every response, with the backend's meaning.
RETURN_FINISH_REASON_INPUT: Final = "return_finish_reason"
RETURN_CUMULATIVE_LOGPROB_INPUT: Final = "return_cumulative_logprob"
RETURN_LOGPROBS_INPUT: Final = "return_logprobs"
RETURN_NUM_INPUT_TOKENS_INPUT: Final = "return_num_input_tokens"
RETURN_NUM_OUTPUT_TOKENS_INPUT: Final = "return_num_output_tokens"
# Sent alone (no prompt): the answer is one response with MODEL_INFO_OUTPUT,
# which is how a remote client learns the served adapters and limits.
RETURN_MODEL_INFO_INPUT: Final = "return_model_info"

# -- outputs --------------------------------------------------------------------
TEXT_OUTPUT: Final = "text_output"
FINISH_REASON_OUTPUT: Final = "finish_reason"
INPUT_TOKENS_OUTPUT: Final = "num_input_tokens"
OUTPUT_TOKENS_OUTPUT: Final = "num_output_tokens"
# JSON: per new token, {token_id: {"logprob", "rank", "decoded_token"}}.
LOGPROBS_OUTPUT: Final = "logprobs"
CUMULATIVE_LOGPROB_OUTPUT: Final = "cumulative_logprob"
# Which of a request's n sequences a response belongs to (only when n > 1).
CHOICE_INDEX_OUTPUT: Final = "choice_index"
# JSON, on a request's first response when prompt_logprobs is set: per prompt
# position, null for the first, else as LOGPROBS_OUTPUT's entries.
PROMPT_LOGPROBS_OUTPUT: Final = "prompt_logprobs"
# JSON answer to RETURN_MODEL_INFO_INPUT; keys in MODEL_INFO_KEYS.
MODEL_INFO_OUTPUT: Final = "model_info"
MODEL_INFO_KEYS: Final = (
    "adapters",
    "max_model_len",
    "hidden_size",
    "dtype",
    "prompt_embeds",
    "chat_template",
    "max_logprobs",
    "max_n",
    "engine_ready",
)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as config.pbtxt declares it."""

    name: str
    data_type: str  # Triton config type: TYPE_FP32, TYPE_STRING, ...
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def wire_datatype(self) -> str:
        """The datatype on the wire (KServe v2): FP32, BYTES, BOOL, ..."""
        name = self.data_type.removeprefix("TYPE_")
        return "BYTES" if name == "STRING" else name

    def as_config(self) -> dict[str, Any]:
        """The entry as Triton's auto-complete takes it."""
        entry: dict[str, Any] = {"name": self.name, "data_type": self.data_type, "dims": list(self.dims)}
        if self.optional:
            entry["optional"] = True
        return entry


# Raw embeddings come as one tensor input per wire dtype: FP32 is what the
# reference docs use, FP16/BF16 match GPU engines and halve the bytes.
EMBEDS_TENSOR_INPUTS: Final = (EMBEDS_FP32_INPUT, EMBEDS_FP16_INPUT, EMBEDS_BF16_INPUT)
EMBEDS_INPUTS: Final = (*EMBEDS_TENSOR_INPUTS, EMBEDS_BASE64_INPUT)
STRING_INPUTS: Final = (
    TEXT_INPUT,
    SAMPLING_INPUT,
    EMBEDS_BASE64_INPUT,
    MESSAGES_INPUT,
    CHAT_PARAMETERS_INPUT,
)
RETURN_INPUTS: Final = (
    RETURN_FINISH_REASON_INPUT,
    RETURN_CUMULATIVE_LOGPROB_INPUT,
    RETURN_LOGPROBS_INPUT,
    RETURN_NUM_INPUT_TOKENS_INPUT,
    RETURN_NUM_OUTPUT_TOKENS_INPUT,
)
BOOL_INPUTS: Final = (STREAM_INPUT, EXCLUDE_INPUT, *RETURN_INPUTS, RETURN_MODEL_INFO_INPUT)

INPUTS: Final = (
    TensorSpec(TEXT_INPUT, "TYPE_STRING", (1,), optional=True),
    TensorSpec(EMBEDS_FP32_INPUT, "TYPE_FP32", (-1, -1), optional=True),
    TensorSpec(EMBEDS_FP16_INPUT, "TYPE_FP16", (-1, -1), optional=True),
    TensorSpec(EMBEDS_BF16_INPUT, "TYPE_BF16", (-1, -1), optional=True),
    TensorSpec(EMBEDS_BASE64_INPUT, "TYPE_STRING", (1,), optional=True),
    TensorSpec(STREAM_INPUT, "TYPE_BOOL", (1,), optional=True),
    TensorSpec(SAMPLING_INPUT, "TYPE_STRING", (1,), optional=True),
    TensorSpec(EXCLUDE_INPUT, "TYPE_BOOL", (1,), optional=True),
    TensorSpec(MESSAGES_INPUT, "TYPE_STRING", (1,), optional=True),
    TensorSpec(CHAT_PARAMETERS_INPUT, "TYPE_STRING", (1,), optional=True),
    *(TensorSpec(name, "TYPE_BOOL", (1,), optional=True) for name in RETURN_INPUTS),
    TensorSpec(RETURN_MODEL_INFO_INPUT, "TYPE_BOOL", (1,), optional=True),
)
OUTPUTS: Final = (
    TensorSpec(TEXT_OUTPUT, "TYPE_STRING", (-1,)),
    TensorSpec(FINISH_REASON_OUTPUT, "TYPE_STRING", (-1,)),
    TensorSpec(INPUT_TOKENS_OUTPUT, "TYPE_UINT32", (-1,)),
    TensorSpec(OUTPUT_TOKENS_OUTPUT, "TYPE_UINT32", (-1,)),
    TensorSpec(LOGPROBS_OUTPUT, "TYPE_STRING", (-1,)),
    TensorSpec(CUMULATIVE_LOGPROB_OUTPUT, "TYPE_FP32", (-1,)),
    TensorSpec(CHOICE_INDEX_OUTPUT, "TYPE_UINT32", (-1,)),
    TensorSpec(PROMPT_LOGPROBS_OUTPUT, "TYPE_STRING", (-1,)),
    TensorSpec(MODEL_INFO_OUTPUT, "TYPE_STRING", (-1,)),
)
# Unless a return_* input asks for more, streamed responses before a
# request's last carry the text alone and the last carries these.
FINAL_OUTPUTS: Final = (TEXT_OUTPUT, FINISH_REASON_OUTPUT, INPUT_TOKENS_OUTPUT, OUTPUT_TOKENS_OUTPUT)


# -- chat messages ----------------------------------------------------------------
CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool")
TEXT_PART: Final = "text"
EMBEDS_PART: Final = "prompt_embeds"
# An embeddings part carries either vLLM's base64 of torch.save bytes...
EMBEDS_PART_DATA: Final = "data"
# ...or the number of rows it takes, in part order, from the raw embeddings input.
EMBEDS_PART_ROWS: Final = "rows"
# Where an embeddings part sits in the rendered template: vLLM's reserved
# placeholder, a special token of the served tokenizer. Text may not contain it.
EMBEDS_PLACEHOLDER: Final = "<prompt_embeds>"


# -- codes: why a request was refused or not served ------------------------------
class Rule:
    """Rule names of rejections, cheapest check first (SPEC's validation
    order). They label embeds_rejections_total, as does
    Unavailable.CONCURRENCY_LIMIT."""

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
    # Chat conversations (the `messages` input).
    PROMPT_CONFLICT: Final = "prompt_conflict"
    CHAT_LIMIT: Final = "chat_limit"
    BAD_MESSAGES: Final = "bad_messages"
    RESERVED_PLACEHOLDER: Final = "reserved_placeholder"
    BAD_CHAT_PARAMETERS: Final = "bad_chat_parameters"
    CHAT_ROWS: Final = "chat_rows"
    NO_CHAT_TEMPLATE: Final = "no_chat_template"
    CHAT_TEMPLATE_FAILED: Final = "chat_template_failed"
    # A lora_name the model does not serve.
    UNKNOWN_ADAPTER: Final = "unknown_adapter"
    # vLLM's own input validation refused what passed ours (an invalid JSON
    # schema, regex or grammar among them).
    ENGINE_VALIDATION: Final = "engine_validation"


# Codes of the requests the model could not serve now (UNAVAILABLE).
class Unavailable:
    CONCURRENCY_LIMIT: Final = "concurrency_limit"
    ENGINE_RESTARTING: Final = "engine_restarting"
    ENGINE_DOWN: Final = "engine_down"
    # The replica is stopping: a new request is refused (retry elsewhere)...
    DRAINING: Final = "draining"
    # ...and one still running at the drain deadline or unload is ended.
    SHUTDOWN: Final = "shutdown"


# Code of a valid request that failed inside the engine (INTERNAL).
GENERATION_FAILED: Final = "generation_failed"

RULES: Final = frozenset(value for key, value in vars(Rule).items() if not key.startswith("_"))
UNAVAILABLE_CODES: Final = frozenset(
    value for key, value in vars(Unavailable).items() if not key.startswith("_")
)


# -- error kinds: how a client tells a rejection from an outage -----------------
class ErrorKind:
    """The Triton status each kind is sent with is named beside it. Over gRPC
    streams and inside HTTP event streams Triton passes the message alone, so
    every message also starts with `[kind:code] `, which clients parse instead
    of the prose after it."""

    REJECTED: Final = "rejected"  # INVALID_ARG: HTTP 400, never worth a retry
    UNAVAILABLE: Final = "unavailable"  # UNAVAILABLE: HTTP 503, retry later
    INTERNAL: Final = "internal"  # INTERNAL: HTTP 500


def error_message(kind: str, code: str, message: str) -> str:
    """The text of an error response: a stable `[kind:code] ` marker, then prose."""
    return f"[{kind}:{code}] {message}"
