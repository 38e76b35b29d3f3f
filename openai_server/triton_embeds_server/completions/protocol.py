"""The /v1/completions request body, as vLLM's server takes it."""

from __future__ import annotations

from typing import Any

from .._protocol import SamplingFields


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: str | list[str] | None = None
    # vLLM's and Dynamo's form: base64 of torch.save(tensor), one or a list.
    prompt_embeds: str | list[str] | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False
    # OpenAI fields this server cannot honour: refused when set, never ignored.
    suffix: str | None = None
    best_of: int | None = None
    logit_bias: dict[str, Any] | None = None
