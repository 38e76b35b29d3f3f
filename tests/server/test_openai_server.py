"""The OpenAI-compatible HTTP server, through the official `openai` SDK (sync
and async), curl and raw HTTP, in front of the session's real tritonserver:
the peers' documented calls with only base_url changed, the API's wire
format, its errors, and hostile HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import socket
import subprocess

import httpx
import openai
import pytest
import torch
from openai import AsyncOpenAI, OpenAI

from tools.metrics import metric_value, wait_for_metric
from tools.paths import SMOLLM2_DIR
from tools.server.openai_launcher import OpenAIServer
from tools.server.repository import TINY_ADAPTER
from triton_embeds._text_embeddings import text_to_embeddings

SMOLLM2_HIDDEN = 576


@pytest.fixture(scope="module")
def api(server, tmp_path_factory) -> OpenAIServer:
    log = tmp_path_factory.mktemp("openai") / "openai_server.log"
    with OpenAIServer((server.grpc_url,), log_path=log) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(api) -> OpenAI:
    return OpenAI(base_url=api.base_url, api_key="unused", max_retries=0)


def b64_of(tensor: torch.Tensor) -> str:
    """What vLLM's and Dynamo's docs send: base64 of torch.save bytes."""
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    return base64.b64encode(buffer.getvalue()).decode()


# -- the documented calls, with only base_url and model changed -----------------------------


def test_dynamo_quick_start(sdk):
    """Dynamo's example: a random (10, hidden) float32 tensor, prompt=""."""
    embeds = torch.randn(10, SMOLLM2_HIDDEN, dtype=torch.float32)
    completion = sdk.completions.create(
        model="smollm2", prompt="", max_tokens=10, extra_body={"prompt_embeds": b64_of(embeds)}
    )
    assert completion.usage.prompt_tokens == 10
    assert completion.choices[0].text and completion.usage.completion_tokens == 10
    streamed = sdk.completions.create(
        model="smollm2", prompt="", max_tokens=10, stream=True, extra_body={"prompt_embeds": b64_of(embeds)}
    )
    pieces = [chunk.choices[0].text for chunk in streamed if chunk.choices]
    assert "".join(pieces)


