"""The triton_embeds client against the real server, over gRPC and HTTP,
sync and async."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

import triton_embeds as te
from tools.infer import grpc_infer, make_inputs
from tools.metrics import metric_value, wait_for_metric
from tools.paths import SMOLLM2_DIR
from tools.payloads import saved
from tools.server.launcher import free_port
from triton_embeds.cli import main as cli_main
from triton_embeds.protocol import Rule

HIDDEN = 128
SEQ = 6
GREEDY = {"temperature": 0, "max_tokens": 8}
PROTOCOLS = ("grpc", "http")
# smollm2 makes ~10 tokens/s on the test machine: a request this long is
# certainly still running when it is cancelled.
LONG = {"max_tokens": 1000, "extra_body": {"ignore_eos": True}}


def exact_embeds(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Multiples of 1/64 in [-2, 2): exact in fp32, fp16 and bf16 alike, so
    every dtype carries the same values and must give the same tokens."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-128, 128, shape, generator=generator).to(torch.float32) / 64


def url_for(protocol: str, grpc_url: str, http_url: str) -> str:
    return grpc_url if protocol == "grpc" else f"http://{http_url}"


@pytest.fixture(scope="module")
def clients(grpc_url, http_url):
    made = {protocol: te.Client(url_for(protocol, grpc_url, http_url)) for protocol in PROTOCOLS}
    yield made
    for client in made.values():
        client.close()


@pytest.fixture(params=PROTOCOLS)
def protocol(request) -> str:
    return request.param


@pytest.fixture
def client(clients, protocol) -> te.Client:
    return clients[protocol]


@pytest.fixture(scope="module")
def embeds() -> torch.Tensor:
    return exact_embeds((SEQ, HIDDEN))


@pytest.fixture(scope="module")
def baseline(grpc_url, embeds) -> str:
    """Greedy text for `embeds` through plain tritonclient, as the reference."""
    result = grpc_infer(grpc_url, "tiny", make_inputs(embeds=embeds.numpy(), sampling=GREEDY))
    assert result.error is None and result.completion_tokens == 8
    return result.text


def greedy(client: te.Client, **kwargs):
    return client.completions.create(model="tiny", **{**GREEDY, **kwargs})


# -- models and text ---------------------------------------------------------


def test_models_list_has_the_served_models(client):
    models = client.models.list()
    assert {"tiny", "tiny_noembeds", "smollm2"} <= {model.id for model in models}
    assert all(model.object == "model" for model in models.data)


def test_text_completion_matches_tritonclient(client, grpc_url):
    completion = greedy(client, prompt="Hello world")
    reference = grpc_infer(
        grpc_url, "tiny", make_inputs(text="Hello world", exclude_input=True, sampling=GREEDY)
    )
    assert completion.object == "text_completion" and completion.model == "tiny"
    assert completion.choices[0].text == reference.text
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == reference.prompt_tokens
    assert completion.usage.completion_tokens == 8
    assert completion.usage.total_tokens == reference.prompt_tokens + 8


def test_stop_and_extra_sampling_keys_reach_the_engine(client):
    full = greedy(client, prompt="Hello world", max_tokens=12)
    forced = client.completions.create(
        model="tiny",
        prompt="Hello world",
        max_tokens=12,
        temperature=0,
        extra_body={"ignore_eos": True, "min_tokens": 12},
    )
    assert forced.usage.completion_tokens == 12 and forced.choices[0].finish_reason == "length"
    assert len(full.choices[0].text) >= 6
    stop = full.choices[0].text[3:6]
    stopped = greedy(client, prompt="Hello world", max_tokens=12, stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == full.choices[0].text[: full.choices[0].text.index(stop)]


# -- prompt embeddings ---------------------------------------------------------


@pytest.mark.parametrize("form", ["torch", "numpy", "base64", "bytes", "batch_of_one", "list_of_one"])
def test_every_embeds_form_gives_the_same_greedy_text(client, embeds, baseline, form):
    value = {
        "torch": embeds,
        "numpy": embeds.numpy(),
        "base64": te.encode_prompt_embeds(embeds),
        "bytes": saved(embeds),
        "batch_of_one": embeds[None],
        "list_of_one": [embeds.numpy()],
    }[form]
    completion = greedy(client, prompt_embeds=value)
    assert [choice.text for choice in completion.choices] == [baseline]
    assert completion.usage.prompt_tokens == SEQ
    assert completion.usage.completion_tokens == 8


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_give_the_same_greedy_text(clients, embeds, baseline, dtype):
    """fp16/bf16 go as the model's half-size inputs over gRPC, as base64 over HTTP."""
    for client in clients.values():
        assert greedy(client, prompt_embeds=embeds.to(dtype)).choices[0].text == baseline


