"""The prompt-embeddings contract through the real server (SPEC.md)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tools.infer import GREEDY, grpc_infer, http_generate, make_inputs
from tools.metrics import metric_value
from tools.paths import SMOLLM2_DIR
from tools.payloads import bf16_exact, torch_b64
from triton_embeds.protocol import EMBEDS_BASE64_INPUT, INPUT_TOKENS_OUTPUT, SAMPLING_INPUT, TEXT_OUTPUT

HIDDEN = 128


@pytest.fixture(scope="module")
def embeds() -> torch.Tensor:
    return bf16_exact((6, HIDDEN))


@pytest.fixture(scope="module")
def baseline(grpc_url, embeds) -> str:
    result = grpc_infer(grpc_url, "tiny", make_inputs(embeds=embeds.numpy(), sampling=GREEDY))
    assert result.error is None and result.completion_tokens == 8
    return result.text


def test_raw_and_base64_embeds_agree(grpc_url, embeds, baseline):
    result = grpc_infer(grpc_url, "tiny", make_inputs(embeds_b64=torch_b64(embeds), sampling=GREEDY))
    assert result.text == baseline
    assert result.prompt_tokens == 6


def test_embeds_take_precedence_over_text(grpc_url, embeds, baseline):
    for text in ("", "Hello world, this text is ignored"):
        result = grpc_infer(grpc_url, "tiny", make_inputs(text=text, embeds=embeds.numpy(), sampling=GREEDY))
        assert result.text == baseline
        assert result.prompt_tokens == 6


def test_batch_dimension_of_one_is_squeezed(grpc_url, embeds, baseline):
    result = grpc_infer(grpc_url, "tiny", make_inputs(embeds_b64=torch_b64(embeds[None]), sampling=GREEDY))
    assert result.text == baseline and result.prompt_tokens == 6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_every_float_dtype_gives_the_same_tokens(grpc_url, embeds, baseline, dtype):
    result = grpc_infer(
        grpc_url, "tiny", make_inputs(embeds_b64=torch_b64(embeds.to(dtype)), sampling=GREEDY)
    )
    assert result.text == baseline


def test_half_precision_tensor_input(grpc_url, embeds, baseline):
    inputs = make_inputs(embeds=embeds.half().numpy(), embeds_name="prompt_embeds_fp16", sampling=GREEDY)
    assert grpc_infer(grpc_url, "tiny", inputs).text == baseline


def test_non_contiguous_tensor_is_valid(grpc_url, embeds, baseline):
    strided = torch.empty((HIDDEN, 6)).t()
    strided.copy_(embeds)
    assert not strided.is_contiguous()
    result = grpc_infer(grpc_url, "tiny", make_inputs(embeds_b64=torch_b64(strided), sampling=GREEDY))
    assert result.text == baseline


def test_streaming_concatenation_equals_non_streaming(grpc_url, embeds, baseline):
    result = grpc_infer(grpc_url, "tiny", make_inputs(embeds=embeds.numpy(), stream=True, sampling=GREEDY))
    assert result.text == baseline
    assert 1 < len(result.chunks) <= 8  # one per step unless coalesced behind a slow client
    assert result.final_flags == 1
    assert result.finish_reason == "length"


def test_max_tokens_is_honoured(grpc_url, embeds):
    for max_tokens in (1, 5, 13):
        result = grpc_infer(
            grpc_url,
            "tiny",
            make_inputs(
                embeds=embeds.numpy(),
                sampling={"temperature": 0, "max_tokens": max_tokens, "ignore_eos": True},
            ),
        )
        assert result.completion_tokens == max_tokens


def test_base64_over_http(http_url, embeds, baseline):
    body = {
        EMBEDS_BASE64_INPUT: torch_b64(embeds),
        SAMPLING_INPUT: '{"temperature": 0, "max_tokens": 8}',
    }
    events = http_generate(http_url, "tiny", body)
    assert events[0][TEXT_OUTPUT] == baseline
    assert events[0][INPUT_TOKENS_OUTPUT] == 6


# -- SmolLM2: embeddings that equal the model's own input embeddings -------------


@pytest.fixture(scope="module")
def smollm2_prompt():
    from safetensors import safe_open
    from transformers import AutoTokenizer

    text = "The capital of France is"
    ids = AutoTokenizer.from_pretrained(SMOLLM2_DIR)(text).input_ids
    with safe_open(str(SMOLLM2_DIR / "model.safetensors"), "pt") as weights:
        table = weights.get_tensor("model.embed_tokens.weight")
    return text, ids, table[ids].float()


def test_own_input_embeddings_reproduce_the_text_output(grpc_url, smollm2_prompt):
    text, ids, embeds = smollm2_prompt
    sampling = {"temperature": 0, "max_tokens": 12}
    from_text = grpc_infer(grpc_url, "smollm2", make_inputs(text=text, exclude_input=True, sampling=sampling))
    from_tensor = grpc_infer(grpc_url, "smollm2", make_inputs(embeds=embeds.numpy(), sampling=sampling))
    from_b64 = grpc_infer(grpc_url, "smollm2", make_inputs(embeds_b64=torch_b64(embeds), sampling=sampling))
    assert "Paris" in from_text.text
    assert from_tensor.text == from_text.text == from_b64.text
    assert from_tensor.prompt_tokens == from_text.prompt_tokens == len(ids)


def test_large_embeds_over_grpc_and_http(grpc_url, http_url):
    sampling = {"temperature": 0, "max_tokens": 2}
    raw = bf16_exact((3000, 576), seed=1)  # 6.9 MB of float32
    as_tensor = grpc_infer(
        grpc_url, "smollm2", make_inputs(embeds=raw.numpy(), sampling=sampling), timeout_s=300
    )
    assert as_tensor.error is None and as_tensor.prompt_tokens == 3000
    wide = bf16_exact((1500, 576), seed=2).double()  # 6.9 MB as float64
    encoded = torch_b64(wide)
    as_b64 = grpc_infer(
        grpc_url, "smollm2", make_inputs(embeds_b64=encoded, sampling=sampling), timeout_s=300
    )
    assert as_b64.error is None and as_b64.prompt_tokens == 1500
    events = http_generate(
        http_url,
        "smollm2",
        {EMBEDS_BASE64_INPUT: encoded, SAMPLING_INPUT: '{"temperature": 0, "max_tokens": 2}'},
        timeout_s=300,
    )
    assert events[0][TEXT_OUTPUT] == as_b64.text
    assert events[0][INPUT_TOKENS_OUTPUT] == 1500


# -- concurrency and cancellation --------------------------------------------------


def test_mixed_concurrent_requests_are_all_correct(grpc_url):
    cases = []
    for i in range(12):
        tensor = bf16_exact((3 + i, HIDDEN), seed=10 + i)
        kind = i % 3
        if kind == 0:
            inputs = make_inputs(text=f"Hello world number {i}", exclude_input=True, sampling=GREEDY)
        elif kind == 1:
            inputs = make_inputs(embeds=tensor.numpy(), stream=True, sampling=GREEDY)
        else:
            inputs = make_inputs(embeds_b64=torch_b64(tensor), sampling=GREEDY)
        cases.append(inputs)
    expected = [grpc_infer(grpc_url, "tiny", inputs).text for inputs in cases]
    with ThreadPoolExecutor(len(cases)) as pool:
        got = list(pool.map(lambda inputs: grpc_infer(grpc_url, "tiny", inputs), cases))
    assert [r.text for r in got] == expected
    assert all(r.completion_tokens == 8 and r.final_flags == 1 for r in got)


def wait_for_no_unfinished(metrics_url: str, model: str, timeout_s: float = 10) -> float:
    deadline = time.monotonic() + timeout_s
    value = -1.0
    while time.monotonic() < deadline:
        value = metric_value(metrics_url, "embeds_engine_unfinished_requests", model=model)
        if value == 0:
            return value
        time.sleep(0.2)
    return value


@pytest.mark.parametrize("stream", [True, False])
def test_cancellation_aborts_the_engine_request(grpc_url, metrics_url, stream):
    """SmolLM2 at ~10 tokens/s on a CPU: 1000 tokens are surely still being
    generated when the client cancels."""
    import queue

    import tritonclient.grpc as grpcclient

    from tools.infer import grpc_inputs

    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(grpc_url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    sampling = {"max_tokens": 1000, "ignore_eos": True}
    inputs = make_inputs(embeds=bf16_exact((4, 576)).numpy(), stream=stream, sampling=sampling)
    client.async_stream_infer("smollm2", grpc_inputs(inputs), enable_empty_final_response=True)
    deadline = time.monotonic() + 30
    while metric_value(metrics_url, "embeds_engine_unfinished_requests", model="smollm2") < 1:
        assert time.monotonic() < deadline, "the request never reached the engine"
        time.sleep(0.1)
    client.stop_stream(cancel_requests=True)
    client.close()
    assert wait_for_no_unfinished(metrics_url, "smollm2") == 0


def test_request_metrics_count_prompt_kinds(grpc_url, metrics_url, embeds):
    before = metric_value(metrics_url, "embeds_requests_total", model="tiny", kind="embeds_base64")
    grpc_infer(grpc_url, "tiny", make_inputs(embeds_b64=torch_b64(embeds), sampling=GREEDY))
    after = metric_value(metrics_url, "embeds_requests_total", model="tiny", kind="embeds_base64")
    assert after == before + 1
    assert metric_value(metrics_url, "embeds_generation_tokens_total", model="tiny") > 0
