"""Chat conversations templated on the server, with text and embeddings parts
in one prompt, through the real server. SmolLM2 where the output's meaning
matters: the same conversation must generate the same text however its
content travels (text, raw rows, base64 parts), and as the all-text prompt
templated by the test itself."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from transformers import AutoTokenizer

from tools.infer import grpc_infer, http_generate, make_inputs
from tools.metrics import metric_value
from tools.paths import SMOLLM2_DIR, TINY_MODEL_DIR
from tools.payloads import torch_b64
from tools.server.repository import TINY_CHAT_TEMPLATE
from triton_embeds import AsyncClient, Client
from triton_embeds._text_embeddings import text_to_embeddings
from triton_embeds.cli import main as cli_main
from triton_embeds.protocol import INPUT_TOKENS_OUTPUT, TEXT_OUTPUT

GREEDY = {"temperature": 0, "max_tokens": 16}
SYSTEM = "You are a helpful assistant. Answer in one short sentence."
QUESTION = "What is the capital of France?"
BEFORE, AFTER = "Read the question.", "Answer it."


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(SMOLLM2_DIR)


@pytest.fixture(scope="module")
def question_rows() -> torch.Tensor:
    """The question's own input embeddings, without special tokens: what a
    user's encoder would send in place of the text."""
    return text_to_embeddings(str(SMOLLM2_DIR), QUESTION, add_special_tokens=False).float()


def conversation(*content) -> list[dict]:
    parts = [{"type": "text", "text": c} if isinstance(c, str) else c for c in content]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": parts}]


def rows(n: int) -> dict:
    return {"type": "prompt_embeds", "rows": n}


def data(tensor: torch.Tensor) -> dict:
    return {"type": "prompt_embeds", "data": torch_b64(tensor)}


def chat(model: str, url: str, messages, stream: bool = False, **inputs):
    result = grpc_infer(url, model, make_inputs(messages=messages, sampling=GREEDY, stream=stream, **inputs))
    assert result.error is None, result.error
    return result


@pytest.fixture(scope="module")
def text_chat(grpc_url):
    return chat(
        "smollm2", grpc_url, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    )


def test_text_chat_equals_the_test_templated_prompt(grpc_url, tokenizer, text_chat):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    as_text = grpc_infer(
        grpc_url, "smollm2", make_inputs(text=templated, sampling=GREEDY, exclude_input=True)
    )
    assert as_text.error is None
    assert "Paris" in text_chat.text
    assert text_chat.text == as_text.text
    assert text_chat.prompt_tokens == len(tokenizer(templated, add_special_tokens=False).input_ids)
    assert text_chat.prompt_tokens == as_text.prompt_tokens


def test_content_as_raw_rows_equals_text(grpc_url, question_rows, text_chat):
    result = chat(
        "smollm2", grpc_url, conversation(rows(question_rows.shape[0])), embeds=question_rows.numpy()
    )
    assert result.text == text_chat.text
    assert result.prompt_tokens == text_chat.prompt_tokens


def test_content_as_base64_part_equals_text(grpc_url, question_rows, text_chat):
    result = chat("smollm2", grpc_url, conversation(data(question_rows)))
    assert result.text == text_chat.text
    assert result.prompt_tokens == text_chat.prompt_tokens


def test_mixed_text_and_embeddings_equal_the_all_text_conversation(grpc_url, tokenizer, question_rows):
    all_text = chat("smollm2", grpc_url, conversation(BEFORE, QUESTION, AFTER))
    mixed = chat(
        "smollm2",
        grpc_url,
        conversation(BEFORE, rows(question_rows.shape[0]), AFTER),
        embeds=question_rows.numpy(),
    )
    assert mixed.text == all_text.text and mixed.text
    templated = tokenizer.apply_chat_template(
        conversation_as_text(f"{BEFORE}\n{QUESTION}\n{AFTER}"), tokenize=False, add_generation_prompt=True
    )
    assert mixed.prompt_tokens == len(tokenizer(templated, add_special_tokens=False).input_ids)
    # The same through two parts of rows and a base64 part, split mid-question.
    head, tail = question_rows[:3], question_rows[3:]
    split = chat(
        "smollm2",
        grpc_url,
        conversation(BEFORE, rows(2), rows(1), data(tail), AFTER),
        embeds=head.numpy(),
    )
    # Parts are joined by newlines, so a question split over parts is a
    # different prompt; it must still be well-formed and counted in full.
    assert split.prompt_tokens == mixed.prompt_tokens + 2


