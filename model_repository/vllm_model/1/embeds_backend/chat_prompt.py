"""Turn a checked conversation into one engine prompt, on the server: render
the served model's chat template with a placeholder where each embeddings
part goes, tokenize, and splice the parts' rows in.

Text-only conversations become a token-id prompt. With embeddings parts the
result is vLLM's mixed prompt: `prompt_embeds` over every position,
`prompt_token_ids`, and `prompt_is_token_ids` marking the positions whose
token id, not whose row, the engine embeds. Every part passes the same
validation chain as a whole-prompt embeddings input first.

Runs in a worker thread: base64 decoding, template rendering and
tokenization never block the engine's event loop. The tokenizer is the
engine renderer's own, whose public methods are safe across threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .chat_messages import ChatParameters, Conversation, EmbedsPart, message_text, template_role
from .contract import EMBEDS_PLACEHOLDER, Rule
from .embeds import EmbedsLimits, decode_base64_embeds, validate_embeds
from .errors import RequestRejected
from .prompts import check_context_length

# 256 MiB: 16k positions at hidden 8192 in bf16.
DEFAULT_MAX_MIXED_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ChatTemplating:
    """What rendering needs from the served model, read once at start."""

    tokenizer: Any
    template: str | None
    # The id the placeholder tokenizes to; None when the tokenizer has none
    # (embeddings disabled, or a tokenizer that cannot take special tokens).
    placeholder_id: int | None
    # Whether the template reads content as a list of {"type": "text"} parts
    # (OpenAI's form) rather than as one string; see content_as_parts().
    parts_content: bool = False


def build_chat_prompt(
    conversation: Conversation,
    raw_embeds: torch.Tensor | None,
    templating: ChatTemplating,
    limits: EmbedsLimits,
    max_tokens: int,
    max_model_len: int,
    max_mixed_bytes: int = DEFAULT_MAX_MIXED_BYTES,
    truncate_to: int | None = None,
) -> dict[str, Any]:
    """The engine prompt of a conversation; the renderer applies truncation
    (to token ids and rows alike), so it only shortens the length checked."""
    parts = conversation.embeds_parts
    if parts and templating.placeholder_id is None:
        raise RequestRejected(
            Rule.EMBEDS_DISABLED,
            f"{parts[0].where}: this model cannot take embeddings parts in chat "
            f'(set "enable_prompt_embeds": true in its model.json)',
        )
    text = render_template(conversation, templating)
    token_ids = templating.tokenizer.encode(text, add_special_tokens=False)
    tensors = resolve_parts(parts, raw_embeds, limits)
    positions = [i for i, token in enumerate(token_ids) if token == templating.placeholder_id]
    if len(positions) != len(parts):
        raise RequestRejected(
            Rule.CHAT_TEMPLATE_FAILED,
            f"the rendered prompt has {len(positions)} places for {len(parts)} embeddings parts; the "
            f"chat template must render each message's content exactly once",
        )
    total = len(token_ids) - len(parts) + sum(int(t.shape[0]) for t in tensors)
    check_context_length(total, max_tokens, max_model_len, truncate_to)
    if not parts:
        return {"prompt_token_ids": token_ids}
    check_mixed_size(total, limits, max_mixed_bytes)
    return mixed_prompt(token_ids, positions, tensors, limits.dtype)


def check_mixed_size(positions: int, limits: EmbedsLimits, max_mixed_bytes: int) -> None:
    """vLLM's mixed prompt holds a row for every position, template tokens
    included: bounded before it is allocated, so a long text beside a tiny
    part cannot make the model allocate far more than the request carried."""
    size = positions * limits.hidden_size * limits.dtype.itemsize
    if size > max_mixed_bytes:
        raise RequestRejected(
            Rule.CHAT_LIMIT,
            f"a prompt of {positions} positions with embeddings parts takes {size} bytes of rows, over "
            f"this model's limit of {max_mixed_bytes} (max_mixed_embeds_bytes)",
        )


def render_template(conversation: Conversation, templating: ChatTemplating) -> str:
    if not templating.template:
        raise RequestRejected(
            Rule.NO_CHAT_TEMPLATE,
            'this model has no chat template: set "chat_template" in its model.json, or send '
            "text_input with the conversation already templated",
        )
    messages = []
    for message in conversation.messages:
        text = message_text(message, EMBEDS_PLACEHOLDER)
        entry: dict[str, Any] = {
            "role": template_role(message.role, templating.template or ""),
            "content": [{"type": "text", "text": text}] if templating.parts_content else text,
        }
        if message.name is not None:
            entry["name"] = message.name
        messages.append(entry)
    parameters: ChatParameters = conversation.parameters
    try:
        rendered = templating.tokenizer.apply_chat_template(
            messages,
            chat_template=templating.template,
            add_generation_prompt=parameters.add_generation_prompt,
            continue_final_message=parameters.continue_final_message,
            tokenize=False,
            **parameters.chat_template_kwargs,
        )
    except Exception as exc:  # noqa: BLE001 - a template's raise_exception, a bad kwarg: the request's fault
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise RequestRejected(
            Rule.CHAT_TEMPLATE_FAILED, f"the chat template refused this conversation: {first_line}"
        ) from None
    if not isinstance(rendered, str):
        raise RequestRejected(Rule.CHAT_TEMPLATE_FAILED, "the chat template did not render to text")
    return rendered


_PROBE = "Probe text 8c1f"


def content_as_parts(tokenizer: Any, template: str | None) -> bool:
    """Whether `template` renders content only when given as a list of text
    parts (templates that loop over message["content"]), as vLLM's content
    format detection decides. Told by rendering a probe both ways: a template
    that drops string content but renders parts takes parts."""
    if not template:
        return False

    def renders(content: Any) -> bool:
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], chat_template=template, tokenize=False
            )
        except Exception:  # noqa: BLE001 - a template that refuses the probe: no evidence either way
            return False
        return isinstance(text, str) and _PROBE in text

    return not renders(_PROBE) and renders([{"type": "text", "text": _PROBE}])


def resolve_parts(
    parts: list[EmbedsPart], raw_embeds: torch.Tensor | None, limits: EmbedsLimits
) -> list[torch.Tensor]:
    """Each part's validated (rows, hidden) tensor, in order. `data` parts
    run the whole chain; `rows` parts take consecutive rows of the raw input,
    which is validated once and must be used up exactly."""
    raw = _validated_raw(raw_embeds, parts, limits)
    tensors: list[torch.Tensor] = []
    next_row = 0
    for part in parts:
        if part.data is not None:
            tensors.append(_decode_part(part, part.data, limits))
            continue
        assert part.rows is not None
        available = 0 if raw is None else int(raw.shape[0])
        if next_row + part.rows > available:
            raise RequestRejected(
                Rule.CHAT_ROWS,
                f"{part.where} takes rows {next_row}..{next_row + part.rows - 1} of the raw embeddings "
                f"input, which has {available} rows",
            )
        assert raw is not None
        tensors.append(raw[next_row : next_row + part.rows])
        next_row += part.rows
    if raw is not None and next_row != raw.shape[0]:
        raise RequestRejected(
            Rule.CHAT_ROWS,
            f"rows {next_row}..{int(raw.shape[0]) - 1} of the raw embeddings input are not taken by any "
            f'"rows" part: the parts must use every row, in order',
        )
    return tensors


def _validated_raw(
    raw_embeds: torch.Tensor | None, parts: list[EmbedsPart], limits: EmbedsLimits
) -> torch.Tensor | None:
    if raw_embeds is None:
        return None
    if not any(part.rows is not None for part in parts):
        raise RequestRejected(
            Rule.CHAT_ROWS,
            'a raw embeddings input came with messages that have no "rows" part to place it',
        )
    return validate_embeds(raw_embeds, limits)


def _decode_part(part: EmbedsPart, data: str, limits: EmbedsLimits) -> torch.Tensor:
    """The whole embeddings chain on one part, naming the part in any rejection."""
    try:
        return validate_embeds(decode_base64_embeds(data, limits), limits)
    except RequestRejected as exc:
        raise RequestRejected(exc.rule, f"{part.where}: {exc.message}") from None


def mixed_prompt(
    token_ids: list[int], positions: list[int], tensors: list[torch.Tensor], dtype: torch.dtype
) -> dict[str, Any]:
    """vLLM's mixed EmbedsPrompt: each placeholder token expands to its
    part's rows; template and text positions keep their token ids and get
    zero rows, which the engine replaces with the ids' own embeddings."""
    placeholder = token_ids[positions[0]]
    expanded: list[int] = []
    is_token: list[bool] = []
    spans: list[tuple[int, torch.Tensor]] = []
    start = 0
    for position, tensor in zip(positions, tensors, strict=True):
        expanded += token_ids[start:position]
        is_token += [True] * (position - start)
        spans.append((len(expanded), tensor))
        expanded += [placeholder] * int(tensor.shape[0])
        is_token += [False] * int(tensor.shape[0])
        start = position + 1
    expanded += token_ids[start:]
    is_token += [True] * (len(token_ids) - start)
    rows = torch.zeros(len(expanded), int(tensors[0].shape[1]), dtype=dtype)
    for offset, tensor in spans:
        rows[offset : offset + tensor.shape[0]] = tensor
    return {"prompt_embeds": rows, "prompt_token_ids": expanded, "prompt_is_token_ids": is_token}
