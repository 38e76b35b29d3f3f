"""The checks on a chat conversation and its chat_parameters, before any
embeddings are decoded or any template rendered."""

from __future__ import annotations

import json
from typing import Any

import pytest

from embeds_backend.chat_messages import (
    ChatLimits,
    EmbedsPart,
    TextPart,
    message_text,
    parse_chat_parameters,
    parse_conversation,
)
from embeds_backend.contract import EMBEDS_PLACEHOLDER, Rule
from embeds_backend.errors import RequestRejected

LIMITS = ChatLimits(max_messages_bytes=4096, max_messages=4, max_parts=6)


def parse(messages: Any, parameters: str | None = None, limits: ChatLimits = LIMITS):
    raw = messages if isinstance(messages, (str, bytes)) else json.dumps(messages)
    return parse_conversation(raw, parameters, limits)


def rejected(rule: str, messages: Any, parameters: str | None = None, limits: ChatLimits = LIMITS) -> str:
    with pytest.raises(RequestRejected) as caught:
        parse(messages, parameters, limits)
    assert caught.value.rule == rule, caught.value.message
    return caught.value.message


def test_string_and_part_contents_keep_their_order() -> None:
    conversation = parse(
        [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Summarise:"},
                    {"type": "prompt_embeds", "rows": 3},
                    {"type": "prompt_embeds", "data": "QUJD"},
                    {"type": "text", "text": "in one line"},
                ],
                "name": "ann",
            },
        ]
    )
    system, user = conversation.messages
    assert system.parts == (TextPart("Be brief."),)
    assert user.name == "ann"
    assert [type(part) for part in user.parts] == [TextPart, EmbedsPart, EmbedsPart, TextPart]
    assert conversation.embeds_parts == [
        EmbedsPart("messages[1].content[1]", rows=3),
        EmbedsPart("messages[1].content[2]", data="QUJD"),
    ]
    assert message_text(user, "<P>") == "Summarise:\n<P>\n<P>\nin one line"
    assert conversation.parameters.add_generation_prompt is True


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ("[{", "not valid JSON"),
        (b'[{"role": "user", "content": "\xff"}]', "not valid JSON"),
        ("[" * 4000, "not valid JSON"),
        ("{}", "non-empty JSON array"),
        ("[]", "non-empty JSON array"),
        ([1], "messages[0] must be an object"),
        ([{"role": "wizard", "content": "hi"}], 'messages[0].role is "wizard"'),
        ([{"content": "hi"}], "messages[0].role is null"),
        ([{"role": "user", "content": "hi", "tool_calls": []}], "unsupported keys ['tool_calls']"),
        ([{"role": "user", "content": 5}], "messages[0].content must be a string or a list"),
        ([{"role": "user", "content": None}], "messages[0].content must be a string or a list"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], 'type "image_url"'),
        ([{"role": "user", "content": ["hi"]}], "messages[0].content[0] has type null"),
        ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text must be a string"),
        ([{"role": "user", "content": [{"type": "prompt_embeds"}]}], "exactly one of"),
        (
            [{"role": "user", "content": [{"type": "prompt_embeds", "data": "QUJD", "rows": 2}]}],
            "exactly one of",
        ),
        (
            [{"role": "user", "content": [{"type": "prompt_embeds", "rows": 0}]}],
            "positive integer below 2**31, got 0",
        ),
        (
            [{"role": "user", "content": [{"type": "prompt_embeds", "rows": True}]}],
            "positive integer below 2**31, got true",
        ),
        ([{"role": "user", "content": [{"type": "prompt_embeds", "data": 7}]}], "must be a non-empty string"),
        ([{"role": "user", "content": "hi", "name": 3}], "messages[0].name must be a string"),
        ([{"role": "user", "content": [{"type": "prompt_embeds", "rows": 2**31}]}], "below 2**31"),
        ('[{"role": "user", "content": "\\ud800"}]', "messages[0].content holds a lone UTF-16 surrogate"),
        ('[{"role": "user", "content": "hi", "name": "\\udfff"}]', "messages[0].name holds a lone"),
    ],
)
def test_malformed_conversations_are_named(messages: Any, expected: str) -> None:
    assert expected in rejected(Rule.BAD_MESSAGES, messages)


def test_limits_on_size_messages_and_parts() -> None:
    one = {"role": "user", "content": "hi"}
    assert "over this model's limit of 4096" in rejected(
        Rule.CHAT_LIMIT, [{"role": "user", "content": "x" * 5000}]
    )
    assert "5 messages" in rejected(Rule.CHAT_LIMIT, [one] * 5)
    parts = [{"type": "text", "text": "a"}] * 4
    assert "8 content parts" in rejected(Rule.CHAT_LIMIT, [{"role": "user", "content": parts}] * 2)
    assert len(parse([one] * 4).messages) == 4


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": f"say {EMBEDS_PLACEHOLDER} now"}],
        [{"role": "user", "content": [{"type": "text", "text": EMBEDS_PLACEHOLDER}]}],
        [{"role": "user", "content": "hi", "name": EMBEDS_PLACEHOLDER}],
    ],
)
def test_text_may_not_carry_the_reserved_placeholder(messages: Any) -> None:
    assert "reserved" in rejected(Rule.RESERVED_PLACEHOLDER, messages)


def test_chat_parameters() -> None:
    parameters = parse_chat_parameters(
        json.dumps(
            {"add_generation_prompt": False, "continue_final_message": True, "chat_template_kwargs": {"x": 1}}
        )
    )
    assert (parameters.add_generation_prompt, parameters.continue_final_message) == (False, True)
    assert parameters.chat_template_kwargs == {"x": 1}
    assert parse_chat_parameters(None) == parse_chat_parameters("") == parse_chat_parameters("{}")


@pytest.mark.parametrize(
    ("text", "rule", "expected"),
    [
        ("[", Rule.BAD_CHAT_PARAMETERS, "not valid JSON"),
        ("[]", Rule.BAD_CHAT_PARAMETERS, "must be a JSON object"),
        ('{"tools": []}', Rule.BAD_CHAT_PARAMETERS, "unknown chat_parameters keys ['tools']"),
        ('{"add_generation_prompt": "yes"}', Rule.BAD_CHAT_PARAMETERS, "must be true or false"),
        ('{"chat_template_kwargs": []}', Rule.BAD_CHAT_PARAMETERS, "must be a JSON object"),
        ('{"chat_template_kwargs": {"messages": []}}', Rule.BAD_CHAT_PARAMETERS, "may not set ['messages']"),
        ('{"continue_final_message": true}', Rule.BAD_CHAT_PARAMETERS, "add_generation_prompt: false"),
        (
            json.dumps({"chat_template_kwargs": {"x": [EMBEDS_PLACEHOLDER]}}),
            Rule.RESERVED_PLACEHOLDER,
            "chat_template_kwargs.x[0] contains",
        ),
        # Escaped in the JSON text, the placeholder is still found.
        ('{"chat_template_kwargs": {"x": "\\u003cprompt_embeds>"}}', Rule.RESERVED_PLACEHOLDER, "reserved"),
        ('{"chat_template_kwargs": {"\\ud800": 1}}', Rule.BAD_CHAT_PARAMETERS, "lone UTF-16 surrogate"),
    ],
)
def test_bad_chat_parameters(text: str, rule: str, expected: str) -> None:
    with pytest.raises(RequestRejected) as caught:
        parse_chat_parameters(text)
    assert caught.value.rule == rule
    assert expected in caught.value.message
