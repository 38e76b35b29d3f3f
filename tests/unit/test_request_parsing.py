"""Which prompt a request carries, and the conflicts between prompt inputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from embeds_backend.contract import (
    CHAT_PARAMETERS_INPUT,
    EMBEDS_BASE64_INPUT,
    EMBEDS_FP32_INPUT,
    EMBEDS_PLACEHOLDER,
    MESSAGES_INPUT,
    TEXT_INPUT,
    Rule,
)
from embeds_backend.errors import RequestRejected
from embeds_backend.request_parsing import PromptKind, parse_request

MESSAGES = b'[{"role": "user", "content": "hi"}]'


def rejected(inputs: dict[str, Any], embeds_enabled: bool = True) -> RequestRejected:
    with pytest.raises(RequestRejected) as caught:
        parse_request(inputs, embeds_enabled)
    return caught.value


def test_messages_make_a_chat_request_with_an_optional_raw_tensor() -> None:
    rows = torch.zeros(3, 4)
    parsed = parse_request(
        {MESSAGES_INPUT: MESSAGES, EMBEDS_FP32_INPUT: rows, CHAT_PARAMETERS_INPUT: b"{}"}, True
    )
    assert parsed.kind is PromptKind.CHAT
    assert parsed.messages == MESSAGES and parsed.chat_parameters == "{}"
    assert parsed.embeds_tensor is rows


@pytest.mark.parametrize(
    ("extra", "named"),
    [({TEXT_INPUT: b"hi"}, TEXT_INPUT), ({EMBEDS_BASE64_INPUT: b"QUJD"}, EMBEDS_BASE64_INPUT)],
)
def test_messages_are_the_whole_prompt(extra: dict[str, Any], named: str) -> None:
    error = rejected({MESSAGES_INPUT: MESSAGES, **extra})
    assert error.rule == Rule.PROMPT_CONFLICT and named in error.message


def test_chat_parameters_need_messages() -> None:
    error = rejected({TEXT_INPUT: b"hi", CHAT_PARAMETERS_INPUT: b"{}"})
    assert error.rule == Rule.PROMPT_CONFLICT


def test_raw_rows_for_chat_need_embeddings_on() -> None:
    error = rejected({MESSAGES_INPUT: MESSAGES, EMBEDS_FP32_INPUT: torch.zeros(1, 4)}, embeds_enabled=False)
    assert error.rule == Rule.EMBEDS_DISABLED


def test_text_may_not_carry_the_placeholder_when_embeddings_are_on() -> None:
    text = f"a {EMBEDS_PLACEHOLDER} b".encode()
    assert rejected({TEXT_INPUT: text}).rule == Rule.RESERVED_PLACEHOLDER
    # Without embeddings the tokenizer has no such token: it is plain text.
    assert parse_request({TEXT_INPUT: text}, embeds_enabled=False).text == text.decode()
    # Text beside embeddings is never used, so never checked.
    parsed = parse_request({TEXT_INPUT: text, EMBEDS_FP32_INPUT: torch.zeros(1, 4)}, True)
    assert parsed.kind is PromptKind.EMBEDS_TENSOR
