"""What every chat fuzz input must end as: the request the handler builds a
chat prompt from (messages, chat_parameters, sampling parameters and an
optional raw embeddings input), run through the same steps as the handler
(`parse_request`, `parse_conversation`, `build_chat_prompt`) with a real
Hugging Face tokenizer.

An input ends either accepted, with a prompt dict whose invariants hold
(`check_prompt`), or as a RequestRejected whose rule is one of CHAT_RULES
and whose message is not empty; embeddings rules name the data part they
came from. Anything else is a finding.

Inputs are bytes: a fixed header (engine dtype, templating, context sizes,
the raw tensor's recipe, the length of chat_parameters), chat_parameters,
then the messages JSON (`ChatCase`). Every byte string decodes to some case.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import embeds_backend.chat_messages
import embeds_backend.chat_prompt
import embeds_backend.request_parsing
from embeds_backend.chat_messages import ChatLimits, Conversation, EmbedsPart, TextPart, parse_conversation
from embeds_backend.chat_prompt import ChatTemplating, build_chat_prompt, content_as_parts
from embeds_backend.contract import (
    CHAT_PARAMETERS_INPUT,
    CHAT_ROLES,
    EMBEDS_PLACEHOLDER,
    EMBEDS_TENSOR_INPUTS,
    MESSAGES_INPUT,
    SAMPLING_INPUT,
    Rule,
)
from embeds_backend.embeds import EmbedsLimits
from embeds_backend.errors import RequestRejected
from embeds_backend.request_parsing import parse_request

from .inputs import SPECIAL_VALUES, TensorSpec, make_tensor
from .oracle import (
    DECODE_RULES,
    ENGINE_DTYPES,
    HIDDEN,
    ContractViolation,
    Outcome,
    check_accepted,
    check_base64_contract,
    check_tensor_contract,
    checked_rejection,
    instrumented,
    limits_for,
)
from .targets import embeds_modules

# Rules a chat request may end with: the request parser's (BAD_TEXT:
# chat_parameters that are not UTF-8; EMBEDS_DISABLED: a raw input to a
# model without embeddings), the conversation's, the template's, the
# context length, and the whole embeddings chain (on data parts and on the
# raw input).
CHAT_RULES = DECODE_RULES | {
    Rule.BAD_TEXT,
    Rule.EMBEDS_DISABLED,
    Rule.BAD_MESSAGES,
    Rule.CHAT_LIMIT,
    Rule.RESERVED_PLACEHOLDER,
    Rule.BAD_CHAT_PARAMETERS,
    Rule.CHAT_ROWS,
    Rule.NO_CHAT_TEMPLATE,
    Rule.CHAT_TEMPLATE_FAILED,
    Rule.TOO_LONG,
}
# Tight enough that the mutators reach every limit.
CHAT_LIMITS = ChatLimits(max_messages_bytes=16 * 1024, max_messages=12, max_parts=24)
MAX_MIXED_BYTES = 64 * 1024  # 1024 positions of float32 rows of HIDDEN
MIXED_KEYS = frozenset({"prompt_embeds", "prompt_token_ids", "prompt_is_token_ids"})
_LOCATION = re.compile(r"(messages\[\d+\]\.content\[\d+\]): ")


# -- templating ----------------------------------------------------------------------------
# Templates besides the tiny model's ChatML: one that reads content as a
# list of text parts (OpenAI's form), one that renders a template kwarg and
# the names and raises on roles it does not know, and one that renders only
# the last message (dropping the parts of the others).
PARTS_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STRICT_TEMPLATE = (
    "{% if greeting is defined %}{{ greeting }}\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] not in ('system', 'user', 'assistant') %}"
    "{{ raise_exception('unsupported role: ' ~ message['role']) }}{% endif %}"
    "[{{ message['role'] | upper }}{% if message['name'] is defined %} ({{ message['name'] }}){% endif %}] "
    "{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[ASSISTANT] {% endif %}"
)
LAST_MESSAGE_TEMPLATE = "{% if greeting is defined %}{{ greeting }} {% endif %}{{ messages[-1]['content'] }}"


@dataclass(frozen=True)
class Setup:
    """How the served model is set up: its templating and whether it takes
    embeddings."""

    name: str
    templating: ChatTemplating
    embeds_enabled: bool


# Picked by three bits of the control byte; the tiny model's setup half the time.
SETUP_NAMES = ("chatml", "chatml", "chatml", "parts", "no_template", "embeds_off", "strict", "last_message")


def prepare() -> None:
    """Import transformers once, in the parent, before workers fork."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers  # noqa: F401


