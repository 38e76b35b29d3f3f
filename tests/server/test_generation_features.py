"""Generation features beyond one plain sequence, through the real server:
n > 1, structured outputs, LoRA adapters, prompt truncation, cache salts,
prompt logprobs and the model-info question."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest

from tools.infer import Result, grpc_infer, make_inputs
from tools.metrics import metric_value
from tools.paths import SMOLLM2_DIR, TINY_MODEL_DIR
from tools.server.repository import TINY_ADAPTER
from triton_embeds import Client
from triton_embeds._encoding import encode_prompt_embeds
from triton_embeds._text_embeddings import text_to_embeddings
from triton_embeds.protocol import (
    CHOICE_INDEX_OUTPUT,
    FINISH_REASON_OUTPUT,
    MODEL_INFO_OUTPUT,
    PROMPT_LOGPROBS_OUTPUT,
    RETURN_MODEL_INFO_INPUT,
    TEXT_OUTPUT,
)

GREEDY = {"temperature": 0, "max_tokens": 8, "ignore_eos": True}
GREEDY_ARGS = {"temperature": 0, "max_tokens": 8, "extra_body": {"ignore_eos": True}}


def infer(grpc_url: str, model: str, **request) -> Result:
    result = grpc_infer(grpc_url, model, make_inputs(**request))
    assert result.error is None, result.error
    return result


def rejected(grpc_url: str, model: str, **request) -> str:
    result = grpc_infer(grpc_url, model, make_inputs(**request))
    # Over a gRPC stream Triton passes the message alone; its prefix names the kind.
    assert result.error is not None and result.error.startswith("[rejected:"), result
    return result.error


def choices(result: Result) -> dict[int, str]:
    """Text per choice index, in the order the responses came."""
    texts: dict[int, str] = {}
    for response in result.outputs:
        index = response[CHOICE_INDEX_OUTPUT]
        texts[index] = texts.get(index, "") + response[TEXT_OUTPUT]
    return texts


# -- n > 1 ---------------------------------------------------------------------------------

SAMPLED = {"n": 3, "seed": 7, "temperature": 1.0, "max_tokens": 6, "ignore_eos": True}


@pytest.fixture(scope="module")
def three(grpc_url) -> Result:
    return infer(grpc_url, "tiny", text="hello", sampling=SAMPLED, exclude_input=True)


def test_n_gives_one_response_per_choice_with_usage_summed(three):
    assert sorted(response[CHOICE_INDEX_OUTPUT] for response in three.outputs) == [0, 1, 2]
    assert all(response[FINISH_REASON_OUTPUT] == "length" for response in three.outputs)
    assert three.completion_tokens == 3 * 6 and three.final_flags == 1
    assert len(set(choices(three).values())) > 1  # sampled: the choices differ


def test_n_with_a_seed_is_reproducible_streaming_or_not(grpc_url, three):
    again = infer(grpc_url, "tiny", text="hello", sampling=SAMPLED, exclude_input=True)
    assert choices(again) == choices(three)
    streamed = infer(grpc_url, "tiny", text="hello", sampling=SAMPLED, stream=True)
    assert choices(streamed) == choices(three)
    assert streamed.completion_tokens == 18
    ended = [r[CHOICE_INDEX_OUTPUT] for r in streamed.outputs if r.get(FINISH_REASON_OUTPUT) == "length"]
    assert sorted(ended) == [0, 1, 2]  # each choice's last response says how it ended


def test_n_with_embeddings_and_chat(grpc_url):
    rows = np.random.default_rng(0).standard_normal((4, 128)).astype(np.float32)
    assert len(choices(infer(grpc_url, "tiny", embeds=rows, sampling=SAMPLED))) == 3
    messages = [{"role": "user", "content": "hi"}]
    assert len(choices(infer(grpc_url, "tiny", messages=messages, sampling=SAMPLED, stream=True))) == 3


def test_n_beyond_the_limit_is_refused(grpc_url):
    assert "n=17 must be between 1 and 16" in rejected(grpc_url, "tiny", text="hi", sampling={"n": 17})


# -- structured outputs ------------------------------------------------------------------

CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "London", "Rome"]},
        "is_capital": {"type": "boolean"},
    },
    "required": ["city", "is_capital"],
    "additionalProperties": False,
}


def test_json_schema_output_parses_and_validates(grpc_url):
    structured = {"json": CITY_SCHEMA, "disable_any_whitespace": True}
    result = infer(
        grpc_url,
        "smollm2",
        text="The capital of France as JSON:",
        sampling={"temperature": 0, "max_tokens": 48, "structured_outputs": structured},
        exclude_input=True,
    )
    value = json.loads(result.text)
    jsonschema.validate(value, CITY_SCHEMA)
    assert result.finish_reason == "stop"


@pytest.mark.parametrize(
    "sampling",
    [
        {"structured_outputs": {"regex": "[a-c]{3}-[0-9]{2}"}},
        {"guided_regex": "[a-c]{3}-[0-9]{2}"},  # vLLM's older key
        {"structured_outputs": json.dumps({"regex": "[a-c]{3}-[0-9]{2}"})},  # as a JSON string
    ],
)
def test_regex_output_matches(grpc_url, sampling):
    result = infer(
        grpc_url, "tiny", text="code:", sampling={**sampling, "max_tokens": 12}, exclude_input=True
    )
    assert re.fullmatch("[a-c]{3}-[0-9]{2}", result.text), result.text


@pytest.mark.parametrize(
    ("pattern", "same_language"),
    [("(a+)+b", "a+b"), ("((a*)*)*b" * 8, "(a*b){8}"), ("[a-z]{1,2000}x", "[a-z]{1,2000}x")],
)
def test_regexes_pathological_for_backtracking_are_served(grpc_url, pattern, same_language):
    """xgrammar builds an automaton, it does not backtrack: these compile at
    once and constrain as written, and the engine stays responsive. (The
    output is checked against an equivalent regex Python's backtracking
    engine can match safely.)"""
    sampling = {"guided_regex": pattern, "max_tokens": 24}
    result = infer(grpc_url, "tiny", text="x", sampling=sampling, exclude_input=True)
    assert result.finish_reason in ("stop", "length")
    if result.finish_reason == "stop":
        assert re.fullmatch(same_language, result.text), result.text
    assert infer(grpc_url, "tiny", text="steady", sampling=GREEDY).completion_tokens == 8


def test_choice_output_is_one_of_them(grpc_url):
    options = ["red", "green", "blue"]
    result = infer(
        grpc_url,
        "tiny",
        text="colour:",
        sampling={"guided_choice": options, "max_tokens": 8},
        exclude_input=True,
    )
    assert result.text in options


def test_structured_output_works_with_embeddings(grpc_url):
    rows = np.random.default_rng(1).standard_normal((3, 128)).astype(np.float32)
    result = infer(grpc_url, "tiny", embeds=rows, sampling={"structured_outputs": {"regex": "[0-9]{4}"}})
    assert re.fullmatch("[0-9]{4}", result.text), result.text


@pytest.mark.parametrize(
    ("structured", "message"),
    [
        ({"json": '{"type": "objec'}, "Invalid JSON grammar"),
        ({"regex": "(a"}, "regex"),
        ({"grammar": 'foo ::= "x"'}, "grammar"),
    ],
)
def test_an_invalid_constraint_is_invalid_arg_and_costs_nothing(grpc_url, structured, message):
    before = infer(grpc_url, "tiny", text="steady", sampling=GREEDY)
    error = rejected(grpc_url, "tiny", text="x", sampling={"structured_outputs": structured})
    assert error.startswith("[rejected:engine_validation]") and message in error
    assert infer(grpc_url, "tiny", text="steady", sampling=GREEDY).text == before.text


def test_constraint_limits_are_ours(grpc_url):
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(2000)}}
    error = rejected(grpc_url, "tiny", text="x", sampling={"structured_outputs": {"json": huge}})
    assert "above the limit of 32768" in error or "sampling_parameters is" in error
    two = {"structured_outputs": {"regex": "a", "choice": ["b"]}}
    assert "exactly one of" in rejected(grpc_url, "tiny", text="x", sampling=two)
    both = {"guided_regex": "a", "structured_outputs": {"regex": "b"}}
    assert "one structured output constraint" in rejected(grpc_url, "tiny", text="x", sampling=both)


# -- LoRA adapters ---------------------------------------------------------------------------


def test_the_adapter_changes_greedy_output_and_the_base_stays(grpc_url):
    base = infer(grpc_url, "tiny", text="hello world", sampling=GREEDY).text
    adapted = infer(grpc_url, "tiny", text="hello world", sampling={**GREEDY, "lora_name": TINY_ADAPTER}).text
    assert adapted != base
    assert infer(grpc_url, "tiny", text="hello world", sampling=GREEDY).text == base


def test_the_adapter_applies_to_every_prompt_kind(grpc_url):
    """The adapter leaves the embedding layer alone, so a text prompt's own
    input embeddings give the same adapted output as the text."""
    sampling = {**GREEDY, "lora_name": TINY_ADAPTER}
    text = infer(grpc_url, "tiny", text="hello world", sampling=sampling, exclude_input=True).text
    embeddings = text_to_embeddings(str(TINY_MODEL_DIR), "hello world")
    rows = embeddings.numpy()
    assert infer(grpc_url, "tiny", embeds=rows, sampling=sampling).text == text
    assert (
        infer(grpc_url, "tiny", embeds_b64=encode_prompt_embeds(embeddings), sampling=sampling).text == text
    )
    messages = [{"role": "user", "content": "hello"}]
    chat_base = infer(grpc_url, "tiny", messages=messages, sampling=GREEDY).text
    assert infer(grpc_url, "tiny", messages=messages, sampling=sampling).text != chat_base


def test_an_unknown_adapter_is_refused_by_name(grpc_url):
    error = rejected(grpc_url, "tiny", text="hi", sampling={"lora_name": "nope"})
    assert error.startswith("[rejected:unknown_adapter]") and "'nope'" in error and TINY_ADAPTER in error
    error = rejected(grpc_url, "smollm2", text="hi", sampling={"lora_name": TINY_ADAPTER})
    assert "no multi_lora.json" in error


def test_model_info_names_the_adapters(grpc_url):
    result = grpc_infer(grpc_url, "tiny", {RETURN_MODEL_INFO_INPUT: np.array([True])})
    assert result.error is None and result.final_flags == 1
    info = json.loads(result.outputs[0][MODEL_INFO_OUTPUT])
    assert info["adapters"] == [TINY_ADAPTER]
    facts = (info["hidden_size"], info["prompt_embeds"], info["max_n"], info["engine_ready"])
    assert facts == (128, True, 16, True)
    smollm2 = json.loads(
        grpc_infer(grpc_url, "smollm2", {RETURN_MODEL_INFO_INPUT: np.array([True])}).outputs[0][
            MODEL_INFO_OUTPUT
        ]
    )
    assert smollm2["adapters"] == [] and smollm2["chat_template"] is True
    conflict = grpc_infer(
        grpc_url, "tiny", {**make_inputs(text="hi"), RETURN_MODEL_INFO_INPUT: np.array([True])}
    )
    assert conflict.error is not None and conflict.error.startswith("[rejected:prompt_conflict]")


# -- prompt options: truncation and cache salt ------------------------------------------------


def test_truncation_keeps_the_last_rows(grpc_url):
    rows = np.random.default_rng(2).standard_normal((20, 128)).astype(np.float32)
    truncated = infer(grpc_url, "tiny", embeds=rows, sampling={**GREEDY, "truncate_prompt_tokens": 5})
    assert truncated.prompt_tokens == 5
    assert truncated.text == infer(grpc_url, "tiny", embeds=rows[-5:], sampling=GREEDY).text
    text = infer(
        grpc_url, "tiny", text="one two three four five six", sampling={**GREEDY, "truncate_prompt_tokens": 3}
    )
    assert text.prompt_tokens == 3


def test_truncation_lets_a_long_prompt_fit(grpc_url):
    rows = np.random.default_rng(3).standard_normal((600, 128)).astype(np.float32)  # tiny's context: 512
    assert "exceeds the model's context length" in rejected(grpc_url, "tiny", embeds=rows, sampling=GREEDY)
    assert (
        infer(grpc_url, "tiny", embeds=rows, sampling={**GREEDY, "truncate_prompt_tokens": 256}).prompt_tokens
        == 256
    )


def test_a_cache_salt_isolates_prefix_cache_hits(grpc_url, metrics_url):
    rows = np.random.default_rng(4).standard_normal((300, 128)).astype(np.float32)

    def cached_after(salt: str) -> float:
        infer(grpc_url, "tiny", embeds=rows, sampling={"max_tokens": 1, "cache_salt": salt})
        return metric_value(metrics_url, "embeds_prompt_cached_tokens_total", model="tiny")

    start = cached_after("tenant-a")  # fills the cache under tenant-a
    again = cached_after("tenant-a")
    assert again > start  # the same salt shares the prefix
    assert cached_after("tenant-b") == again  # another salt never does


# -- prompt logprobs ---------------------------------------------------------------------------


def test_prompt_logprobs_for_text(grpc_url):
    result = infer(
        grpc_url, "smollm2", text="The capital of France is", sampling={"max_tokens": 1, "prompt_logprobs": 2}
    )
    positions = json.loads(result.outputs[0][PROMPT_LOGPROBS_OUTPUT])
    assert len(positions) == result.prompt_tokens and positions[0] is None
    assert all(1 <= len(position) <= 3 for position in positions[1:])  # the prompt's token and the top 2


def test_prompt_logprobs_are_refused_with_embeddings(grpc_url):
    rows = text_to_embeddings(str(SMOLLM2_DIR), "hi").numpy()
    error = rejected(grpc_url, "smollm2", embeds=rows, sampling={"prompt_logprobs": 1})
    assert "prompt_logprobs is not compatible with prompt embeds" in error


def test_feature_use_is_counted(grpc_url, metrics_url):
    def count(feature: str) -> float:
        return metric_value(metrics_url, "embeds_feature_requests_total", model="tiny", feature=feature)

    features = ("n", "structured", "adapter")
    before = {feature: count(feature) for feature in features}
    sampling = {"n": 2, "lora_name": TINY_ADAPTER, "guided_regex": "[ab]{2}", "max_tokens": 4}
    infer(grpc_url, "tiny", text="hi", sampling=sampling)
    assert {feature: count(feature) for feature in features} == {f: v + 1 for f, v in before.items()}


# -- the client maps them to openai-python's parameters and types ------------------------------


@pytest.fixture(params=["grpc", "http"])
def client_url(request, grpc_url, http_url) -> str:
    return grpc_url if request.param == "grpc" else f"http://{http_url}"


def test_client_n_gives_indexed_choices_and_summed_usage(client_url, three):
    # SAMPLED as the client's arguments
    arguments = {"n": 3, "seed": 7, "temperature": 1.0, "max_tokens": 6, "extra_body": {"ignore_eos": True}}
    with Client(client_url) as client:
        completion = client.completions.create(model="tiny", prompt="hello", **arguments)
        usage = {"include_usage": True}
        chunks = list(
            client.completions.create(
                model="tiny", prompt="hello", stream=True, stream_options=usage, **arguments
            )
        )
    assert {choice.index: choice.text for choice in completion.choices} == choices(three)
    assert completion.usage.completion_tokens == 18
    streamed: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert streamed == choices(three) and chunks[-1].usage.completion_tokens == 18


def test_client_chat_response_format_json_schema(client_url):
    with Client(client_url) as client:
        reply = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}],
            max_tokens=48,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA}},
            extra_body={"structured_outputs": {"disable_any_whitespace": True}},
        )
    jsonschema.validate(json.loads(reply.choices[0].message.content), CITY_SCHEMA)


def test_client_lists_adapters_and_selects_one_by_model_name(client_url, grpc_url):
    with Client(client_url) as client:
        listed = {model.id: model for model in client.models.list().data}
        adapted = client.completions.create(model=TINY_ADAPTER, prompt="hello world", **GREEDY_ARGS)
        base = client.completions.create(model="tiny", prompt="hello world", **GREEDY_ARGS)
    assert {"tiny", "smollm2", TINY_ADAPTER} <= set(listed)
    assert listed[TINY_ADAPTER].parent == "tiny"
    direct = infer(
        grpc_url,
        "tiny",
        text="hello world",
        sampling={**GREEDY, "lora_name": TINY_ADAPTER},
        exclude_input=True,
    )
    assert adapted.choices[0].text == direct.text != base.choices[0].text
    assert adapted.model == TINY_ADAPTER


def test_client_passes_prompt_options_and_prompt_logprobs_through(client_url):
    rows = np.random.default_rng(5).standard_normal((20, 128)).astype(np.float32)
    with Client(client_url) as client:
        options = {"ignore_eos": True, "truncate_prompt_tokens": 5, "cache_salt": "t"}
        truncated = client.completions.create(
            model="tiny", prompt_embeds=rows, temperature=0, max_tokens=8, extra_body=options
        )
        last_rows = client.completions.create(model="tiny", prompt_embeds=rows[-5:], **GREEDY_ARGS)
        scored = client.completions.create(
            model="smollm2",
            prompt="The capital of France is",
            max_tokens=1,
            extra_body={"prompt_logprobs": 1},
        )
    assert truncated.usage.prompt_tokens == 5 and truncated.choices[0].text == last_rows.choices[0].text
    positions = scored.choices[0].prompt_logprobs
    assert positions[0] is None and len(positions) == scored.usage.prompt_tokens
