"""The chat fuzzer's inputs: seed conversations made in code (text only,
data parts, rows parts with a raw tensor, both mixed, chat_parameters
variants, each setup that accepts anything) and mutators that know the layers of a request: the
header (engine dtype, setup, context sizes, raw tensor recipe), the JSON
trees of messages and chat_parameters, their serialized text and bytes, and
the embeddings payloads inside data parts (mutated with the embeddings
fuzzer's own mutators)."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from embeds_backend.contract import CHAT_ROLES, EMBEDS_PART, EMBEDS_PLACEHOLDER, TEXT_PART

from ..payloads import saved
from .chat_oracle import SETUP_NAMES, ChatCase, RawSpec
from .inputs import BYTE_MUTATORS, SPECIAL_VALUES, TensorSpec, corrupt_base64, make_tensor
from .inputs import mutate as mutate_embeds_input
from .inputs import seed_inputs as embeds_seed_inputs
from .oracle import ENGINE_DTYPES, HIDDEN, make_input, split_input

MAX_INPUT = 32 * 1024  # twice the messages limit: past it stays reachable
# Mutators grow lists and text up to about what an input can hold, never
# further: stacked growth would otherwise reach gigabytes.
MAX_ITEMS = 64
JSON = Any  # a decoded JSON value


# -- seeds ----------------------------------------------------------------------------------
def payload(rows: int, dtype: torch.dtype = torch.float32, seed: int = 0, shape: tuple[int, ...] = ()) -> str:
    """Base64 of torch.save of a small valid (rows, HIDDEN) tensor."""
    tensor = make_tensor(TensorSpec(shape or (rows, HIDDEN), dtype, seed=seed))
    return base64.b64encode(saved(tensor)).decode()


def text(value: str) -> dict[str, Any]:
    return {"type": TEXT_PART, "text": value}


def data(rows: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, Any]:
    return {"type": EMBEDS_PART, "data": payload(rows, dtype, seed)}


def rows(count: int) -> dict[str, Any]:
    return {"type": EMBEDS_PART, "rows": count}


def make_case(
    messages: JSON,
    parameters: JSON | bytes | None = None,
    raw: RawSpec | None = None,
    *,
    setup: str = "chatml",
    engine_dtype: int = 0,
    context: int = 0,
) -> bytes:
    """An input: the messages and parameters as JSON (bytes are taken as they are)."""
    encoded_parameters = (
        parameters if isinstance(parameters, bytes) or parameters is None else json.dumps(parameters).encode()
    )
    case = ChatCase(
        json.dumps(messages).encode(),
        encoded_parameters,
        engine_dtype=engine_dtype,
        setup=SETUP_NAMES.index(setup),
        context=context,
    )
    return case.with_raw(raw).encode()


def seed_inputs() -> list[bytes]:
    """Valid conversations, each accepted by the setup it names."""
    user = {"role": "user", "content": "Hello world!"}
    dialogue = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "The capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]
    continued = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The capital"}]
    with_data = [{"role": "user", "content": [text("Summarise:"), data(3), text("in one line")]}]
    spread = [
        {"role": "system", "content": "x"},
        {"role": "user", "content": [data(2, torch.float16, 1)]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [text("and"), data(1, torch.bfloat16, 2), text("this")], "name": "ann"},
    ]
    with_rows = [{"role": "user", "content": [text("Hello"), rows(2), text("world"), rows(3)]}]
    mixed = [
        {
            "role": "user",
            "content": [text("Hello"), rows(1), data(3, seed=3), text("world"), rows(3), data(2, seed=4)],
        }
    ]
    three_d = [
        {
            "role": "user",
            "content": [{"type": EMBEDS_PART, "data": payload(0, torch.float64, 5, (1, 3, HIDDEN))}],
        }
    ]
    return [
        make_case([user]),
        make_case(dialogue),
        make_case([{"role": "user", "content": [text("Hello"), text("world!")], "name": "ann"}]),
        make_case([{"role": "developer", "content": "Use tools."}, {"role": "tool", "content": "42"}, user]),
        make_case(with_data),
        make_case(spread, engine_dtype=1),
        make_case(with_rows, raw=RawSpec(rows=5)),
        make_case(mixed, raw=RawSpec(dtype=1, rows=4, seed=7), engine_dtype=2),
        make_case(with_rows, raw=RawSpec(dtype=2, rows=5, view=2), engine_dtype=1),
        make_case(three_d),
        make_case(dialogue, {"add_generation_prompt": False}),
        make_case(continued, {"add_generation_prompt": False, "continue_final_message": True}),
        make_case(with_data, b"{}", context=2),
        make_case([user], b""),
        make_case(spread, {"chat_template_kwargs": {"greeting": "Hi"}}, setup="strict"),
        make_case(dialogue, {"chat_template_kwargs": {"greeting": "Hi"}}, setup="last_message"),
        make_case([user, *with_data], setup="last_message"),
        make_case([*dialogue[:2], *with_data], setup="parts", engine_dtype=2),
        make_case(with_rows, raw=RawSpec(rows=5), setup="strict", context=0x0A),
    ]


# -- mutators: the JSON trees ----------------------------------------------------------------
NEST = "\x00nest\x00"  # stands for a nested value, written out after serializing
NEST_DEPTHS = (8, 100, 900, 1000, 3000, 20_000)
ROLES: tuple[JSON, ...] = (
    *CHAT_ROLES,
    "wizard",
    "",
    "USER",
    "function",
    "user ",
    None,
    1,
    ["user"],
    {"role": "user"},
)
PART_TYPES: tuple[JSON, ...] = (
    TEXT_PART,
    EMBEDS_PART,
    "image_url",
    "input_text",
    "",
    "TEXT",
    "prompt_embeds ",
    None,
    7,
    [],
)
ROWS: tuple[JSON, ...] = (
    0,
    -1,
    1,
    2,
    3,
    7,
    True,
    False,
    1.0,
    2.5,
    "2",
    None,
    [],
    2**31 - 1,
    2**31,
    2**63,
    10**30,
)
VALUES: tuple[JSON, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1.5,
    float("nan"),
    float("inf"),
    "",
    "x",
    [],
    {},
    [1],
    {"a": None},
    "x" * 3000,
)
# Strings text meets on its way to the template and the tokenizer: the
# placeholder whole, in pieces and in other cases; the tokenizer's special
# tokens; a lone surrogate (only a \\u escape carries it); control and
# line-separator characters; template syntax.
INJECTED = (
    EMBEDS_PLACEHOLDER,
    EMBEDS_PLACEHOLDER * 2,
    "<prompt_embeds",
    "prompt_embeds>",
    "<PROMPT_EMBEDS>",
    "< prompt_embeds >",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "\ud800",
    "\udcff",
    "\x00",
    "\u2028",
    "\ufeff",
    "é",
    "{{ 7 * 7 }}",
    "{% raw %}",
    "\n",
)
MESSAGE_KEYS = ("tool_calls", "Role", "tool_call_id", "reasoning_content", "name")
PART_KEYS = ("image_url", "cache_control", "text", "data", "rows")


def _messages(tree: JSON) -> list[dict[str, Any]]:
    return [m for m in tree if isinstance(m, dict)] if isinstance(tree, list) else []


def _part_lists(tree: JSON) -> list[list[Any]]:
    return [m["content"] for m in _messages(tree) if isinstance(m.get("content"), list)]


def _parts(tree: JSON, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        part
        for content in _part_lists(tree)
        for part in content
        if isinstance(part, dict) and (kind is None or part.get("type") == kind)
    ]


def _some_list(tree: JSON, rng: random.Random) -> list[Any] | None:
    """The messages or one message's parts."""
    lists = [tree] if isinstance(tree, list) else []
    lists += _part_lists(tree)
    return rng.choice(lists) if lists else None


