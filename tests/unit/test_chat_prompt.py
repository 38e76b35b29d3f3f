"""Server-side templating and the mixed prompt, with a real Hugging Face
tokenizer (trained in a moment on the tiny model's corpus) and the tiny
model's ChatML template."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from embeds_backend.chat_messages import ChatLimits, parse_conversation
from embeds_backend.chat_prompt import ChatTemplating, build_chat_prompt, content_as_parts
from embeds_backend.contract import EMBEDS_PLACEHOLDER, Rule
from embeds_backend.embeds import EmbedsLimits
from embeds_backend.errors import RequestRejected
from tools.models.tiny import CHAT_TEMPLATE, train_tokenizer

HIDDEN = 8
LIMITS = EmbedsLimits(hidden_size=HIDDEN, dtype=torch.float32, max_bytes=1 << 20)
CHAT_LIMITS = ChatLimits(max_messages_bytes=1 << 22, max_messages=16, max_parts=16)


@pytest.fixture(scope="module")
def templating(tmp_path_factory: pytest.TempPathFactory) -> ChatTemplating:
    from transformers import AutoTokenizer

    folder: Path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # What vLLM's renderer does to its tokenizer when prompt embeds are on.
    tokenizer.add_special_tokens({"additional_special_tokens": [EMBEDS_PLACEHOLDER]})
    (placeholder_id,) = tokenizer.encode(EMBEDS_PLACEHOLDER, add_special_tokens=False)
    return ChatTemplating(tokenizer, CHAT_TEMPLATE, placeholder_id)


def b64(tensor: torch.Tensor) -> str:
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def build(
    templating: ChatTemplating,
    messages: list[dict[str, Any]],
    raw: torch.Tensor | None = None,
    parameters: dict[str, Any] | None = None,
    max_tokens: int = 4,
    max_model_len: int = 512,
) -> dict[str, Any]:
    conversation = parse_conversation(
        json.dumps(messages), json.dumps(parameters) if parameters else None, CHAT_LIMITS
    )
    return build_chat_prompt(conversation, raw, templating, LIMITS, max_tokens, max_model_len)


def rejected(rule: str, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(RequestRejected) as caught:
        build(*args, **kwargs)
    assert caught.value.rule == rule, caught.value.message
    return caught.value.message


def test_text_chat_is_the_templated_text_tokenized(templating: ChatTemplating) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world!"}]
    prompt = build(templating, messages)
    expected = templating.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert expected.endswith("<|im_start|>assistant\n")
    assert prompt == {"prompt_token_ids": templating.tokenizer.encode(expected, add_special_tokens=False)}


def test_generation_prompt_and_continue_final_message(templating: ChatTemplating) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The capital"}]
    decode = templating.tokenizer.decode
    plain = decode(
        build(templating, messages, parameters={"add_generation_prompt": False})["prompt_token_ids"]
    )
    assert plain.endswith("The capital<|im_end|>\n")
    continued = decode(
        build(
            templating, messages, parameters={"add_generation_prompt": False, "continue_final_message": True}
        )["prompt_token_ids"]
    )
    assert continued.endswith("The capital")


def test_parts_splice_rows_where_they_stand(templating: ChatTemplating) -> None:
    first, second = torch.randn(3, HIDDEN), torch.randn(2, HIDDEN)
    raw = torch.randn(4, HIDDEN)
    content = [
        {"type": "text", "text": "Hello"},
        {"type": "prompt_embeds", "rows": 1},
        {"type": "prompt_embeds", "data": b64(first)},
        {"type": "text", "text": "world"},
        {"type": "prompt_embeds", "rows": 3},
        {"type": "prompt_embeds", "data": b64(second)},
    ]
    prompt = build(templating, [{"role": "user", "content": content}], raw=raw)
    ids, mask, rows = prompt["prompt_token_ids"], prompt["prompt_is_token_ids"], prompt["prompt_embeds"]
    assert len(ids) == len(mask) == rows.shape[0]
    # Positions taken by rows, in order: raw[0], first, raw[1:4], second.
    spliced = rows[[i for i, is_token in enumerate(mask) if not is_token]]
    assert torch.equal(spliced, torch.cat([raw[:1], first, raw[1:], second]))
    # Token positions carry zero rows and the ids of the template with the
    # parts left out.
    assert not rows[[i for i, is_token in enumerate(mask) if is_token]].any()
    text_only = templating.tokenizer.apply_chat_template(
        [
            {
                "role": "user",
                "content": f"Hello\n{EMBEDS_PLACEHOLDER}\n{EMBEDS_PLACEHOLDER}\nworld\n"
                f"{EMBEDS_PLACEHOLDER}\n{EMBEDS_PLACEHOLDER}",
            }
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    template_ids = [
        t
        for t in templating.tokenizer.encode(text_only, add_special_tokens=False)
        if t != templating.placeholder_id
    ]
    assert [t for t, is_token in zip(ids, mask, strict=True) if is_token] == template_ids


@pytest.mark.parametrize(
    ("content", "raw_rows", "expected"),
    [
        (
            [{"type": "prompt_embeds", "rows": 5}],
            4,
            "takes rows 0..4 of the raw embeddings input, which has 4",
        ),
        ([{"type": "prompt_embeds", "rows": 3}], 4, "rows 3..3 of the raw embeddings input are not taken"),
        ([{"type": "prompt_embeds", "rows": 2}], None, "which has 0 rows"),
        ([{"type": "text", "text": "hi"}], 4, 'no "rows" part'),
    ],
)
def test_rows_must_match_the_raw_input(
    templating: ChatTemplating, content: list[dict[str, Any]], raw_rows: int | None, expected: str
) -> None:
    raw = None if raw_rows is None else torch.randn(raw_rows, HIDDEN)
    assert expected in rejected(Rule.CHAT_ROWS, templating, [{"role": "user", "content": content}], raw=raw)


@pytest.mark.parametrize(
    ("tensor", "rule"),
    [
        (torch.randn(3, HIDDEN + 1), Rule.HIDDEN_SIZE),
        (torch.full((2, HIDDEN), float("nan")), Rule.NOT_FINITE),
        (torch.ones(2, HIDDEN, dtype=torch.int32), Rule.BAD_DTYPE),
        (torch.randn(HIDDEN), Rule.BAD_SHAPE),
    ],
)
def test_each_part_runs_the_embeddings_chain_and_is_named(
    templating: ChatTemplating, tensor: torch.Tensor, rule: str
) -> None:
    content = [{"type": "text", "text": "hi"}, {"type": "prompt_embeds", "data": b64(tensor)}]
    message = rejected(
        rule, templating, [{"role": "system", "content": "x"}, {"role": "user", "content": content}]
    )
    assert message.startswith("messages[1].content[1]: ")


def test_bad_base64_part_is_named(templating: ChatTemplating) -> None:
    content = [{"type": "prompt_embeds", "data": "!" * 200}]
    message = rejected(Rule.BAD_BASE64, templating, [{"role": "user", "content": content}])
    assert message.startswith("messages[0].content[0]: ")


def test_context_counts_template_tokens_and_rows(templating: ChatTemplating) -> None:
    content = [
        {"type": "text", "text": "hi"},
        {"type": "prompt_embeds", "data": b64(torch.randn(40, HIDDEN))},
    ]
    messages = [{"role": "user", "content": content}]
    total = len(build(templating, messages)["prompt_token_ids"])
    assert "exceeds" in rejected(Rule.TOO_LONG, templating, messages, max_tokens=8, max_model_len=total + 7)
    assert (
        len(build(templating, messages, max_tokens=8, max_model_len=total + 8)["prompt_token_ids"]) == total
    )


def test_no_template_and_failing_templates(templating: ChatTemplating) -> None:
    messages = [{"role": "user", "content": "hi"}]
    bare = ChatTemplating(templating.tokenizer, None, templating.placeholder_id)
    assert "no chat template" in rejected(Rule.NO_CHAT_TEMPLATE, bare, messages)
    strict = ChatTemplating(
        templating.tokenizer, "{{ raise_exception('roles must alternate') }}", templating.placeholder_id
    )
    assert "roles must alternate" in rejected(Rule.CHAT_TEMPLATE_FAILED, strict, messages)
    dropping = ChatTemplating(templating.tokenizer, "{{ messages[0]['content'] }}", templating.placeholder_id)
    two_users = [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": [{"type": "prompt_embeds", "data": b64(torch.randn(2, HIDDEN))}]},
    ]
    assert "has 0 places for 1 embeddings parts" in rejected(Rule.CHAT_TEMPLATE_FAILED, dropping, two_users)


def test_template_kwargs_reach_the_template(templating: ChatTemplating) -> None:
    greeting = ChatTemplating(templating.tokenizer, "{{ greeting }} {{ messages[0]['content'] }}", None)
    prompt = build(
        greeting,
        [{"role": "user", "content": "world"}],
        parameters={"chat_template_kwargs": {"greeting": "Hello"}},
    )
    assert templating.tokenizer.decode(prompt["prompt_token_ids"]) == "Hello world"


def test_embeds_parts_need_a_model_with_embeddings_on(templating: ChatTemplating) -> None:
    off = ChatTemplating(templating.tokenizer, CHAT_TEMPLATE, None)
    content = [{"type": "prompt_embeds", "data": b64(torch.randn(2, HIDDEN))}]
    assert "enable_prompt_embeds" in rejected(
        Rule.EMBEDS_DISABLED, off, [{"role": "user", "content": content}]
    )


def test_mixed_prompts_are_bounded_before_allocation(templating: ChatTemplating) -> None:
    content = ["x " * 200, {"type": "prompt_embeds", "data": b64(torch.randn(1, HIDDEN))}]
    messages = [
        {
            "role": "user",
            "content": [c if isinstance(c, dict) else {"type": "text", "text": c} for c in content],
        }
    ]
    conversation = parse_conversation(json.dumps(messages), None, CHAT_LIMITS)
    prompt = build_chat_prompt(conversation, None, templating, LIMITS, 4, 4096)
    size = prompt["prompt_embeds"].numel() * 4
    with pytest.raises(RequestRejected) as caught:
        build_chat_prompt(conversation, None, templating, LIMITS, 4, 4096, max_mixed_bytes=size - 1)
    assert caught.value.rule == Rule.CHAT_LIMIT and "max_mixed_embeds_bytes" in caught.value.message
    assert build_chat_prompt(conversation, None, templating, LIMITS, 4, 4096, max_mixed_bytes=size)


def test_developer_is_system_for_templates_that_do_not_know_it(templating: ChatTemplating) -> None:
    developer = build(templating, [{"role": "developer", "content": "Be brief."}])
    system = build(templating, [{"role": "system", "content": "Be brief."}])
    assert developer == system
    knows = ChatTemplating(
        templating.tokenizer, "{% if messages[0]['role'] == 'developer' %}dev{% endif %}", None
    )
    assert (
        templating.tokenizer.decode(build(knows, [{"role": "developer", "content": "x"}])["prompt_token_ids"])
        == "dev"
    )


PARTS_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}:"
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}\n{% endfor %}"
)


def test_templates_that_loop_over_content_parts_get_parts(templating: ChatTemplating) -> None:
    assert content_as_parts(templating.tokenizer, PARTS_TEMPLATE)
    assert not content_as_parts(templating.tokenizer, CHAT_TEMPLATE)
    assert not content_as_parts(templating.tokenizer, None)
    parts = ChatTemplating(
        templating.tokenizer, PARTS_TEMPLATE, templating.placeholder_id, parts_content=True
    )
    rows = torch.randn(2, HIDDEN)
    content = [{"type": "text", "text": "Hello"}, {"type": "prompt_embeds", "data": b64(rows)}]
    prompt = build(parts, [{"role": "user", "content": content}])
    mask = prompt["prompt_is_token_ids"]
    tokens = [t for t, is_token in zip(prompt["prompt_token_ids"], mask, strict=True) if is_token]
    # Jinja drops the template's final newline.
    assert templating.tokenizer.decode(tokens) == "user:Hello\n"
    assert torch.equal(prompt["prompt_embeds"][[not m for m in prompt["prompt_is_token_ids"]]], rows)
