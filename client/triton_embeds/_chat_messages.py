"""Chat messages in, the model's `messages` JSON and raw embeddings tensor out.

An embeddings part is written `{"type": "prompt_embeds", "data": X}`, X a
torch tensor, a numpy array, a base64 string (vLLM's form) or torch.save
bytes, each one (S, H) or (1, S, H) prompt's embeddings.

* Sent binary (gRPC's default), the tensors and arrays of a conversation are
  joined, in part order, into the request's one raw embeddings input, and
  each of their parts becomes `{"type": "prompt_embeds", "rows": S}`. Strings
  and bytes stay `data` parts (bytes base64 encoded): they are already
  serialized, and decoding them would need torch.
* Sent base64 (HTTP, or `transport="base64"`), every embeddings part is a
  `data` part: tensors and arrays are encoded as `encode_prompt_embeds` does.

The caller's messages are copied, never changed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from openai.types.chat import ChatCompletionMessage

from ._encoding import EmbedsItem, split_prompt_embeds, to_base64, to_tensor_payload
from ._transport import EmbedsTransport
from ._types import TensorPayload
from .protocol import EMBEDS_FP32_INPUT, EMBEDS_PART, EMBEDS_PART_DATA, EMBEDS_PART_ROWS

# One message as `create` takes it: an openai-style dict, or a message of an
# earlier response (its role and content are sent).
ChatMessage: TypeAlias = Mapping[str, Any] | ChatCompletionMessage


@dataclass(frozen=True)
class EncodedChat:
    messages: str  # the JSON of the messages input
    embeds_tensor: TensorPayload | None  # the rows that "rows" parts take, in part order


@dataclass
class _EmbedsSlot:
    """One embeddings part of the copied conversation, to be replaced."""

    content: list[Any]  # the copied content list holding it
    position: int
    part: Mapping[str, Any]
    item: EmbedsItem  # an (S, H) tensor or array, or a base64 string
    where: str  # messages[i].content[j], for error messages

    def replace(self, key: str, value: Any) -> None:
        """The part with `key` in place of its `data` (its other keys kept)."""
        others = {k: v for k, v in self.part.items() if k != EMBEDS_PART_DATA}
        self.content[self.position] = {**others, key: value}


async def encode_chat(
    messages: Iterable[ChatMessage],
    embeds_transport: EmbedsTransport,
    model_inputs: Callable[[], Awaitable[Collection[str]]],
) -> EncodedChat:
    """The model's inputs for a conversation. The model's input names (which
    pick the tensor's dtype) are only looked up when a tensor is sent binary."""
    conversation, slots = _copy_conversation(messages)
    arrays = [slot for slot in slots if not isinstance(slot.item, str)]
    _check_shapes(arrays)
    tensor = None
    if arrays and embeds_transport == "binary":
        tensor = _join_rows([slot.item for slot in arrays], await model_inputs())
    for slot in slots:
        if tensor is not None and not isinstance(slot.item, str):
            slot.replace(EMBEDS_PART_ROWS, int(slot.item.shape[0]))
        else:
            slot.replace(EMBEDS_PART_DATA, to_base64(slot.item))
    return EncodedChat(json.dumps(conversation, ensure_ascii=False), tensor)


def _copy_conversation(messages: Iterable[ChatMessage]) -> tuple[list[dict[str, Any]], list[_EmbedsSlot]]:
    if isinstance(messages, (str, bytes, Mapping)):
        raise TypeError("messages must be a list of chat messages (dicts with role and content)")
    conversation: list[dict[str, Any]] = []
    slots: list[_EmbedsSlot] = []
    for i, message in enumerate(messages):
        copied = _message_dict(message, f"messages[{i}]")
        content = copied.get("content")
        if isinstance(content, (list, tuple)):
            copied["content"] = parts = list(content)
            for j, part in enumerate(parts):
                where = f"messages[{i}].content[{j}]"
                if isinstance(part, Mapping) and part.get("type") == EMBEDS_PART:
                    slots.append(_EmbedsSlot(parts, j, part, _part_item(part, where), where))
        conversation.append(copied)
    if not conversation:
        raise ValueError("messages is empty; give at least one chat message")
    return conversation, slots


def _message_dict(message: Any, where: str) -> dict[str, Any]:
    if isinstance(message, ChatCompletionMessage):
        return {"role": message.role, "content": message.content}
    if isinstance(message, Mapping):
        return dict(message)
    raise TypeError(f"{where} must be a dict with role and content, got {type(message).__name__}")


def _part_item(part: Mapping[str, Any], where: str) -> EmbedsItem:
    if EMBEDS_PART_ROWS in part:
        raise ValueError(
            f'{where}: "{EMBEDS_PART_ROWS}" parts are made by the client; give the embeddings '
            f'themselves as "{EMBEDS_PART_DATA}" (a tensor, array, base64 string or torch.save bytes)'
        )
    value = part.get(EMBEDS_PART_DATA)
    if value is None:
        raise ValueError(f'{where}: a "{EMBEDS_PART}" part needs "{EMBEDS_PART_DATA}"')
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"{where}.{EMBEDS_PART_DATA} must be a torch.Tensor, numpy array, base64 string or "
            f"torch.save bytes, got {type(value).__name__}"
        )
    try:
        items = split_prompt_embeds(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}.{EMBEDS_PART_DATA}: {exc}") from None
    if len(items) != 1:
        raise ValueError(
            f"{where}.{EMBEDS_PART_DATA} has shape {list(value.shape)}: {len(items)} prompts; "
            "a part takes one prompt's (S, H) or (1, S, H) embeddings"
        )
    return items[0]


def _check_shapes(arrays: list[_EmbedsSlot]) -> None:
    """Every part needs rows, and the parts of one conversation one hidden size."""
    for slot in arrays:
        if slot.item.shape[0] == 0:
            raise ValueError(f"{slot.where}.{EMBEDS_PART_DATA} has no rows (shape {list(slot.item.shape)})")
    sizes = {int(slot.item.shape[1]) for slot in arrays}
    if len(sizes) > 1:
        shapes = ", ".join(f"{slot.where} is {list(slot.item.shape)}" for slot in arrays)
        raise ValueError(
            f"the prompt_embeds parts of one conversation must share a hidden size, but {shapes}"
        )


def _join_rows(items: list[EmbedsItem], accepted: Collection[str]) -> TensorPayload | None:
    """The parts' rows as one raw tensor, in the narrowest dtype the model
    takes for all of them: one dtype stays as it is where the model has that
    input, mixed dtypes go as fp32. None when the model has no raw input that
    fits; the parts then go base64, as completions' embeddings do."""
    payloads = [to_tensor_payload(item, accepted) for item in items]
    if len({payload.input_name if payload else None for payload in payloads}) > 1:
        fp32_only = {EMBEDS_FP32_INPUT} & set(accepted)
        payloads = [to_tensor_payload(item, fp32_only) for item in items]
    first = payloads[0]
    if first is None or any(payload is None for payload in payloads):
        return None
    rows = sum(payload.shape[0] for payload in payloads if payload is not None)
    data = b"".join(payload.data for payload in payloads if payload is not None)
    return TensorPayload(first.input_name, first.datatype, (rows, first.shape[1]), data)