def drop_item(tree: JSON, rng: random.Random) -> JSON:
    items = _some_list(tree, rng)
    if items:
        del items[rng.randrange(len(items))]
    return tree


def duplicate_item(tree: JSON, rng: random.Random) -> JSON:
    items = _some_list(tree, rng)
    if items:
        items.insert(rng.randrange(len(items) + 1), json.loads(json.dumps(rng.choice(items))))
    return tree


def reorder_items(tree: JSON, rng: random.Random) -> JSON:
    items = _some_list(tree, rng)
    if items and len(items) > 1:
        if rng.random() < 0.5:
            rng.shuffle(items)
        else:
            i, j = rng.sample(range(len(items)), 2)
            items[i], items[j] = items[j], items[i]
    return tree


def set_role(tree: JSON, rng: random.Random) -> JSON:
    messages = _messages(tree)
    if messages:
        rng.choice(messages)["role"] = rng.choice(CHAT_ROLES if rng.random() < 0.5 else ROLES)
    return tree


def set_part_type(tree: JSON, rng: random.Random) -> JSON:
    parts = _parts(tree)
    if parts:
        rng.choice(parts)["type"] = rng.choice(PART_TYPES[:2] if rng.random() < 0.5 else PART_TYPES)
    return tree


def _nodes(tree: JSON) -> list[tuple[Any, Any]]:
    """(container, key) of every value in the tree, iteratively."""
    found: list[tuple[Any, Any]] = []
    pending = [tree]
    while pending and len(found) < 2000:
        item = pending.pop()
        pairs = (
            list(item.items())
            if isinstance(item, dict)
            else list(enumerate(item))
            if isinstance(item, list)
            else []
        )
        for key, value in pairs:
            found.append((item, key))
            pending.append(value)
    return found


