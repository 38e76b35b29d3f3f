"""Requests shaped as Triton's vLLM backend's clients and its OpenAI frontend
send them: the return_* inputs, its outputs on every response with its
meaning, `n: 1` and `logprobs` in the sampling parameters."""

from __future__ import annotations

import json
import math

import pytest

from tools.infer import grpc_infer, http_generate, make_inputs
from tools.metrics import metric_value
from tools.paths import SMOLLM2_DIR
from triton_embeds import Client
from triton_embeds._text_embeddings import text_to_embeddings
from triton_embeds.protocol import (
    CUMULATIVE_LOGPROB_OUTPUT,
    FINISH_REASON_OUTPUT,
    INPUT_TOKENS_OUTPUT,
    LOGPROBS_OUTPUT,
    OUTPUT_TOKENS_OUTPUT,
    RETURN_CUMULATIVE_LOGPROB_INPUT,
    RETURN_FINISH_REASON_INPUT,
    RETURN_LOGPROBS_INPUT,
    RETURN_NUM_INPUT_TOKENS_INPUT,
    RETURN_NUM_OUTPUT_TOKENS_INPUT,
    TEXT_OUTPUT,
)

PROMPT = "The capital of France is"
TOP = 3
# The backend's sample client's sampling JSON, strings and all, plus the
# keys its OpenAI frontend adds.
SAMPLING = {"temperature": "0", "top_p": "0.9", "max_tokens": 8, "n": 1, "logprobs": TOP}
EVERY_RETURN = (
    RETURN_FINISH_REASON_INPUT,
    RETURN_CUMULATIVE_LOGPROB_INPUT,
    RETURN_LOGPROBS_INPUT,
    RETURN_NUM_INPUT_TOKENS_INPUT,
    RETURN_NUM_OUTPUT_TOKENS_INPUT,
)
EXTRA_OUTPUTS = {
    FINISH_REASON_OUTPUT,
    CUMULATIVE_LOGPROB_OUTPUT,
    LOGPROBS_OUTPUT,
    INPUT_TOKENS_OUTPUT,
    OUTPUT_TOKENS_OUTPUT,
}


def backend_request(stream: bool, **prompt) -> dict:
    prompt = prompt or {"text": PROMPT}
    return make_inputs(**prompt, sampling=SAMPLING, stream=stream, exclude_input=True, returns=EVERY_RETURN)


@pytest.fixture(scope="module")
def whole(grpc_url):
    result = grpc_infer(grpc_url, "smollm2", backend_request(stream=False))
    assert result.error is None, result.error
    return result


def per_token(outputs: list[dict]) -> list[dict]:
    return [position for response in outputs for position in json.loads(response[LOGPROBS_OUTPUT])]


def test_non_streaming_carries_every_requested_output(whole):
    [response] = whole.outputs
    assert set(response) == {TEXT_OUTPUT} | EXTRA_OUTPUTS
    assert response[FINISH_REASON_OUTPUT] == "length"
    assert response[OUTPUT_TOKENS_OUTPUT] == 8
    positions = json.loads(response[LOGPROBS_OUTPUT])
    assert len(positions) == 8
    assert math.isclose(
        response[CUMULATIVE_LOGPROB_OUTPUT],
        sum(max(entry["logprob"] for entry in position.values()) for position in positions),
        rel_tol=1e-4,
    )


def test_greedy_tokens_are_the_argmax_of_their_top_k(whole):
    for position in per_token(whole.outputs):
        # The chosen token comes first, then the top alternatives (it may be one of them).
        assert TOP <= len(position) <= TOP + 1
        chosen = next(iter(position.values()))
        best = max(position.values(), key=lambda entry: entry["logprob"])
        assert chosen["logprob"] == best["logprob"] and chosen["rank"] == 1, position
    decoded = "".join(next(iter(position.values()))["decoded_token"] for position in per_token(whole.outputs))
    assert decoded == whole.text


def test_streaming_sends_them_on_every_response_as_deltas(grpc_url, whole):
    streamed = grpc_infer(grpc_url, "smollm2", backend_request(stream=True))
    assert streamed.error is None
    assert len(streamed.outputs) > 1
    assert all(set(response) == {TEXT_OUTPUT} | EXTRA_OUTPUTS for response in streamed.outputs)
    assert [r[FINISH_REASON_OUTPUT] for r in streamed.outputs[:-1]] == ["None"] * (len(streamed.outputs) - 1)
    assert streamed.outputs[-1][FINISH_REASON_OUTPUT] == "length"
    assert sum(r[OUTPUT_TOKENS_OUTPUT] for r in streamed.outputs) == 8
    assert all(r[INPUT_TOKENS_OUTPUT] == whole.outputs[0][INPUT_TOKENS_OUTPUT] for r in streamed.outputs)
    assert per_token(streamed.outputs) == per_token(whole.outputs)
    assert streamed.text == whole.text