@functools.cache
def tokenizer() -> Any:
    """The tiny model's tokenizer, trained in a moment and built once per
    process, with the placeholder registered as vLLM registers it."""
    prepare()
    from transformers import AutoTokenizer

    from ..models.tiny import train_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        train_tokenizer(Path(folder))
        built = AutoTokenizer.from_pretrained(folder)
    built.add_special_tokens({"additional_special_tokens": [EMBEDS_PLACEHOLDER]})
    return built


@functools.cache
def placeholder_id() -> int:
    (token,) = tokenizer().encode(EMBEDS_PLACEHOLDER, add_special_tokens=False)
    return int(token)


@functools.cache
def setup(index: int) -> Setup:
    from ..models.tiny import CHAT_TEMPLATE

    name = SETUP_NAMES[index % len(SETUP_NAMES)]
    templates = {
        "no_template": None,
        "parts": PARTS_TEMPLATE,
        "strict": STRICT_TEMPLATE,
        "last_message": LAST_MESSAGE_TEMPLATE,
    }
    template = templates.get(name, CHAT_TEMPLATE)
    enabled = name != "embeds_off"
    # As the engine builds it: the content form is told by rendering a probe.
    templating = ChatTemplating(
        tokenizer(), template, placeholder_id() if enabled else None, content_as_parts(tokenizer(), template)
    )
    return Setup(name, templating, enabled)


# -- inputs --------------------------------------------------------------------------------
RAW_INPUT = 0x04  # control bit: the request carries a raw embeddings input
SETUP_SHIFT = 3  # control bits 3-5: the setup
MAX_TOKENS = (16, 1, 200, 4000)  # context byte, bits 0-1
MAX_MODEL_LENS = (1024, 64, 256, 8192)  # context byte, bits 2-3
RAW_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # as EMBEDS_TENSOR_INPUTS
RAW_VIEWS = ("plain", "plain", "transposed", "every_other_row")
HEADER = 10
NO_PARAMETERS = 0xFFFF


@dataclass(frozen=True)
class RawSpec:
    """The raw embeddings input's recipe: one byte each."""

    dtype: int = 0
    rows: int = 4
    cols: int = HIDDEN
    special: int = 0  # 0: none, else SPECIAL_VALUES[special - 1] at the start
    seed: int = 0
    view: int = 0

    def tensor(self) -> torch.Tensor:
        special = (SPECIAL_VALUES[(self.special - 1) % len(SPECIAL_VALUES)],) if self.special else ()
        spec = TensorSpec(
            (self.rows, self.cols),
            RAW_DTYPES[self.dtype % len(RAW_DTYPES)],
            special,
            RAW_VIEWS[self.view % len(RAW_VIEWS)],
            self.seed,
        )
        return make_tensor(spec)

    @property
    def input_name(self) -> str:
        return EMBEDS_TENSOR_INPUTS[self.dtype % len(RAW_DTYPES)]