def swap_value_type(tree: JSON, rng: random.Random) -> JSON:
    """Any value anywhere becomes a value of another type."""
    nodes = _nodes(tree)
    if not nodes:
        return rng.choice(VALUES)
    container, key = rng.choice(nodes)
    container[key] = json.loads(json.dumps(rng.choice(VALUES)))
    return tree


def set_rows(tree: JSON, rng: random.Random) -> JSON:
    parts = _parts(tree, EMBEDS_PART) or _parts(tree)
    if parts:
        part = rng.choice(parts)
        part["type"] = EMBEDS_PART
        part.pop("data", None)
        part["rows"] = rng.choice(ROWS) if rng.random() < 0.8 else rng.randint(1, 300)
    return tree


def reshape_embeds_part(tree: JSON, rng: random.Random) -> JSON:
    """Both of data and rows, neither, or one traded for the other."""
    parts = _parts(tree, EMBEDS_PART)
    if not parts:
        return tree
    part = rng.choice(parts)
    action = rng.randrange(4)
    if action == 0:
        part.setdefault("data", payload(2))
        part.setdefault("rows", 2)
    elif action == 1:
        part.pop("data", None)
        part.pop("rows", None)
    elif action == 2:
        part.pop("data", None)
        part["rows"] = rng.randint(1, 4)
    else:
        part.pop("rows", None)
        part["data"] = payload(rng.randint(1, 4), seed=rng.randrange(100))
    return tree


def add_unknown_key(tree: JSON, rng: random.Random) -> JSON:
    if rng.random() < 0.5 and _messages(tree):
        rng.choice(_messages(tree))[rng.choice(MESSAGE_KEYS)] = rng.choice(VALUES[:12])
    elif _parts(tree):
        rng.choice(_parts(tree))[rng.choice(PART_KEYS)] = rng.choice(VALUES[:12])
    return tree


def _text_slots(tree: JSON) -> list[tuple[dict[str, Any], str]]:
    """(dict, key) of the strings that reach the template: string contents,
    text parts' text, names."""
    slots = [(m, key) for m in _messages(tree) for key in ("content", "name") if isinstance(m.get(key), str)]
    slots += [(part, "text") for part in _parts(tree) if isinstance(part.get("text"), str)]
    return slots


def inject_text(tree: JSON, rng: random.Random) -> JSON:
    """The placeholder (whole or in pieces), special tokens, a lone
    surrogate or template syntax into a text, a content string or a name."""
    slots = _text_slots(tree)
    if not slots:
        messages = _messages(tree)
        if not messages:
            return tree
        slots = [(rng.choice(messages), "name")]
    holder, key = rng.choice(slots)
    current = holder[key] if isinstance(holder.get(key), str) else ""
    at = rng.randrange(len(current) + 1)
    holder[key] = current[:at] + rng.choice(INJECTED) + current[at:]
    return tree


