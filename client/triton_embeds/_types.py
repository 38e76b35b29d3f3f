"""Plain data passed between the resources and the transports.

Public responses are openai-python's own types (`Completion`,
`ChatCompletion`, `Model`); these are the internal shapes of one Triton
request and one Triton response, kept free of any transport so gRPC and HTTP
can share everything above them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from openai.types import Model
from pydantic import BaseModel

from .protocol import CHAT_PARAMETERS_INPUT, EMBEDS_BASE64_INPUT, MESSAGES_INPUT, TEXT_INPUT

# One generated token's entry of the model's `logprobs` output: token id (a
# string, as JSON keys are) to its "logprob", "rank" and "decoded_token", the
# chosen token first, then its top alternatives.
TokenLogprobs = dict[str, dict[str, Any]]
# The model's `prompt_logprobs` output: an entry per prompt position, laid out
# as TokenLogprobs, None for the first position (nothing precedes it).
PromptLogprobs = list[TokenLogprobs | None]


@dataclass(frozen=True)
class TensorPayload:
    """Embeddings as a raw Triton tensor: the bytes of a C-ordered (S, H) array."""

    input_name: str  # prompt_embeds, prompt_embeds_fp16 or prompt_embeds_bf16
    datatype: str  # Triton datatype: FP32, FP16 or BF16
    shape: tuple[int, int]
    data: bytes


@dataclass(frozen=True)
class GenerateRequest:
    """One prompt of a completions call, or one chat conversation, ready for
    either transport.

    `index` is the choice index it answers; an embeddings prompt carries no
    text, so the raw text never reaches the server. A conversation is
    `messages` (its JSON) with optional `chat_parameters` (JSON), and
    `embeds_tensor` then holds the rows its "rows" parts take.
    `return_logprobs` asks for the model's per-token logprobs output (the
    sampling parameters then say how many alternatives).
    """

    index: int
    sampling: dict[str, Any]
    stream: bool
    text: str | None = None
    embeds_tensor: TensorPayload | None = None
    embeds_base64: str | None = None
    messages: str | None = None
    chat_parameters: str | None = None
    return_logprobs: bool = False

    @property
    def n(self) -> int:
        """Sequences asked for (the `n` sampling key; the server's default is 1)."""
        return int(self.sampling.get("n") or 1)

    def prompt_inputs(self) -> list[tuple[str, str | TensorPayload]]:
        """The inputs that carry the prompt, by Triton input name: strings
        for BYTES inputs, a TensorPayload for the raw embeddings input."""
        inputs: list[tuple[str, str | TensorPayload]] = []
        if self.messages is not None:
            inputs.append((MESSAGES_INPUT, self.messages))
            if self.chat_parameters is not None:
                inputs.append((CHAT_PARAMETERS_INPUT, self.chat_parameters))
        if self.embeds_tensor is not None:
            inputs.append((self.embeds_tensor.input_name, self.embeds_tensor))
        elif self.embeds_base64 is not None:
            inputs.append((EMBEDS_BASE64_INPUT, self.embeds_base64))
        elif self.messages is None:
            inputs.append((TEXT_INPUT, self.text or ""))
        return inputs


@dataclass(frozen=True)
class Delta:
    """One response of the model: new text and, on a prompt's last response,
    its finish reason and token counts (None on the streamed ones before).
    `logprobs` has an entry per token new in this response when the request
    asked for them, else None.

    `index` is the prompt (the request) it answers and `choice` which of
    that request's n sequences: with n > 1 each sequence's last response
    has its finish reason, and only the request's last has the token
    counts, totalled over its sequences. `prompt_logprobs` comes on a
    request's first response when the sampling parameters asked for it."""

    index: int
    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    logprobs: list[TokenLogprobs] | None = None
    choice: int = 0
    prompt_logprobs: PromptLogprobs | None = None


@dataclass
class ModelList:
    """`client.models.list()` result: iterable like openai's page, with `.data`."""

    data: list[Model] = field(default_factory=list)
    object: str = "list"

    def __iter__(self) -> Iterator[Model]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


M = TypeVar("M", bound=BaseModel)
_pydantic_construct = BaseModel.model_construct.__func__  # type: ignore[attr-defined]


def construct(kind: type[M], /, **fields: Any) -> M:
    """An openai object without validation, as pydantic builds one: openai's
    own `model_construct` re-walks every field's type hints to coerce nested
    dicts, nine times slower, and every value here is already built by this
    package (responses are made per streamed chunk, so this is hot)."""
    return _pydantic_construct(kind, **fields)