def test_base64_transport_over_grpc(grpc_url, embeds, baseline, metrics_url):
    before = metric_value(metrics_url, "embeds_requests_total", model="tiny", kind="embeds_base64")
    with te.Client(grpc_url, transport="base64") as client:
        assert greedy(client, prompt_embeds=embeds).choices[0].text == baseline
    after = metric_value(metrics_url, "embeds_requests_total", model="tiny", kind="embeds_base64")
    assert after == before + 1


def test_binary_transport_sends_raw_tensors(clients, embeds, metrics_url):
    before = metric_value(metrics_url, "embeds_requests_total", model="tiny", kind="embeds_tensor")
    greedy(clients["grpc"], prompt_embeds=embeds)
    greedy(clients["grpc"], prompt_embeds=embeds.to(torch.bfloat16))
    after = metric_value(metrics_url, "embeds_requests_total", model="tiny", kind="embeds_tensor")
    assert after == before + 2


def test_batch_gives_one_choice_per_prompt_in_order(client):
    batch = exact_embeds((3, SEQ, HIDDEN), seed=1)
    singles = [greedy(client, prompt_embeds=batch[i]).choices[0].text for i in range(3)]
    completion = greedy(client, prompt_embeds=batch)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert [choice.text for choice in completion.choices] == singles
    assert completion.usage.prompt_tokens == 3 * SEQ
    assert completion.usage.completion_tokens == 3 * 8
    mixed = greedy(client, prompt_embeds=[batch[0], te.encode_prompt_embeds(batch[1]), saved(batch[2])])
    assert [choice.text for choice in mixed.choices] == singles


def test_vllm_docs_example_runs(client, embeds, baseline):
    """The call from vLLM's and Dynamo's prompt-embeddings docs, unchanged."""
    encoded = te.encode_prompt_embeds(embeds)
    completion = client.completions.create(
        model="tiny", prompt="", max_tokens=8, temperature=0, extra_body={"prompt_embeds": encoded}
    )
    assert completion.choices[0].text == baseline
    assert completion.usage.prompt_tokens == SEQ


# -- streaming -----------------------------------------------------------------


def test_stream_concatenates_to_the_non_streamed_text(client, embeds, baseline):
    chunks = list(greedy(client, prompt_embeds=embeds, stream=True))
    assert len(chunks) > 1
    assert "".join(chunk.choices[0].text for chunk in chunks) == baseline
    assert [chunk.choices[0].finish_reason for chunk in chunks][-2:] == [None, "length"]
    assert all(chunk.usage is None and chunk.id == chunks[0].id for chunk in chunks)