def convert_content(tree: JSON, rng: random.Random) -> JSON:
    """A string content becomes text parts, text-only parts become a string."""
    messages = _messages(tree)
    if messages:
        message = rng.choice(messages)
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = [text(piece) for piece in content.split(" ", rng.randint(0, 3))]
        elif isinstance(content, list) and all(isinstance(p, dict) and "text" in p for p in content):
            message["content"] = "\n".join(str(p.get("text")) for p in content)
    return tree


def add_part(tree: JSON, rng: random.Random) -> JSON:
    messages = _messages(tree)
    if not messages:
        return tree
    message = rng.choice(messages)
    if not isinstance(message.get("content"), list):
        message["content"] = [text(str(message.get("content", "")))]
    new = rng.choice(
        (
            text(rng.choice(("a", "Hello", ""))),
            data(rng.randint(1, 3), seed=rng.randrange(99)),
            rows(rng.randint(1, 3)),
        )
    )
    message["content"].insert(rng.randrange(len(message["content"]) + 1), new)
    return tree


def multiply(tree: JSON, rng: random.Random) -> JSON:
    """Many messages or parts (past the limits), up to MAX_ITEMS."""
    items = _some_list(tree, rng)
    if items:
        copies = min(rng.choice((2, 4, 12, 30)), MAX_ITEMS // len(items))
        items.extend(json.loads(json.dumps(items)) * copies)
    return tree


def grow_text(tree: JSON, rng: random.Random) -> JSON:
    """Long text: the context length and the size limit (up to MAX_INPUT characters)."""
    slots = _text_slots(tree)
    if slots:
        holder, key = rng.choice(slots)
        grown = holder[key] or "x"
        holder[key] = grown * min(rng.choice((10, 100, 1000, 5000)), max(1, MAX_INPUT // len(grown)))
    return tree


def deep_nest(tree: JSON, rng: random.Random) -> JSON:
    """A value becomes an array nested NEST_DEPTHS deep (written out by dump)."""
    nodes = _nodes(tree)
    if not nodes:
        return NEST
    container, key = rng.choice(nodes)
    container[key] = NEST
    return tree


def replace_tree(tree: JSON, rng: random.Random) -> JSON:
    return rng.choice(({}, [], "x", 1, None, [[]], [1], [{}], {"role": "user", "content": "hi"}, [NEST]))


@functools.cache
def hostile_payloads() -> list[str]:
    """The embeddings fuzzer's seed payloads as data-part strings."""
    return [_as_text(split_input(data)[1]) for data in embeds_seed_inputs()]


def _as_text(encoded: bytes | str) -> str:
    return encoded if isinstance(encoded, str) else encoded.decode("latin-1")


def mutate_payload(encoded: str, rng: random.Random) -> str:
    """One data part's payload: mutated by the embeddings fuzzer's mutators
    (base64 text, zip container, pickle opcodes, bytes), its base64 text
    corrupted, replaced by a hostile payload, or by a valid tensor of another
    shape, dtype or value."""
    action = rng.random()
    if action < 0.45:
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return _as_text(corrupt_base64(encoded.encode("utf-8", "surrogatepass"), rng))
        return _as_text(split_input(mutate_embeds_input(make_input(rng.randrange(3), raw), rng))[1])
    if action < 0.65:
        return _as_text(corrupt_base64(encoded.encode("utf-8", "surrogatepass"), rng))
    if action < 0.85:
        return rng.choice(hostile_payloads())
    spec = TensorSpec(
        (rng.choice((0, 1, 2, 64, 400)), rng.choice((HIDDEN, HIDDEN, HIDDEN - 1, HIDDEN + 1))),
        rng.choice((torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64)),
        (rng.choice(SPECIAL_VALUES),) if rng.random() < 0.3 else (),
        seed=rng.randrange(100),
    )
    return base64.b64encode(saved(make_tensor(spec))).decode()


def mutate_data_part(tree: JSON, rng: random.Random) -> JSON:
    parts = [part for part in _parts(tree, EMBEDS_PART) if isinstance(part.get("data"), str)]
    if parts:
        part = rng.choice(parts)
        part["data"] = mutate_payload(part["data"], rng)
    return tree


TREE_MUTATORS: tuple[Callable[[JSON, random.Random], JSON], ...] = (
    drop_item,
    duplicate_item,
    reorder_items,
    set_role,
    set_part_type,
    swap_value_type,
    set_rows,
    reshape_embeds_part,
    add_unknown_key,
    inject_text,
    inject_text,
    convert_content,
    add_part,
    multiply,
    grow_text,
    deep_nest,
    replace_tree,
    mutate_data_part,
    mutate_data_part,
    mutate_data_part,
)


# -- mutators: chat_parameters -----------------------------------------------------------------
PARAMETER_KEYS = ("add_generation_prompt", "continue_final_message", "chat_template_kwargs")
FLAGS = (True, False, None, "yes", 1, 0)
# Keys a template kwarg may collide with: the model's own (reserved),
# apply_chat_template's parameters, names the template context defines,
# and ones the test templates render.
KWARG_KEYS = (
    "greeting",
    "messages",
    "conversation",
    "add_generation_prompt",
    "continue_final_message",
    "tokenize",
    "chat_template",
    "tools",
    "documents",
    "return_dict",
    "return_tensors",
    "padding",
    "truncation",
    "max_length",
    "return_assistant_tokens_mask",
    "tokenizer_kwargs",
    "raise_exception",
    "strftime_now",
    "bos_token",
    "eos_token",
    "enable_thinking",
    "",
    "x y",
    "__class__",
)
OTHER_PARAMETERS = (None, b"", b"{}", b"null", b"[]", b"1", b'"x"', b"{", b'{"x": "\xff"}', b"\xff\xfe")


def mutate_parameters_tree(tree: JSON, rng: random.Random) -> JSON:
    if not isinstance(tree, dict):
        tree = {}
    action = rng.randrange(6)
    if action == 0:
        tree[rng.choice(PARAMETER_KEYS[:2])] = rng.choice(FLAGS)
    elif action == 1:
        tree[rng.choice(("tools", "documents", "echo", "add_special_tokens", "Add_generation_prompt"))] = 1
    elif action == 2:
        tree["chat_template_kwargs"] = rng.choice(VALUES)
    elif action == 3:
        kwargs = tree.get("chat_template_kwargs")
        kwargs = kwargs if isinstance(kwargs, dict) else {}
        value = rng.choice((*VALUES, *INJECTED, "Hi " + EMBEDS_PLACEHOLDER, NEST))
        kwargs[rng.choice(KWARG_KEYS) if rng.random() < 0.9 else rng.choice(INJECTED)] = value
        tree["chat_template_kwargs"] = kwargs
    elif action == 4:
        tree = swap_value_type(tree, rng)
    else:
        tree.pop(rng.choice(PARAMETER_KEYS), None)
    return tree


def mutate_parameters(parameters: bytes | None, rng: random.Random) -> bytes | None:
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(OTHER_PARAMETERS)
    try:
        if roll < 0.25:
            raise Unreadable
        tree = _load(parameters or b"{}")
    except Unreadable:
        return rng.choice(MESSAGE_BYTE_MUTATORS)(parameters or b"", rng)
    return dump(mutate_parameters_tree(tree, rng), rng)


# -- serializing ------------------------------------------------------------------------------
class Unreadable(Exception):
    """Bytes that are not JSON: mutated as bytes."""


def _load(raw: bytes) -> JSON:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise Unreadable from None


def dump(tree: JSON, rng: random.Random) -> bytes:
    """JSON as clients write it, in one of several spellings: ASCII-only
    (\\u escapes) or not, compact or spaced, rarely every '<' escaped (the
    placeholder spelled \\u003cprompt_embeds>), rarely UTF-16/32; a nested
    value written out; lone surrogates as UTF-8 would carry them (invalid)."""
    try:
        written = json.dumps(
            tree, ensure_ascii=rng.random() < 0.5, separators=rng.choice(((",", ":"), (", ", ": ")))
        )
    except (ValueError, RecursionError):
        written = "[]"
    depth = rng.choice(NEST_DEPTHS)
    written = written.replace(json.dumps(NEST), "[" * depth + "0" + "]" * depth)
    roll = rng.random()
    if roll < 0.1:
        written = written.replace("<", "\\u003c")
    if roll > 0.97:
        return written.encode(rng.choice(("utf-16", "utf-32", "utf-16-le")), "surrogatepass")
    return written.encode("utf-8", "surrogatepass")


# -- mutators: bytes of the serialized JSON ----------------------------------------------------
BAD_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xef\xbb\xbf")


def insert_bad_utf8(raw: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(raw) + 1)
    return raw[:at] + rng.choice(BAD_UTF8) + raw[at:]


MESSAGE_BYTE_MUTATORS = (*BYTE_MUTATORS, insert_bad_utf8)


# -- mutators: the header and the raw tensor -------------------------------------------------
def _rows_taken(messages: bytes) -> int:
    try:
        return sum(
            part["rows"] for part in _parts(_load(messages), EMBEDS_PART) if type(part.get("rows")) is int
        )
    except (Unreadable, TypeError):
        return 0


def mutate_raw(case: ChatCase, rng: random.Random) -> ChatCase:
    """On or off, or one field changed; row counts near what the rows parts
    take, so that they match as often as not."""
    needed = _rows_taken(case.messages)
    if case.raw is None:
        return case.with_raw(replace(case.raw_spec, rows=needed or rng.randint(1, 4)))
    action = rng.randrange(7)
    if action == 0:
        return case.with_raw(None)
    field_values: dict[str, Any] = {
        "rows": rng.choice((0, 1, needed - 1, needed, needed + 1, 255, rng.randrange(256))) % 256,
        "cols": rng.choice((HIDDEN - 1, HIDDEN + 1, 0, 1, 255)),
        "dtype": rng.randrange(3),
        "special": rng.randrange(len(SPECIAL_VALUES) + 1),
        "seed": rng.randrange(256),
        "view": rng.randrange(4),
    }
    name = list(field_values)[action - 1]
    return case.with_raw(replace(case.raw, **{name: field_values[name]}))


def mutate_header(case: ChatCase, rng: random.Random) -> ChatCase:
    action = rng.randrange(3)
    if action == 0:
        return replace(case, engine_dtype=rng.randrange(len(ENGINE_DTYPES)))
    if action == 1:
        return replace(case, setup=rng.randrange(len(SETUP_NAMES)))
    return replace(case, context=rng.randrange(16))


# -- whole inputs -----------------------------------------------------------------------------
def mutate(data: bytes, rng: random.Random, donors: Sequence[bytes] = ()) -> bytes:
    """One to three stacked mutations of an input, capped at MAX_INPUT bytes."""
    case = ChatCase.decode(data)
    for _ in range(rng.randint(1, 3)):
        case = _mutate_once(case, rng, donors)
    return case.encode()[:MAX_INPUT]


def _mutate_once(case: ChatCase, rng: random.Random, donors: Sequence[bytes]) -> ChatCase:
    roll = rng.random()
    if roll < 0.06:
        return mutate_header(case, rng)
    if roll < 0.14:
        return mutate_raw(case, rng)
    if roll < 0.28:
        return replace(case, parameters=mutate_parameters(case.parameters, rng))
    if roll < 0.32 and donors:
        donor = ChatCase.decode(rng.choice(donors)).messages
        cut = rng.randrange(len(case.messages) + 1)
        return replace(case, messages=case.messages[:cut] + donor[rng.randrange(len(donor) + 1) :])
    if roll < 0.85:
        try:
            tree = _load(case.messages)
        except Unreadable:
            pass
        else:
            return replace(case, messages=dump(rng.choice(TREE_MUTATORS)(tree, rng), rng))
    return replace(case, messages=rng.choice(MESSAGE_BYTE_MUTATORS)(case.messages, rng))