@pytest.fixture(scope="module")
def templated_chat() -> tuple[str, torch.Tensor]:
    """vLLM's online example: a chat templated with the model's tokenizer,
    its input embeddings from the model's own embedding table."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(SMOLLM2_DIR))
    chat = [{"role": "user", "content": "Please tell me about the capital of France."}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return text, text_to_embeddings(str(SMOLLM2_DIR), text)


def test_vllm_online_example_equals_the_text_prompt(sdk, templated_chat):
    text, embeds = templated_chat
    from_embeds = sdk.completions.create(
        model="smollm2",
        prompt="",
        max_tokens=5,
        temperature=0.0,
        extra_body={"prompt_embeds": b64_of(embeds)},
    )
    from_text = sdk.completions.create(model="smollm2", prompt=text, max_tokens=5, temperature=0.0)
    assert from_embeds.choices[0].text == from_text.choices[0].text
    assert from_embeds.usage.prompt_tokens == from_text.usage.prompt_tokens


# -- completions semantics -----------------------------------------------------------------


def test_batches_and_mixed_prompts_keep_vllms_order(sdk, templated_chat):
    _, embeds = templated_chat
    greedy = {"model": "smollm2", "max_tokens": 4, "temperature": 0.0}
    alone = sdk.completions.create(prompt="", extra_body={"prompt_embeds": b64_of(embeds)}, **greedy)
    hello = sdk.completions.create(prompt="Hello", **greedy)
    batch = sdk.completions.create(prompt="", extra_body={"prompt_embeds": [b64_of(embeds)] * 2}, **greedy)
    assert [c.index for c in batch.choices] == [0, 1]
    assert [c.text for c in batch.choices] == [alone.choices[0].text] * 2
    mixed = sdk.completions.create(
        prompt=["", "Hello"], extra_body={"prompt_embeds": b64_of(embeds)}, **greedy
    )
    assert [c.text for c in mixed.choices] == [alone.choices[0].text, hello.choices[0].text]
    no_embeds = sdk.completions.create(prompt="Hello", extra_body={"prompt_embeds": []}, **greedy)
    assert no_embeds.choices[0].text == hello.choices[0].text


def test_streaming_equals_non_streaming_per_index(sdk, templated_chat):
    _, embeds = templated_chat
    request = {
        "model": "smollm2",
        "prompt": "",
        "max_tokens": 6,
        "temperature": 0.0,
        "extra_body": {"prompt_embeds": [b64_of(embeds), b64_of(embeds[:5])]},
    }
    whole = sdk.completions.create(**request)
    texts: dict[int, str] = {}
    usage = None
    for chunk in sdk.completions.create(stream=True, stream_options={"include_usage": True}, **request):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
        usage = chunk.usage or usage
    assert texts == {c.index: c.text for c in whole.choices}
    assert usage is not None and usage.model_dump() == whole.usage.model_dump()


def test_logprobs_with_embeddings(sdk, templated_chat):
    _, embeds = templated_chat
    completion = sdk.completions.create(
        model="smollm2", prompt="", max_tokens=4, logprobs=2, extra_body={"prompt_embeds": b64_of(embeds)}
    )
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == 4 and "".join(logprobs.tokens) == completion.choices[0].text
    assert all(2 <= len(top) <= 3 for top in logprobs.top_logprobs)


def test_echo_n_and_vllm_keys(sdk):
    echoed = sdk.completions.create(model="tiny", prompt="hello", max_tokens=3, echo=True)
    assert echoed.choices[0].text.startswith("hello")
    many = sdk.completions.create(
        model="tiny",
        prompt="hello",
        max_tokens=3,
        n=3,
        seed=1,
        temperature=1.0,
        extra_body={"ignore_eos": True},
    )
    assert sorted(c.index for c in many.choices) == [0, 1, 2] and many.usage.completion_tokens == 9
    regex = sdk.completions.create(
        model="tiny", prompt="x", max_tokens=8, extra_body={"structured_outputs": {"regex": "[0-9]{3}"}}
    )
    assert regex.choices[0].text.isdigit() and len(regex.choices[0].text) == 3
    adapted = sdk.completions.create(model=TINY_ADAPTER, prompt="hello", max_tokens=3, temperature=0)
    assert adapted.model == TINY_ADAPTER


# -- chat ------------------------------------------------------------------------------------


def test_chat_with_embeddings_parts_equals_chat_with_the_text(sdk):
    question = "What is the capital of France?"
    as_text = sdk.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=8, temperature=0
    )
    rows = text_to_embeddings(str(SMOLLM2_DIR), question, add_special_tokens=False)
    part = {"type": "prompt_embeds", "data": b64_of(rows)}
    as_embeds = sdk.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": [part]}], max_tokens=8, temperature=0
    )
    assert as_embeds.choices[0].message.content == as_text.choices[0].message.content
    assert as_embeds.usage.prompt_tokens == as_text.usage.prompt_tokens
    chunks = list(
        sdk.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": [part]}],
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == as_text.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == as_text.usage.prompt_tokens


def test_chat_logprobs_and_response_format(sdk):
    reply = sdk.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    assert len(reply.choices[0].logprobs.content) == reply.usage.completion_tokens
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    shaped = sdk.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Is Paris in France? Answer in JSON."}],
        max_tokens=24,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        extra_body={"structured_outputs": {"disable_any_whitespace": True}},
    )
    assert isinstance(json.loads(shaped.choices[0].message.content)["ok"], bool)


def test_async_sdk_streams_and_completes(api):
    async def scenario() -> tuple[str, str]:
        async with AsyncOpenAI(base_url=api.base_url, api_key="unused", max_retries=0) as client:
            whole, stream = await asyncio.gather(
                client.completions.create(model="tiny", prompt="hi", max_tokens=4, temperature=0),
                client.completions.create(
                    model="tiny", prompt="hi", max_tokens=4, temperature=0, stream=True
                ),
            )
            text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
            return whole.choices[0].text, text

    whole, streamed = asyncio.run(scenario())
    assert streamed == whole


# -- models, health, metrics -------------------------------------------------------------------


def test_models_list_adapters_and_unknown_models_are_404(sdk):
    listed = {model.id: model for model in sdk.models.list()}
    assert {"tiny", "smollm2", TINY_ADAPTER} <= set(listed)
    assert listed[TINY_ADAPTER].parent == "tiny"
    assert sdk.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError) as info:
        sdk.completions.create(model="nope", prompt="hi")
    assert info.value.body["code"] == "model_not_found"


def test_health_and_metrics(api, sdk):
    assert api.health() == 200
    sdk.completions.create(model="tiny", prompt="hi", max_tokens=1)
    text = httpx.get(f"{api.url}/metrics").text
    assert 'openai_requests_total{kind="text",route="/v1/completions",status="200"}' in text
    assert "openai_request_seconds_bucket" in text and "openai_requests_in_flight" in text


# -- errors --------------------------------------------------------------------------------------


def test_rejections_carry_the_models_rule_and_message(sdk):
    wrong = torch.randn(4, 100)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.completions.create(model="smollm2", prompt="", extra_body={"prompt_embeds": b64_of(wrong)})
    error = info.value.body
    assert error["code"] == "hidden_size" and "hidden size 100" in error["message"]
    assert error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        sdk.completions.create(model="tiny", prompt="hi", extra_body={"temprature": 0})
    assert "unknown field `temprature`" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        sdk.completions.create(
            model="smollm2",
            prompt="",
            extra_body={"prompt_embeds": b64_of(torch.randn(3, 576)), "prompt_logprobs": 1},
        )
    assert "not compatible with prompt embeds" in info.value.body["message"]


def test_api_key(server, tmp_path):
    with OpenAIServer(
        (server.grpc_url,), extra_args=["--api-key", "sekrit"], log_path=tmp_path / "log"
    ) as keyed:
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=keyed.base_url, api_key="wrong", max_retries=0).models.list()
        good = OpenAI(base_url=keyed.base_url, api_key="sekrit", max_retries=0)
        assert good.completions.create(model="tiny", prompt="hi", max_tokens=1).choices
        assert keyed.health() == 200  # probes need no key


def test_a_body_over_the_limit_is_refused_before_it_is_read(server, tmp_path):
    extra = ["--max-body-bytes", "4096"]
    with OpenAIServer((server.grpc_url,), extra_args=extra, log_path=tmp_path / "log") as small:
        big = json.dumps({"model": "tiny", "prompt": "x" * 10_000}).encode()
        response = httpx.post(f"{small.base_url}/completions", content=big)
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
        # A declared length past the limit is refused with nothing sent after the headers.
        with socket.create_connection(("127.0.0.1", small.port)) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000000\r\n\r\n"
            )
            head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 413")


HOSTILE_BODIES = {
    "malformed_json": b'{"model": "tiny", "prompt": ',
    "not_an_object": b"[1, 2, 3]",
    "wrong_type": b'{"model": "tiny", "prompt": 42}',
    "token_ids": b'{"model": "tiny", "prompt": [1, 2, 3]}',
    "deep_nesting": b'{"model": "tiny", "prompt": "x", "structured_outputs": '
    + b'{"a":' * 5000
    + b"1"
    + b"}" * 5001,
    "huge_array": b'{"model": "tiny", "prompt": [' + b'"a",' * 200_000 + b'"a"]}',
    "invalid_utf8": b'{"model": "tiny", "prompt": "\xff\xfe"}',
    "no_model": b'{"prompt": "hi"}',
    "empty": b"",
    "bad_embeds": b'{"model": "tiny", "prompt": "", "prompt_embeds": "!!!not-base64"}',
    "tools": b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": [{}]}',
    "bad_messages": b'{"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_bodies_get_4xx_and_disturb_nothing(api, sdk, name):
    route = "chat/completions" if b"messages" in HOSTILE_BODIES[name] else "completions"
    response = httpx.post(f"{api.base_url}/{route}", content=HOSTILE_BODIES[name], timeout=60)
    assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:200])
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert sdk.completions.create(model="tiny", prompt="hi", max_tokens=2).choices


def test_lying_content_length_is_a_client_error(api):
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10\r\n\r\n" + b'{"model": "tiny", "prompt": "hello"}'
        )
        head = sock.recv(4096)
    assert head.split(b" ")[1].startswith(b"4")


def test_64_streams_with_disconnects_lose_nothing(api, metrics_url):
    async def one(client: httpx.AsyncClient, leave_early: bool) -> str | None:
        body = {"model": "tiny", "prompt": "hi", "max_tokens": 24, "stream": True, "ignore_eos": True}
        async with client.stream("POST", f"{api.base_url}/completions", json=body) as response:
            assert response.status_code == 200
            lines = []
            async for line in response.aiter_lines():
                if leave_early and line.startswith("data: {"):
                    return None  # leaving the block closes the connection mid-stream
                lines.append(line)
        return "\n".join(lines)

    async def all_of_them() -> list[str | None]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(one(client, i % 2 == 0) for i in range(64)))

    results = asyncio.run(all_of_them())
    finished = [r for r in results if r is not None]
    assert len(finished) == 32
    for events in finished:
        data = [line.removeprefix("data: ") for line in events.splitlines() if line.startswith("data: ")]
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        assert (
            sum(len(c["choices"]) for c in chunks) >= 1
            and chunks[-1]["choices"][0]["finish_reason"] == "length"
        )
    left = wait_for_metric(
        metrics_url, "embeds_engine_unfinished_requests", lambda v: v == 0, 30, model="tiny"
    )
    assert left == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(api):
    body = json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 2})
    out = subprocess.run(
        ["curl", "-sS", f"{api.base_url}/completions", "-H", "Content-Type: application/json", "-d", body],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    completion = json.loads(out)
    assert completion["object"] == "text_completion" and completion["usage"]["completion_tokens"] == 2
    streamed = subprocess.run(
        ["curl", "-sSN", f"{api.base_url}/completions", "-H", "Content-Type: application/json",
         "-d", json.dumps({**json.loads(body), "stream": True})],
        capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    assert streamed.rstrip().endswith("data: [DONE]") and streamed.startswith("data: {")


def test_requests_are_counted_by_kind(api, sdk, metrics_url):
    def count(kind: str) -> float:
        text = httpx.get(f"{api.url}/metrics").text
        prefix = f'openai_requests_total{{kind="{kind}",route="/v1/completions",status="200"}} '
        return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))

    before = count("embeds")
    sdk.completions.create(
        model="tiny", prompt="", max_tokens=1, extra_body={"prompt_embeds": b64_of(torch.randn(2, 128))}
    )
    assert count("embeds") == before + 1
    assert metric_value(metrics_url, "embeds_requests_total", model="tiny", kind="embeds_base64") >= 1


def test_several_workers_share_one_view_of_the_metrics(server, tmp_path):
    extra = ["--workers", "2"]
    with OpenAIServer((server.grpc_url,), extra_args=extra, log_path=tmp_path / "log") as multi:
        client = OpenAI(base_url=multi.base_url, api_key="unused", max_retries=0)
        for _ in range(6):  # spread over both workers
            assert client.completions.create(model="tiny", prompt="hi", max_tokens=1).choices
        text = httpx.get(f"{multi.url}/metrics").text
    prefix = 'openai_requests_total{kind="text",route="/v1/completions",status="200"} '
    assert [float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)] == [
        6.0
    ]