@dataclass(frozen=True)
class ChatCase:
    """One chat request and the model it is sent to."""

    messages: bytes
    parameters: bytes | None = None
    raw: RawSpec | None = None
    engine_dtype: int = 0  # index into ENGINE_DTYPES
    setup: int = 0  # index into SETUP_NAMES
    context: int = 0  # max_tokens and max_model_len indices
    spare: int = 0  # control bits 6-7, kept so that encoding round-trips
    raw_spec: RawSpec = field(default_factory=RawSpec)  # kept when `raw` is off

    @property
    def max_tokens(self) -> int:
        return MAX_TOKENS[self.context & 0x03]

    @property
    def max_model_len(self) -> int:
        return MAX_MODEL_LENS[(self.context >> 2) & 0x03]

    @property
    def limits(self) -> EmbedsLimits:
        return limits_for(ENGINE_DTYPES[self.engine_dtype & 0x03])

    def encode(self) -> bytes:
        spec = self.raw or self.raw_spec
        control = (
            (self.engine_dtype & 0x03)
            | (RAW_INPUT if self.raw else 0)
            | (self.setup & 0x07) << SETUP_SHIFT
            | (self.spare & 0x03) << 6
        )
        parameters = b"" if self.parameters is None else self.parameters[: NO_PARAMETERS - 1]
        length = NO_PARAMETERS if self.parameters is None else len(parameters)
        header = bytes(
            [control, self.context & 0xFF]
            + [
                value & 0xFF
                for value in (spec.dtype, spec.rows, spec.cols, spec.special, spec.seed, spec.view)
            ]
        )
        return header + length.to_bytes(2, "little") + parameters + self.messages

    @classmethod
    def decode(cls, data: bytes) -> ChatCase:
        """Any bytes: a short header is padded with zeros, a parameters length
        past the end takes what is there."""
        header = data[:HEADER].ljust(HEADER, b"\x00")
        control, context = header[0], header[1]
        spec = RawSpec(*header[2:8])
        length = int.from_bytes(header[8:10], "little")
        body = data[HEADER:]
        parameters = None if length == NO_PARAMETERS else body[:length]
        messages = body if parameters is None else body[len(parameters) :]
        return cls(
            messages=messages,
            parameters=parameters,
            raw=spec if control & RAW_INPUT else None,
            engine_dtype=control & 0x03,
            setup=(control >> SETUP_SHIFT) & 0x07,
            context=context,
            spare=control >> 6,
            raw_spec=spec,
        )

    def with_raw(self, raw: RawSpec | None) -> ChatCase:
        return replace(self, raw=raw, raw_spec=raw or self.raw_spec)

    def request_inputs(self, raw: torch.Tensor | None) -> dict[str, Any]:
        """The inputs as triton_io hands them to parse_request."""
        inputs: dict[str, Any] = {
            MESSAGES_INPUT: self.messages,
            SAMPLING_INPUT: json.dumps({"max_tokens": self.max_tokens}).encode(),
        }
        if self.parameters is not None:
            inputs[CHAT_PARAMETERS_INPUT] = self.parameters
        if raw is not None and self.raw is not None:
            inputs[self.raw.input_name] = raw
        return inputs


# -- the contract ----------------------------------------------------------------------------
@dataclass
class Run:
    """What one execution got to."""

    conversation: Conversation | None = None
    prompt: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExpectedPrompt:
    """What an accepted prompt must agree with: each embeddings part's rows
    (validated on their own, in part order) and the model's sizes."""

    parts: list[torch.Tensor]
    limits: EmbedsLimits
    placeholder_id: int | None
    vocab_size: int
    max_tokens: int
    max_model_len: int
    max_mixed_bytes: int = MAX_MIXED_BYTES


def execute(data: bytes) -> Outcome:
    return check_chat_contract(ChatCase.decode(data))


def check_chat_contract(case: ChatCase) -> Outcome:
    """Run the case as the handler would, then hold the outcome to the
    contract. Breaches raise ContractViolation; other exceptions escape as
    they are (also findings)."""
    model = setup(case.setup)
    limits = case.limits
    raw = case.raw.tensor() if case.raw else None
    run = Run()

    def attempt() -> Outcome:
        try:
            parsed = parse_request(case.request_inputs(raw), model.embeds_enabled)
            run.conversation = parse_conversation(parsed.messages or b"", parsed.chat_parameters, CHAT_LIMITS)
            run.prompt = build_chat_prompt(
                run.conversation,
                parsed.embeds_tensor,
                model.templating,
                limits,
                parsed.max_tokens,
                case.max_model_len,
                MAX_MIXED_BYTES,
            )
        except RequestRejected as exc:
            return checked_rejection(exc, CHAT_RULES)
        return Outcome("accepted", accepted_shape(run.prompt))

    outcome = instrumented(attempt)
    if run.conversation is not None:
        check_conversation(run.conversation)
    if outcome.rule in DECODE_RULES:
        check_location(outcome, run.conversation, raw_given=raw is not None)
    if run.prompt is not None:
        assert run.conversation is not None
        check_prompt(run.prompt, expected_prompt(run.conversation, raw, case, model))
    return outcome


def accepted_shape(prompt: dict[str, Any]) -> str:
    """The prompt's form, read before it is checked (so never failing)."""
    if "prompt_embeds" in prompt:
        return "mixed"
    return "token ids" if prompt.get("prompt_token_ids") else "empty token ids"