def test_stream_include_usage_ends_with_a_usage_chunk(client):
    batch = exact_embeds((2, SEQ, HIDDEN), seed=2)
    full = greedy(client, prompt_embeds=batch)
    chunks = list(greedy(client, prompt_embeds=batch, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 2 * SEQ
    assert chunks[-1].usage.completion_tokens == 2 * 8
    assert chunks[-1].usage.total_tokens == 2 * SEQ + 16
    for index in (0, 1):
        text = "".join(c.choices[0].text for c in chunks[:-1] if c.choices[0].index == index)
        assert text == full.choices[index].text


# -- cancellation --------------------------------------------------------------


def wait_for_unfinished(metrics_url: str, done: Callable[[float], bool]) -> float:
    """smollm2's unfinished engine requests: a gauge the model refreshes
    every cancellation poll (50 ms), so it may lag a request by that much."""
    return wait_for_metric(metrics_url, "embeds_engine_unfinished_requests", done, 10, model="smollm2")


def wait_until_running(metrics_url: str) -> float:
    return wait_for_unfinished(metrics_url, lambda value: value >= 1)


def wait_until_idle(metrics_url: str) -> float:
    return wait_for_unfinished(metrics_url, lambda value: value == 0)


def generated_tokens(metrics_url: str) -> float:
    return metric_value(metrics_url, "embeds_generation_tokens_total", model="smollm2")


def test_closing_a_stream_cancels_the_request(client, metrics_url):
    before = generated_tokens(metrics_url)
    stream = client.completions.create(model="smollm2", prompt="Tell me a story.", stream=True, **LONG)
    assert next(stream).choices[0].index == 0
    assert wait_until_running(metrics_url) >= 1
    stream.close()
    assert wait_until_idle(metrics_url) == 0
    assert generated_tokens(metrics_url) - before < LONG["max_tokens"]


def test_breaking_out_of_a_stream_cancels_the_request(client, metrics_url):
    for chunk in client.completions.create(model="smollm2", prompt="Tell me a story.", stream=True, **LONG):
        assert chunk.choices[0].index == 0
        break
    assert wait_until_idle(metrics_url) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_timeout_cancels_the_request(client, metrics_url, stream):
    start = time.monotonic()
    with pytest.raises(te.APITimeoutError):
        result = client.completions.create(model="smollm2", prompt="Hi", stream=stream, timeout=1.0, **LONG)
        list(result) if stream else None
    assert time.monotonic() - start < 8  # the whole generation would take ~100 s
    assert wait_until_idle(metrics_url) == 0


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message, rule",
    [
        (
            {"prompt_embeds": exact_embeds((3, 64))},
            "hidden size 64 does not match the model's hidden size 128",
            Rule.HIDDEN_SIZE,
        ),
        ({"prompt_embeds": torch.full((3, HIDDEN), float("nan"))}, "must be finite", Rule.NOT_FINITE),
        (
            {"prompt_embeds": base64.b64encode(b"tiny").decode()},
            "below the minimum of 100 bytes",
            Rule.EMBEDS_TOO_SMALL,
        ),
        (
            {"prompt_embeds": exact_embeds((500, HIDDEN))},
            "exceeds the model's context length of 512",
            Rule.TOO_LONG,
        ),
        (
            {"prompt": "Hi", "extra_body": {"bogus": 1}},
            "unknown sampling parameter 'bogus'",
            Rule.BAD_SAMPLING,
        ),
        ({"prompt": "Hi", "top_p": 2.0}, "top_p=2.0 must be in (0, 1]", Rule.BAD_SAMPLING),
    ],
    ids=["hidden_size", "not_finite", "too_small", "too_long", "unknown_key", "top_p"],
)
def test_server_rejections_are_bad_request_errors(client, kwargs, message, rule):
    with pytest.raises(te.BadRequestError) as caught:
        client.completions.create(model="tiny", max_tokens=16, **kwargs)
    assert message in caught.value.message
    assert caught.value.status_code == 400
    # The rule comes from the server's marker, over gRPC streams and HTTP alike.
    assert caught.value.code == rule


def test_a_rejected_stream_raises_from_create(client):
    """As in openai-python: create(stream=True) itself raises, before any iteration."""
    with pytest.raises(te.BadRequestError, match="hidden size 64"):
        client.completions.create(model="tiny", prompt_embeds=exact_embeds((3, 64)), stream=True)


def test_embeds_to_a_model_without_them_is_a_bad_request(client, embeds):
    with pytest.raises(te.BadRequestError, match="enable_prompt_embeds"):
        client.completions.create(model="tiny_noembeds", prompt_embeds=embeds, max_tokens=4)


@pytest.mark.parametrize("prompt", ["text", "embeds"])
def test_unknown_model_is_not_found(client, embeds, prompt):
    arguments = {"prompt": "Hi"} if prompt == "text" else {"prompt_embeds": embeds}
    with pytest.raises(te.NotFoundError, match="no_such_model"):
        client.completions.create(model="no_such_model", **arguments)


def test_unreachable_server_is_a_connection_error(protocol):
    port = free_port()  # nothing listens on it
    url = f"localhost:{port}" if protocol == "grpc" else f"http://localhost:{port}"
    with te.Client(url, timeout=10) as client:
        start = time.monotonic()
        with pytest.raises(te.APIConnectionError) as caught:
            client.completions.create(model="tiny", prompt="Hi")
        assert not isinstance(caught.value, te.APITimeoutError)
        with pytest.raises(te.APIConnectionError):
            client.models.list()
        assert time.monotonic() - start < 5


# -- async client ----------------------------------------------------------------


def test_async_client_matches_the_sync_one(clients, protocol, grpc_url, http_url, embeds, baseline):
    batch = exact_embeds((3, SEQ, HIDDEN), seed=1)
    expected_batch = [choice.text for choice in greedy(clients[protocol], prompt_embeds=batch).choices]

    async def scenario():
        async with te.AsyncClient(url_for(protocol, grpc_url, http_url)) as client:
            models = await client.models.list()
            single = await client.completions.create(model="tiny", prompt_embeds=embeds, **GREEDY)
            many = await client.completions.create(model="tiny", prompt_embeds=batch, **GREEDY)
            stream = await client.completions.create(
                model="tiny",
                prompt_embeds=embeds,
                stream=True,
                stream_options={"include_usage": True},
                **GREEDY,
            )
            chunks = [chunk async for chunk in stream]
            return models, single, many, chunks

    models, single, many, chunks = asyncio.run(scenario())
    assert "tiny" in [model.id for model in models]
    assert single.choices[0].text == baseline and single.usage.prompt_tokens == SEQ
    assert [choice.text for choice in many.choices] == expected_batch
    assert "".join(chunk.choices[0].text for chunk in chunks[:-1]) == baseline
    assert chunks[-1].usage.completion_tokens == 8


def test_async_stream_close_cancels_the_request(clients, protocol, grpc_url, http_url, metrics_url):
    async def scenario():
        async with te.AsyncClient(url_for(protocol, grpc_url, http_url)) as client:
            stream = await client.completions.create(
                model="smollm2", prompt="Tell me a story.", stream=True, **LONG
            )
            async with stream:
                first = await stream.__anext__()
                running = await asyncio.to_thread(wait_until_running, metrics_url)
            return first, running

    first, running = asyncio.run(scenario())
    assert first.choices[0].index == 0 and running >= 1
    assert wait_until_idle(metrics_url) == 0


def test_async_errors_are_the_same_classes(protocol, grpc_url, http_url):
    async def scenario():
        async with te.AsyncClient(url_for(protocol, grpc_url, http_url)) as client:
            with pytest.raises(te.BadRequestError, match="hidden size 64"):
                await client.completions.create(model="tiny", prompt_embeds=np.zeros((3, 64), np.float32))
            with pytest.raises(te.NotFoundError):
                await client.completions.create(model="no_such_model", prompt="Hi")

    asyncio.run(scenario())


# -- helpers and CLI -------------------------------------------------------------


def test_embeds_shapes_and_dtypes_checked_before_sending(clients):
    client = clients["grpc"]
    with pytest.raises(ValueError, match="shape"):
        client.completions.create(model="tiny", prompt_embeds=torch.zeros(1, 1, 2, HIDDEN))
    with pytest.raises(ValueError, match="floating point"):
        client.completions.create(model="tiny", prompt_embeds=torch.zeros(2, HIDDEN, dtype=torch.int64))
    with pytest.raises(ValueError, match="base64"):
        te.Client("http://localhost:1", transport="binary")


@pytest.mark.smollm2
def test_text_to_embeddings_generates_like_the_text(clients):
    prompt = "The capital of France is"
    embeddings = te.text_to_embeddings(str(SMOLLM2_DIR), prompt)
    assert embeddings.dtype == torch.float32 and embeddings.shape[1] == 576
    client = clients["grpc"]
    from_text = client.completions.create(model="smollm2", prompt=prompt, max_tokens=8, temperature=0)
    from_embeds = client.completions.create(
        model="smollm2", prompt_embeds=embeddings, max_tokens=8, temperature=0
    )
    assert from_embeds.choices[0].text == from_text.choices[0].text
    assert from_embeds.usage.prompt_tokens == from_text.usage.prompt_tokens == embeddings.shape[0]


def test_cli_streams_text_and_embeddings(grpc_url, http_url, embeds, baseline, tmp_path, capsys):
    path = tmp_path / "prompt.pt"
    torch.save(embeds, path)
    assert (
        cli_main(
            [
                "--url",
                grpc_url,
                "--model",
                "tiny",
                "--embeds",
                str(path),
                "--max-tokens",
                "8",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out == baseline + "\n"
    assert f"[{SEQ} prompt + 8 completion tokens]" in err
    assert (
        cli_main(
            [
                "--url",
                f"http://{http_url}",
                "--model",
                "tiny",
                "--no-stream",
                "--embeds",
                str(path),
                "--max-tokens",
                "8",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == baseline + "\n"
    assert cli_main(["--url", grpc_url, "--model", "no_such_model", "Hi"]) == 1
    assert "NotFoundError" in capsys.readouterr().err
