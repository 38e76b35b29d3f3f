"""Build the engine prompt of a parsed request. For embeddings this is the
expensive part (base64, torch.load, finiteness scan): it runs in a worker
thread, never on the engine's event loop."""

from __future__ import annotations

from typing import Any

from .contract import Rule
from .embeds import EmbedsLimits, decode_base64_embeds, validate_embeds
from .errors import RequestRejected
from .request_parsing import ParsedRequest, PromptKind


def build_embeds_prompt(parsed: ParsedRequest, limits: EmbedsLimits, max_model_len: int) -> dict[str, Any]:
    """SPEC rules 2-8 for an embeddings request."""
    if parsed.kind is PromptKind.EMBEDS_BASE64:
        tensor = decode_base64_embeds(parsed.embeds_base64 or b"", limits)
    elif parsed.embeds_tensor is not None:
        tensor = parsed.embeds_tensor
    else:
        raise ValueError(f"a {parsed.kind.value} request without embeddings")
    tensor = validate_embeds(tensor, limits)  # every row sent is checked, kept or not
    keep = parsed.options.truncate_prompt_tokens
    if keep is not None and tensor.shape[0] > keep:
        tensor = tensor[-keep:]  # vLLM's truncation: the last rows stay
    check_context_length(int(tensor.shape[0]), parsed.max_tokens, max_model_len)
    return {"prompt_embeds": tensor}


def check_context_length(
    prompt_len: int, max_tokens: int, max_model_len: int, truncate_to: int | None = None
) -> None:
    """The check vLLM would make, before any work on the prompt's rows;
    a prompt to be truncated counts at the length it will have."""
    if truncate_to is not None:
        prompt_len = min(prompt_len, truncate_to)
    if prompt_len + max_tokens > max_model_len:
        raise RequestRejected(
            Rule.TOO_LONG,
            f"prompt of {prompt_len} positions plus max_tokens={max_tokens} exceeds the "
            f"model's context length of {max_model_len}",
        )


def build_text_prompt(parsed: ParsedRequest) -> dict[str, Any]:
    return {"prompt": parsed.text or ""}