def signature(outcome: Outcome) -> str:
    """The rule and the shape of its message: numbers and quoted values
    (roles, types, names a mutator made up) stripped, so that a new
    signature is new behaviour rather than a new string."""
    shape = re.sub(r"\"[^\"]*\"|'[^']*'|[0-9]+", "N", outcome.message)
    return f"{outcome.rule} {shape[:90]}"


def check_location(outcome: Outcome, conversation: Conversation | None, raw_given: bool) -> None:
    """An embeddings rejection names the data part it came from; one
    without a location can only be the raw input's."""
    found = _LOCATION.match(outcome.message)
    if found is None:
        if not raw_given:
            raise ContractViolation(f"{outcome.rule} without a part's location\n{outcome.message}")
        return
    data_parts = {part.where for part in conversation.embeds_parts if part.data} if conversation else set()
    if found.group(1) not in data_parts:
        raise ContractViolation(f"{outcome.rule} names a location that is no data part\n{outcome.message}")


def check_conversation(conversation: Conversation, limits: ChatLimits = CHAT_LIMITS) -> None:
    """What parse_conversation may let through: within the limits, known
    roles, well-formed parts, and every string the template could render
    (text, names, template kwargs) free of the reserved placeholder and
    encodable (no lone surrogate, which tokenizers refuse)."""
    problems: dict[str, str] = {}  # what is wrong: the first example
    messages = conversation.messages
    if not 1 <= len(messages) <= limits.max_messages:
        problems["a message count out of limits"] = str(len(messages))
    if sum(len(message.parts) for message in messages) > limits.max_parts:
        problems["too many parts"] = str(sum(len(message.parts) for message in messages))
    for message in messages:
        if message.role not in CHAT_ROLES:
            problems.setdefault("an unknown role", repr(message.role))
        if message.name is not None and not _is_clean_text(message.name):
            problems.setdefault("a name with the placeholder or not text", repr(message.name)[:80])
        for part in message.parts:
            if isinstance(part, TextPart):
                if not _is_clean_text(part.text):
                    problems.setdefault("a text with the placeholder or not text", repr(part.text)[:80])
            elif not isinstance(part, EmbedsPart) or not _is_wellformed_embeds_part(part):
                problems.setdefault("a malformed embeddings part", repr(part)[:80])
    parameters = conversation.parameters
    if (
        type(parameters.add_generation_prompt) is not bool
        or type(parameters.continue_final_message) is not bool
    ):
        problems["non-boolean flags"] = repr(parameters)[:80]
    elif parameters.add_generation_prompt and parameters.continue_final_message:
        problems["add_generation_prompt with continue_final_message"] = ""
    leaked = [text for text in _strings(parameters.chat_template_kwargs) if not _is_clean_text(text)]
    if leaked:
        problems["chat_template_kwargs with the placeholder or not text"] = repr(leaked[0])[:80]
    if problems:
        details = "; ".join(f"{problem}: {example}" for problem, example in problems.items())
        raise ContractViolation(f"parsed a conversation with {', '.join(problems)}\n{details}")