def test_logprobs_from_embeddings_equal_those_from_text(grpc_url, whole):
    rows = text_to_embeddings(str(SMOLLM2_DIR), PROMPT).float()
    from_embeds = grpc_infer(grpc_url, "smollm2", backend_request(stream=False, embeds=rows.numpy()))
    assert from_embeds.text == whole.text
    for ours, theirs in zip(per_token(from_embeds.outputs), per_token(whole.outputs), strict=True):
        assert ours.keys() == theirs.keys()
        for token_id in ours:
            assert ours[token_id]["logprob"] == pytest.approx(theirs[token_id]["logprob"], abs=1e-3)


def test_without_return_inputs_responses_are_unchanged(grpc_url):
    plain = grpc_infer(grpc_url, "smollm2", make_inputs(text=PROMPT, sampling=SAMPLING, stream=True))
    assert all(set(response) == {TEXT_OUTPUT} for response in plain.outputs[:-1])
    assert LOGPROBS_OUTPUT not in plain.outputs[-1]
    assert plain.completion_tokens == 8  # the total, as this model's own clients read it


def test_the_backends_http_shape(http_url, whole):
    body = {
        "text_input": PROMPT,
        "exclude_input_in_output": True,
        "sampling_parameters": json.dumps(SAMPLING),
        **{name: True for name in EVERY_RETURN},
    }
    (event,) = http_generate(http_url, "smollm2", body)
    assert event[TEXT_OUTPUT] == whole.text
    assert event[OUTPUT_TOKENS_OUTPUT] == 8
    assert len(json.loads(event[LOGPROBS_OUTPUT])) == 8


def test_feature_use_is_counted(grpc_url, metrics_url):
    def count(feature: str) -> float:
        return metric_value(metrics_url, "embeds_feature_requests_total", model="tiny", feature=feature)

    before = {feature: count(feature) for feature in ("logprobs", "extra_outputs")}
    result = grpc_infer(grpc_url, "tiny", make_inputs(text="hi", sampling={"logprobs": 2, "max_tokens": 2}))
    assert result.error is None
    assert count("logprobs") == before["logprobs"] + 1
    assert count("extra_outputs") == before["extra_outputs"]
    grpc_infer(grpc_url, "tiny", make_inputs(text="hi", sampling={"max_tokens": 2}, returns=EVERY_RETURN))
    assert count("extra_outputs") == before["extra_outputs"] + 1


# -- the client maps them to openai-python's types -----------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_completion_logprobs(grpc_url, http_url, whole, protocol):
    url = grpc_url if protocol == "grpc" else f"http://{http_url}"
    with Client(url) as client:
        completion = client.completions.create(
            model="smollm2", prompt=PROMPT, max_tokens=8, temperature=0, logprobs=TOP
        )
        streamed = list(
            client.completions.create(
                model="smollm2", prompt=PROMPT, max_tokens=8, temperature=0, logprobs=TOP, stream=True
            )
        )
    choice = completion.choices[0]
    assert choice.text == whole.text
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    chosen = [next(iter(position.values()))["logprob"] for position in per_token(whole.outputs)]
    assert logprobs.token_logprobs == pytest.approx(chosen, abs=1e-5)
    assert all(TOP <= len(top) <= TOP + 1 for top in logprobs.top_logprobs)
    assert logprobs.text_offset == [sum(map(len, logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
    streamed_tokens = [t for chunk in streamed if chunk.choices and chunk.choices[0].logprobs
                       for t in chunk.choices[0].logprobs.tokens]  # fmt: skip
    assert streamed_tokens == logprobs.tokens


def test_client_chat_logprobs(grpc_url):
    with Client(grpc_url) as client:
        chat = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=8,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
        )
    choice = chat.choices[0]
    content = choice.logprobs.content
    if choice.finish_reason == "stop":  # the stop token has a logprob but no text, as in vLLM
        assert content[-1].token == "<|im_end|>"
        content = content[:-1]
    assert "".join(token.token for token in content) == choice.message.content
    assert all(len(token.top_logprobs) == 2 for token in content)
    assert all(token.logprob == token.top_logprobs[0].logprob for token in content)  # greedy
