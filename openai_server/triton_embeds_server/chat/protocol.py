"""The /v1/chat/completions request body, as vLLM's server takes it. The
messages are passed on as they are: the model checks them (roles, parts,
embeddings) with its own limits and messages."""

from __future__ import annotations

from typing import Any

from .._protocol import JsonObject, SamplingFields


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: list[JsonObject]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # vLLM's chat template controls.
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    chat_template_kwargs: JsonObject | None = None
    # OpenAI fields this server cannot honour: refused when set, never ignored.
    tools: list[Any] | None = None
    tool_choice: Any = None
    logit_bias: dict[str, Any] | None = None