def _is_clean_text(text: Any) -> bool:
    """A string without the placeholder that a tokenizer can encode (no lone surrogates)."""
    if not isinstance(text, str) or EMBEDS_PLACEHOLDER in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_wellformed_embeds_part(part: EmbedsPart) -> bool:
    if part.data is not None:
        return part.rows is None and isinstance(part.data, str) and bool(part.data)
    return type(part.rows) is int and part.rows >= 1


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included; iterative, as the value
    may be nested as deep as the JSON decoder allows."""
    found, pending = [], [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
    return found


def expected_prompt(
    conversation: Conversation, raw: torch.Tensor | None, case: ChatCase, model: Setup
) -> ExpectedPrompt:
    """Each part's rows, from the embeddings contract alone: a data part
    decoded on its own, `rows` parts taking consecutive rows of the raw
    input, which they must use up exactly."""
    limits = case.limits
    validated_raw = None
    if raw is not None:
        outcome = check_tensor_contract(raw, limits)
        if outcome.tensor is None:
            raise ContractViolation(f"accepted a chat whose raw input is refused alone\n{outcome.message}")
        validated_raw = outcome.tensor
    parts, next_row = [], 0
    for part in conversation.embeds_parts:
        if part.data is not None:
            outcome = check_base64_contract(part.data, limits)
            if outcome.tensor is None:
                raise ContractViolation(f"accepted {part.where}, refused alone\n{outcome.message}")
            parts.append(outcome.tensor)
            continue
        assert part.rows is not None
        if validated_raw is None or next_row + part.rows > validated_raw.shape[0]:
            raise ContractViolation(f"accepted {part.where}, which takes rows the raw input does not have")
        parts.append(validated_raw[next_row : next_row + part.rows])
        next_row += part.rows
    if validated_raw is not None and next_row != validated_raw.shape[0]:
        raise ContractViolation(f"accepted a chat that uses {next_row} of {validated_raw.shape[0]} raw rows")
    return ExpectedPrompt(
        parts,
        limits,
        model.templating.placeholder_id,
        len(model.templating.tokenizer),
        case.max_tokens,
        case.max_model_len,
    )


def check_prompt(prompt: dict[str, Any], expected: ExpectedPrompt) -> None:
    """The invariants of an accepted prompt: token ids of the vocabulary;
    the length within the context with max_tokens; without parts, token ids
    alone and no placeholder among them; with parts, the mixed form where
    ids, mask and rows have one length, the mask is False exactly at the
    placeholder positions, those carry the parts' rows in order (as many as
    the parts have), token positions carry zero rows, and the rows tensor
    is what the engine may be handed (plain, dense, finite, engine dtype)
    and within the size bound of mixed prompts."""
    ids = prompt.get("prompt_token_ids")
    if not isinstance(ids, list) or any(type(t) is not int or not 0 <= t < expected.vocab_size for t in ids):
        raise ContractViolation(f"prompt_token_ids are not ids of the vocabulary\n{str(ids)[:200]}")
    if len(ids) + expected.max_tokens > expected.max_model_len:
        raise ContractViolation(
            f"accepted {len(ids)} positions with max_tokens={expected.max_tokens} "
            f"in a context of {expected.max_model_len}"
        )
    if not expected.parts:
        if set(prompt) != {"prompt_token_ids"}:
            raise ContractViolation(f"a text-only chat became a prompt with {sorted(prompt)}")
        if expected.placeholder_id is not None and expected.placeholder_id in ids:
            raise ContractViolation("a text-only chat's token ids carry the embeddings placeholder")
        return
    if set(prompt) != MIXED_KEYS:
        raise ContractViolation(f"a chat with embeddings parts became a prompt with {sorted(prompt)}")
    rows, mask = prompt["prompt_embeds"], prompt["prompt_is_token_ids"]
    if not isinstance(mask, list) or any(type(flag) is not bool for flag in mask):
        raise ContractViolation("prompt_is_token_ids is not a list of booleans")
    check_accepted(rows, expected.limits, payload_bytes=None)
    if rows.numel() * rows.element_size() > expected.max_mixed_bytes:
        raise ContractViolation(
            f"accepted {rows.numel() * rows.element_size()} bytes of rows, over {expected.max_mixed_bytes}"
        )
    if not len(ids) == len(mask) == rows.shape[0]:
        raise ContractViolation(f"lengths differ: {len(ids)} ids, {len(mask)} flags, {rows.shape[0]} rows")
    spliced = torch.tensor([not flag for flag in mask], dtype=torch.bool)
    total = sum(int(part.shape[0]) for part in expected.parts)
    if int(spliced.sum()) != total:
        raise ContractViolation(f"{int(spliced.sum())} spliced positions for parts of {total} rows")
    at_placeholder = torch.tensor([token == expected.placeholder_id for token in ids], dtype=torch.bool)
    if not torch.equal(at_placeholder, spliced):
        raise ContractViolation("the mask is not False exactly at the placeholder positions")
    if bool(rows[~spliced].any()):
        raise ContractViolation("token positions carry non-zero rows")
    if not torch.equal(rows[spliced], torch.cat(expected.parts)):
        raise ContractViolation("the spliced rows are not the parts' rows in order")


def modules() -> list[ModuleType]:
    return [
        embeds_backend.request_parsing,
        embeds_backend.chat_messages,
        embeds_backend.chat_prompt,
        *embeds_modules(),
    ]
