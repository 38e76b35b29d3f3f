"""Parse and check a chat conversation (the `messages` input) and its
`chat_parameters`, cheapest check first. Pure: nothing here decodes
embeddings, imports torch or knows Triton; every rejection names where in
the conversation the problem is (`messages[1].content[2]`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .contract import (
    CHAT_PARAMETERS_INPUT,
    CHAT_ROLES,
    EMBEDS_PART,
    EMBEDS_PART_DATA,
    EMBEDS_PART_ROWS,
    EMBEDS_PLACEHOLDER,
    MESSAGES_INPUT,
    TEXT_PART,
    Rule,
)
from .errors import RequestRejected

# Keys a message may carry besides role and content; tool calls and the
# like are not supported by a plain text template path.
_MESSAGE_KEYS = frozenset({"role", "content", "name"})
# chat_template_kwargs may not override what the backend itself passes to
# the template (as vLLM refuses the same keys).
_RESERVED_TEMPLATE_KWARGS = frozenset(
    {
        "messages",
        "conversation",
        "add_generation_prompt",
        "continue_final_message",
        "tokenize",
        "chat_template",
    }
)
# Parts of one message's content are joined with a newline, as vLLM joins
# text parts for string-content templates; embeddings parts keep their place
# among the text parts (vLLM's interleaved mode).
PART_SEPARATOR = "\n"
# No context is this long; bounds the numbers error messages print.
_MAX_ROWS = 2**31 - 1


@dataclass(frozen=True)
class ChatLimits:
    max_messages_bytes: int
    max_messages: int
    max_parts: int


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class EmbedsPart:
    """One embeddings part: `data` (base64 of torch.save) or `rows` (the
    next rows of the request's raw embeddings input). `where` locates it in
    the conversation for error messages."""

    where: str
    data: str | None = None
    rows: int | None = None


@dataclass(frozen=True)
class ChatMessage:
    role: str
    parts: tuple[TextPart | EmbedsPart, ...]
    name: str | None = None


@dataclass(frozen=True)
class ChatParameters:
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversation:
    messages: tuple[ChatMessage, ...]
    parameters: ChatParameters

    @property
    def embeds_parts(self) -> list[EmbedsPart]:
        return [part for message in self.messages for part in message.parts if isinstance(part, EmbedsPart)]


def parse_conversation(messages: bytes | str, parameters: str | None, limits: ChatLimits) -> Conversation:
    if len(messages) > limits.max_messages_bytes:
        raise RequestRejected(
            Rule.CHAT_LIMIT,
            f"{MESSAGES_INPUT} is {len(messages)} bytes, over this model's limit of "
            f"{limits.max_messages_bytes} (max_messages_bytes)",
        )
    raw = _load_json(messages, MESSAGES_INPUT, Rule.BAD_MESSAGES)
    if not isinstance(raw, list) or not raw:
        raise RequestRejected(
            Rule.BAD_MESSAGES, f"{MESSAGES_INPUT} must be a non-empty JSON array of chat messages"
        )
    if len(raw) > limits.max_messages:
        raise RequestRejected(
            Rule.CHAT_LIMIT,
            f"{len(raw)} messages, over this model's limit of {limits.max_messages} (max_chat_messages)",
        )
    parsed = tuple(_parse_message(message, f"messages[{i}]") for i, message in enumerate(raw))
    total_parts = sum(len(message.parts) for message in parsed)
    if total_parts > limits.max_parts:
        raise RequestRejected(
            Rule.CHAT_LIMIT,
            f"{total_parts} content parts, over this model's limit of {limits.max_parts} (max_chat_parts)",
        )
    return Conversation(parsed, parse_chat_parameters(parameters))


def _load_json(text: bytes | str, name: str, rule: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RequestRejected(rule, f"{name} is not valid JSON: {_short(exc)}") from None


def _parse_message(message: Any, where: str) -> ChatMessage:
    if not isinstance(message, dict):
        raise RequestRejected(Rule.BAD_MESSAGES, f"{where} must be an object with role and content")
    unknown = sorted(set(message) - _MESSAGE_KEYS)
    if unknown:
        raise RequestRejected(
            Rule.BAD_MESSAGES,
            f"{where} has unsupported keys {unknown}; a message has role, content and optionally name",
        )
    role = message.get("role")
    if role not in CHAT_ROLES:
        raise RequestRejected(
            Rule.BAD_MESSAGES, f"{where}.role is {_show(role)}; expected one of {', '.join(CHAT_ROLES)}"
        )
    name = message.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise RequestRejected(Rule.BAD_MESSAGES, f"{where}.name must be a string")
        _check_text(name, f"{where}.name")
    return ChatMessage(role, _parse_content(message.get("content"), f"{where}.content"), name)


def _parse_content(content: Any, where: str) -> tuple[TextPart | EmbedsPart, ...]:
    if isinstance(content, str):
        _check_text(content, where)
        return (TextPart(content),)
    if not isinstance(content, list):
        raise RequestRejected(Rule.BAD_MESSAGES, f"{where} must be a string or a list of content parts")
    return tuple(_parse_part(part, f"{where}[{i}]") for i, part in enumerate(content))


def _parse_part(part: Any, where: str) -> TextPart | EmbedsPart:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == TEXT_PART:
        text = part.get("text")
        if not isinstance(text, str):
            raise RequestRejected(Rule.BAD_MESSAGES, f"{where}.text must be a string")
        _check_text(text, f"{where}.text")
        return TextPart(text)
    if kind == EMBEDS_PART:
        return _parse_embeds_part(part, where)
    raise RequestRejected(
        Rule.BAD_MESSAGES,
        f"{where} has type {_show(kind)}; this model takes content parts of type "
        f'"{TEXT_PART}" and "{EMBEDS_PART}"',
    )


def _parse_embeds_part(part: dict[str, Any], where: str) -> EmbedsPart:
    data, rows = part.get(EMBEDS_PART_DATA), part.get(EMBEDS_PART_ROWS)
    if (data is None) == (rows is None):
        raise RequestRejected(
            Rule.BAD_MESSAGES,
            f'{where}: a "{EMBEDS_PART}" part needs exactly one of "{EMBEDS_PART_DATA}" (base64 of '
            f'torch.save bytes) or "{EMBEDS_PART_ROWS}" (rows of the raw embeddings input)',
        )
    if data is not None:
        if not isinstance(data, str) or not data:
            raise RequestRejected(Rule.BAD_MESSAGES, f"{where}.{EMBEDS_PART_DATA} must be a non-empty string")
        return EmbedsPart(where, data=data)
    if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= _MAX_ROWS:
        raise RequestRejected(
            Rule.BAD_MESSAGES,
            f"{where}.{EMBEDS_PART_ROWS} must be a positive integer below 2**31, got {_show(rows)}",
        )
    return EmbedsPart(where, rows=rows)


def _check_text(text: str, where: str, rule: str = Rule.BAD_MESSAGES) -> None:
    if EMBEDS_PLACEHOLDER in text:
        raise RequestRejected(
            Rule.RESERVED_PLACEHOLDER,
            f"{where} contains {EMBEDS_PLACEHOLDER!r}, reserved to mark where embeddings parts go",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # JSON's "\ud800" escapes decode to lone surrogates, which no
        # tokenizer can encode.
        raise RequestRejected(rule, f"{where} holds a lone UTF-16 surrogate: not text") from None


def _check_values(value: Any, where: str) -> None:
    """Every string in chat_template_kwargs, keys included, as text is
    checked. Walked with a stack, not recursion: JSON nesting that json.loads
    accepts must not exhaust the interpreter's recursion limit here."""
    pending = [(value, where)]
    while pending:
        item, place = pending.pop()
        if isinstance(item, str):
            _check_text(item, place, Rule.BAD_CHAT_PARAMETERS)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _check_text(key, place, Rule.BAD_CHAT_PARAMETERS)
                pending.append((inner, f"{place}.{key}"))
        elif isinstance(item, list):
            pending.extend((inner, f"{place}[{i}]") for i, inner in enumerate(item))


def parse_chat_parameters(text: str | None) -> ChatParameters:
    if not text:
        return ChatParameters()
    raw = _load_json(text, CHAT_PARAMETERS_INPUT, Rule.BAD_CHAT_PARAMETERS)
    if not isinstance(raw, dict):
        raise RequestRejected(Rule.BAD_CHAT_PARAMETERS, f"{CHAT_PARAMETERS_INPUT} must be a JSON object")
    known = {"add_generation_prompt", "continue_final_message", "chat_template_kwargs"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RequestRejected(
            Rule.BAD_CHAT_PARAMETERS,
            f"unknown {CHAT_PARAMETERS_INPUT} keys {unknown}; supported: {sorted(known)}",
        )
    for key in ("add_generation_prompt", "continue_final_message"):
        if key in raw and not isinstance(raw[key], bool):
            raise RequestRejected(Rule.BAD_CHAT_PARAMETERS, f"{key} must be true or false")
    kwargs = raw.get("chat_template_kwargs")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise RequestRejected(Rule.BAD_CHAT_PARAMETERS, "chat_template_kwargs must be a JSON object")
    _check_values(kwargs, "chat_template_kwargs")
    reserved = sorted(_RESERVED_TEMPLATE_KWARGS & set(kwargs))
    if reserved:
        raise RequestRejected(
            Rule.BAD_CHAT_PARAMETERS, f"chat_template_kwargs may not set {reserved}: the model sets them"
        )
    parameters = ChatParameters(
        add_generation_prompt=raw.get("add_generation_prompt", True),
        continue_final_message=raw.get("continue_final_message", False),
        chat_template_kwargs=kwargs,
    )
    if parameters.add_generation_prompt and parameters.continue_final_message:
        raise RequestRejected(
            Rule.BAD_CHAT_PARAMETERS,
            "continue_final_message continues the last message, so it needs add_generation_prompt: false",
        )
    return parameters


def template_role(role: str, template: str) -> str:
    """OpenAI's "developer" role is the newer name of "system": a template
    that does not know it gets "system", as vLLM does."""
    return "system" if role == "developer" and "developer" not in template else role


def message_text(message: ChatMessage, placeholder: str) -> str:
    """The message's content as the template sees it: parts in order, each
    embeddings part as one placeholder."""
    return PART_SEPARATOR.join(
        part.text if isinstance(part, TextPart) else placeholder for part in message.parts
    )


def _show(value: Any) -> str:
    text = (
        json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    )
    return text if len(text) <= 40 else text[:37] + "..."


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