def conversation_as_text(user: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def test_streaming_equals_non_streaming(grpc_url, question_rows):
    messages = conversation(BEFORE, rows(question_rows.shape[0]), AFTER)
    whole = chat("smollm2", grpc_url, messages, embeds=question_rows.numpy())
    streamed = chat("smollm2", grpc_url, messages, stream=True, embeds=question_rows.numpy())
    assert len(streamed.chunks) > 1
    assert streamed.text == whole.text
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        whole.prompt_tokens,
        whole.completion_tokens,
    )


def test_http_generate_takes_a_conversation_with_a_base64_part(http_url, question_rows, text_chat):
    body = {
        "messages": json.dumps(conversation(data(question_rows))),
        "sampling_parameters": json.dumps(GREEDY),
    }
    (event,) = http_generate(http_url, "smollm2", body)
    assert event[TEXT_OUTPUT] == text_chat.text
    assert event[INPUT_TOKENS_OUTPUT] == text_chat.prompt_tokens


def test_continue_final_message_continues_the_assistant(grpc_url):
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "The capital of France is"},
    ]
    result = chat(
        "smollm2",
        grpc_url,
        messages,
        chat_parameters={"add_generation_prompt": False, "continue_final_message": True},
    )
    assert result.text.strip().startswith("Paris")


def test_model_json_chat_template_replaces_the_tokenizers(grpc_url):
    """tiny's model.json sets a template that puts a fixed preamble first."""
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    messages = [{"role": "user", "content": "Hello world"}]
    result = chat("tiny", grpc_url, messages)
    own = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    override = tokenizer.apply_chat_template(
        messages, chat_template=TINY_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
    )
    assert own != override
    assert result.prompt_tokens == len(tokenizer(override, add_special_tokens=False).input_ids)


def test_a_bad_part_is_named_and_costs_nothing_else(grpc_url, question_rows, text_chat):
    wrong = torch.randn(4, 100)
    result = grpc_infer(
        grpc_url, "smollm2", make_inputs(messages=conversation(BEFORE, data(wrong)), sampling=GREEDY)
    )
    assert result.error is not None and result.error.startswith(
        "[rejected:hidden_size] messages[1].content[1]: prompt_embeds hidden size 100"
    )
    assert chat("smollm2", grpc_url, conversation(data(question_rows))).text == text_chat.text


def test_chat_requests_are_counted_by_kind(grpc_url, metrics_url):
    before = metric_value(metrics_url, "embeds_requests_total", model="tiny", kind="chat")
    chat("tiny", grpc_url, [{"role": "user", "content": "hi"}])
    assert metric_value(metrics_url, "embeds_requests_total", model="tiny", kind="chat") == before + 1


# -- the client ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_chat_with_a_tensor_part_equals_text(grpc_url, http_url, question_rows, text_chat, protocol):
    """Over gRPC the tensor travels as raw rows, over HTTP as a base64 part."""
    url = grpc_url if protocol == "grpc" else f"http://{http_url}"
    with Client(url) as client:
        completion = client.chat.completions.create(
            model="smollm2",
            messages=conversation({"type": "prompt_embeds", "data": question_rows}),
            max_tokens=GREEDY["max_tokens"],
            temperature=0,
        )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == text_chat.text
    assert completion.usage.prompt_tokens == text_chat.prompt_tokens
    assert completion.usage.completion_tokens == text_chat.completion_tokens


def test_async_client_chat_streams_chunks_and_usage(grpc_url, question_rows, text_chat):
    async def scenario():
        async with AsyncClient(grpc_url) as client:
            stream = await client.chat.completions.create(
                model="smollm2",
                messages=conversation({"type": "prompt_embeds", "data": question_rows.numpy()}),
                max_tokens=GREEDY["max_tokens"],
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(scenario())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert content == text_chat.text
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == text_chat.prompt_tokens


def test_cli_chat_mode(grpc_url, text_chat, capsys):
    code = cli_main(
        [
            "--url", grpc_url, "--model", "smollm2", "--chat", "--system", SYSTEM,
            "--max-tokens", str(GREEDY["max_tokens"]), "--temperature", "0", QUESTION,
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    assert out == text_chat.text + "\n"
    assert f"[{text_chat.prompt_tokens} prompt + {text_chat.completion_tokens} completion tokens]" in err
