"""The client's logprobs, without a server: the inputs a call sends, the
model's per-response `logprobs` JSON read by both transports, and the
openai-python shapes made of it, as vLLM's OpenAI server makes them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from tritonclient.grpc import service_pb2

import triton_embeds as te
from embeds_backend.sampling import MAX_LOGPROBS as SERVER_MAX_LOGPROBS
from triton_embeds._logprobs import MAX_LOGPROBS, chat_logprobs, completion_logprobs, parse_logprobs
from triton_embeds._transport import Connection
from triton_embeds._transport_grpc import _inputs, _parse_response
from triton_embeds._transport_http import _body, _delta
from triton_embeds._types import Delta, GenerateRequest, TokenLogprobs
from triton_embeds.protocol import (
    FINISH_REASON_OUTPUT,
    INPUT_TOKENS_OUTPUT,
    LOGPROBS_OUTPUT,
    OUTPUT_TOKENS_OUTPUT,
    RETURN_LOGPROBS_INPUT,
    RETURN_NUM_OUTPUT_TOKENS_INPUT,
    SAMPLING_INPUT,
    TEXT_OUTPUT,
    bytes_element,
)
from triton_embeds.resources.chat import AsyncChatCompletions
from triton_embeds.resources.completions import AsyncCompletions


def entry(*tokens: tuple[int, float, int, str | None]) -> dict[int, dict[str, Any]]:
    """One generated token as the server builds it: (id, logprob, rank,
    decoded) of the chosen token, then of its alternatives."""
    return {
        token_id: {"logprob": logprob, "rank": rank, "decoded_token": decoded}
        for token_id, logprob, rank, decoded in tokens
    }


# Three tokens with top-2 alternatives: the first chosen outside its top 2
# (3 items), the others inside (2 items); "é" is two UTF-8 bytes.
POSITIONS = [
    entry((11, -2.5, 3, " Par"), (7, -0.5, 1, " Lyon"), (9, -1.0, 2, " Nice")),
    entry((12, -0.1, 1, "is"), (13, -3.0, 2, "é")),
    entry((14, -0.2, 1, "."), (15, float("-inf"), 2, None)),
]


def wire(positions: list[dict[int, dict[str, Any]]] | None) -> str:
    """The `logprobs` output of one response, as the server serializes it."""
    return json.dumps(positions)


def parsed(positions: list[dict[int, dict[str, Any]]]) -> list[TokenLogprobs]:
    entries = parse_logprobs(wire(positions))
    assert entries is not None
    return entries


# The answer streamed as the model sends it: one response per token, the
# last with the finish reason, the request's totals and no new token.
STREAMED = [
    Delta(0, " Par", logprobs=parsed(POSITIONS[:1])),
    Delta(0, "is", logprobs=parsed(POSITIONS[1:2])),
    Delta(0, "", logprobs=parsed(POSITIONS[2:])),  # held back (a stop string may start here)
    Delta(0, ".", "stop", prompt_tokens=5, completion_tokens=3, logprobs=[]),
]
WHOLE = [Delta(0, " Paris.", "stop", prompt_tokens=5, completion_tokens=3, logprobs=parsed(POSITIONS))]
PLAIN = [Delta(0, " Paris.", "stop", prompt_tokens=5, completion_tokens=3)]


class FakeTransport:
    """Records each call's requests and answers with `deltas`."""

    def __init__(self, deltas: list[Delta]) -> None:
        self.deltas = deltas
        self.requests: list[GenerateRequest] = []

    async def generate(self, model: str, requests: list[GenerateRequest]) -> AsyncGenerator[Delta, None]:
        self.requests.extend(requests)
        for delta in self.deltas:
            yield delta

    async def model_inputs(self, model: str) -> frozenset[str]:
        return frozenset()

    async def list_models(self) -> list[tuple[str, str]]:
        return []

    async def close(self) -> None:
        pass


def completions(transport: FakeTransport) -> AsyncCompletions:
    return AsyncCompletions(Connection(transport, "binary", timeout=None))


def chat(transport: FakeTransport) -> AsyncChatCompletions:
    return AsyncChatCompletions(Connection(transport, "binary", timeout=None))


async def complete(transport: FakeTransport, **params: Any) -> Completion:
    return await completions(transport).create(model="m", **params)


async def complete_streamed(transport: FakeTransport, **params: Any) -> list[Completion]:
    stream = await completions(transport).create(model="m", stream=True, **params)
    return [chunk async for chunk in stream]


MESSAGES = [{"role": "user", "content": "Capital of France?"}]


async def answer(transport: FakeTransport, **params: Any) -> ChatCompletion:
    return await chat(transport).create(model="m", messages=MESSAGES, **params)


async def answer_streamed(transport: FakeTransport, **params: Any) -> list[ChatCompletionChunk]:
    stream = await chat(transport).create(model="m", messages=MESSAGES, stream=True, **params)
    return [chunk async for chunk in stream]


# -- the model's output -----------------------------------------------------------------


def test_the_output_is_read_in_order_with_the_chosen_token_first() -> None:
    entries = parse_logprobs(wire(POSITIONS).encode())  # gRPC gives bytes, HTTP a string
    assert entries is not None and len(entries) == 3
    assert list(entries[0]) == ["11", "7", "9"]
    assert entries[0]["11"] == {"logprob": -2.5, "rank": 3, "decoded_token": " Par"}
    assert entries[2]["15"]["logprob"] == float("-inf")
    assert parse_logprobs("null") is None  # the sampling parameters asked for none


@pytest.mark.parametrize("raw", ["[{", '{"11": {}}', "3"])
def test_a_malformed_output_is_a_server_error(raw: str) -> None:
    with pytest.raises(te.InternalServerError, match="logprobs"):
        parse_logprobs(raw)


def _grpc_response(text: str, logprobs: str | None, final: bool) -> Any:
    response = service_pb2.ModelInferResponse(id="1")

    def output(name: str, datatype: str, data: bytes) -> None:
        tensor = response.outputs.add(name=name, datatype=datatype)
        tensor.shape.append(1)
        response.raw_output_contents.append(data)

    output(TEXT_OUTPUT, "BYTES", bytes_element(text))
    if final:
        output(FINISH_REASON_OUTPUT, "BYTES", bytes_element("stop"))
        output(INPUT_TOKENS_OUTPUT, "UINT32", np.array([5], np.uint32).tobytes())
        output(OUTPUT_TOKENS_OUTPUT, "UINT32", np.array([3], np.uint32).tobytes())
    if logprobs is not None:
        output(LOGPROBS_OUTPUT, "BYTES", bytes_element(logprobs))
    return response


@pytest.mark.parametrize("final", [False, True])
def test_grpc_responses_carry_their_logprobs_into_the_delta(final: bool) -> None:
    response = _grpc_response("is", wire(POSITIONS[1:2]), final)
    delta, _ = _parse_response(response, logprobs=True)
    assert delta is not None and delta.index == 1 and delta.text == "is"
    assert delta.logprobs == parsed(POSITIONS[1:2])
    assert delta.finish_reason == ("stop" if final else None)
    assert delta.completion_tokens == (3 if final else None)  # the request's total, never a delta
    unasked, _ = _parse_response(response)  # a call without logprobs does not look
    assert unasked is not None and unasked.logprobs is None


def test_http_events_carry_their_logprobs_into_the_delta() -> None:
    event = {TEXT_OUTPUT: "is", LOGPROBS_OUTPUT: wire(POSITIONS[1:2])}
    assert _delta(0, event, logprobs=True).logprobs == parsed(POSITIONS[1:2])
    assert _delta(0, event).logprobs is None
    final = {TEXT_OUTPUT: ".", FINISH_REASON_OUTPUT: "stop", INPUT_TOKENS_OUTPUT: 5, OUTPUT_TOKENS_OUTPUT: 3}
    delta = _delta(0, {**final, LOGPROBS_OUTPUT: "[]"}, logprobs=True)
    assert (delta.logprobs, delta.finish_reason, delta.completion_tokens) == ([], "stop", 3)


# -- completions ---------------------------------------------------------------------------


def test_completion_logprobs_are_shaped_as_vllms() -> None:
    logprobs, end = completion_logprobs(parsed(POSITIONS), top=2)
    assert logprobs.tokens == [" Par", "is", "."]
    assert logprobs.token_logprobs == [-2.5, -0.1, -0.2]
    # The chosen token and its top alternatives, keyed by text; -inf is
    # reported as -9999.0 and an undecoded token by vLLM's placeholder.
    assert logprobs.top_logprobs == [
        {" Par": -2.5, " Lyon": -0.5, " Nice": -1.0},
        {"is": -0.1, "é": -3.0},
        {".": -0.2, "token_id:15": -9999.0},
    ]
    assert logprobs.text_offset == [0, 4, 6] and end == 7
    fewer, _ = completion_logprobs(parsed(POSITIONS), top=0)
    assert fewer.top_logprobs == [{" Par": -2.5}, {"is": -0.1}, {".": -0.2}]
    later, end = completion_logprobs(parsed(POSITIONS[1:]), top=2, offset=4)
    assert later.text_offset == [4, 6] and end == 7


def test_a_completion_carries_the_logprobs_of_its_whole_text() -> None:
    for deltas in (WHOLE, STREAMED):  # gRPC sends one response; HTTP always streams
        transport = FakeTransport(deltas)
        completion = asyncio.run(complete(transport, prompt="The capital of France is", logprobs=2))
        (choice,) = completion.choices
        assert choice.text == " Paris." and choice.finish_reason == "stop"
        assert choice.logprobs is not None
        assert choice.logprobs.tokens == [" Par", "is", "."]
        assert choice.logprobs.text_offset == [0, 4, 6]
        assert completion.usage is not None and completion.usage.completion_tokens == 3
    dumped = completion.model_dump()["choices"][0]["logprobs"]
    assert (
        dumped["token_logprobs"] == [-2.5, -0.1, -0.2] and dumped["top_logprobs"][2]["token_id:15"] == -9999.0
    )


def test_streamed_chunks_carry_their_own_tokens_with_offsets_into_the_whole_text() -> None:
    chunks = asyncio.run(complete_streamed(FakeTransport(STREAMED), prompt="The capital of", logprobs=2))
    assert [chunk.choices[0].text for chunk in chunks] == [" Par", "is", "", "."]  # tokens without text too
    pieces = [chunk.choices[0].logprobs for chunk in chunks]
    assert all(piece is not None for piece in pieces)
    assert [piece.tokens for piece in pieces if piece] == [[" Par"], ["is"], ["."], []]
    assert [piece.text_offset for piece in pieces if piece] == [[0], [4], [6], []]
    assert next(piece.top_logprobs for piece in pieces if piece) == [
        {" Par": -2.5, " Lyon": -0.5, " Nice": -1.0}
    ]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_token_without_text_gets_its_chunk() -> None:
    """As vLLM streams: a chunk per model response, empty text included, so
    the first chunk marks the first token."""
    deltas = [Delta(0, ""), Delta(0, " Paris"), Delta(0, ".", "stop", prompt_tokens=3, completion_tokens=3)]
    chunks = asyncio.run(complete_streamed(FakeTransport(deltas), prompt="The capital of"))
    assert [chunk.choices[0].text for chunk in chunks] == ["", " Paris", "."]
    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None, None, "stop"]


def test_each_prompt_counts_its_own_offsets() -> None:
    first, second = parsed(POSITIONS[:1]), parsed(POSITIONS[1:2])
    deltas = [
        Delta(0, " Par", logprobs=first),
        Delta(1, "is", logprobs=second),
        Delta(1, "is", logprobs=second),
        Delta(0, " Par", "stop", prompt_tokens=1, completion_tokens=2, logprobs=first),
        Delta(1, "", "length", prompt_tokens=1, completion_tokens=2, logprobs=[]),
    ]
    chunks = asyncio.run(complete_streamed(FakeTransport(deltas), prompt=["a", "b"], logprobs=0))
    offsets = [(chunk.choices[0].index, chunk.choices[0].logprobs.text_offset) for chunk in chunks]
    assert offsets == [(0, [0]), (1, [0]), (1, [2]), (0, [4]), (1, [])]
    completion = asyncio.run(complete(FakeTransport(deltas), prompt=["a", "b"], logprobs=0))
    assert [choice.logprobs.text_offset for choice in completion.choices] == [[0, 4], [0, 2]]


def test_without_logprobs_choices_and_chunks_have_none() -> None:
    completion = asyncio.run(complete(FakeTransport(PLAIN), prompt="a"))
    assert completion.choices[0].logprobs is None
    chunks = asyncio.run(complete_streamed(FakeTransport(PLAIN), prompt="a"))
    assert [chunk.choices[0].logprobs for chunk in chunks] == [None]


# -- chat ----------------------------------------------------------------------------------------


def test_chat_logprobs_are_shaped_as_vllms() -> None:
    content = chat_logprobs(parsed(POSITIONS), top=2)
    assert [(t.token, t.logprob, t.bytes) for t in content] == [
        (" Par", -2.5, [32, 80, 97, 114]),
        ("is", -0.1, [105, 115]),
        (".", -0.2, [46]),
    ]
    # The entry's first `top` items: the chosen token, then its alternatives.
    assert [[(top.token, top.logprob) for top in t.top_logprobs] for t in content] == [
        [(" Par", -2.5), (" Lyon", -0.5)],
        [("is", -0.1), ("é", -3.0)],
        [(".", -0.2), ("token_id:15", -9999.0)],
    ]
    assert content[1].top_logprobs[1].bytes == [0xC3, 0xA9]
    assert all(t.top_logprobs == [] for t in chat_logprobs(parsed(POSITIONS), top=0))
    undecoded = chat_logprobs(parsed([entry((15, -1.0, 1, None))]), top=1)
    assert undecoded[0].token == "token_id:15" and undecoded[0].bytes is None  # as vLLM: no bytes
    assert undecoded[0].top_logprobs[0].bytes == list(b"token_id:15")


def test_a_chat_completion_carries_the_logprobs_of_its_whole_answer() -> None:
    for deltas in (WHOLE, STREAMED):
        completion = asyncio.run(answer(FakeTransport(deltas), logprobs=True, top_logprobs=1))
        (choice,) = completion.choices
        assert choice.message.content == " Paris." and choice.logprobs is not None
        assert choice.logprobs.content is not None
        assert [t.token for t in choice.logprobs.content] == [" Par", "is", "."]
        assert [len(t.top_logprobs) for t in choice.logprobs.content] == [1, 1, 1]
    dumped = completion.model_dump()["choices"][0]["logprobs"]
    assert dumped["content"][0] == {
        "token": " Par",
        "logprob": -2.5,
        "bytes": [32, 80, 97, 114],
        "top_logprobs": [{"token": " Par", "logprob": -2.5, "bytes": [32, 80, 97, 114]}],
    }


def test_chat_chunks_carry_their_own_tokens() -> None:
    role, *chunks = asyncio.run(answer_streamed(FakeTransport(STREAMED), logprobs=True))
    assert role.choices[0].delta.role == "assistant" and role.choices[0].logprobs is None
    contents = [chunk.choices[0].logprobs.content for chunk in chunks]
    assert [[t.token for t in content or []] for content in contents] == [[" Par"], ["is"], ["."], []]
    assert all(t.top_logprobs == [] for content in contents for t in content or [])  # top_logprobs 0
    assert [chunk.choices[0].delta.content for chunk in chunks] == [" Par", "is", "", "."]


def test_without_logprobs_chat_choices_and_chunks_have_none() -> None:
    assert asyncio.run(answer(FakeTransport(PLAIN))).choices[0].logprobs is None
    chunks = asyncio.run(answer_streamed(FakeTransport(PLAIN), logprobs=False))
    assert all(chunk.choices[0].logprobs is None for chunk in chunks)


# -- what is sent -------------------------------------------------------------------------------


def _sent(request: GenerateRequest) -> tuple[dict[str, Any], set[str], set[str]]:
    """(sampling parameters, gRPC input names, HTTP body keys) of a request."""
    grpc_names = {name for name, *_ in _inputs(request)}
    body = _body(request)
    assert json.loads(body[SAMPLING_INPUT]) == request.sampling
    return request.sampling, grpc_names, set(body)


def test_return_logprobs_is_sent_only_when_asked() -> None:
    transport = FakeTransport(PLAIN)
    asyncio.run(complete(transport, prompt="a", logprobs=3, max_tokens=4))
    asyncio.run(complete(transport, prompt="a", max_tokens=4, n=1))
    asyncio.run(answer(transport, logprobs=True, top_logprobs=5))
    asyncio.run(answer(transport, logprobs=True))
    asyncio.run(answer(transport, logprobs=False))
    sent = [_sent(request) for request in transport.requests]
    assert [sampling.get("logprobs") for sampling, *_ in sent] == [3, None, 5, 0, None]
    assert [RETURN_LOGPROBS_INPUT in names for _, names, _ in sent] == [True, False, True, True, False]
    assert all((RETURN_LOGPROBS_INPUT in body) == (RETURN_LOGPROBS_INPUT in names) for _, names, body in sent)
    assert all(RETURN_NUM_OUTPUT_TOKENS_INPUT not in names | body for _, names, body in sent)
    assert all("n" not in sampling for sampling, *_ in sent)
    assert _body(transport.requests[0])[RETURN_LOGPROBS_INPUT] is True


def test_every_prompt_of_a_call_asks_for_logprobs() -> None:
    transport = FakeTransport([*PLAIN, Delta(1, "b", "stop", prompt_tokens=1, completion_tokens=1)])
    asyncio.run(completions(transport).create(model="m", prompt=["a", "b"], logprobs=1))
    assert [request.return_logprobs for request in transport.requests] == [True, True]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"logprobs": -1}, "logprobs must be an integer from 0 to 20"),
        ({"logprobs": 21}, "logprobs must be an integer from 0 to 20"),
        ({"logprobs": True}, "logprobs must be an integer"),
        ({"logprobs": "3"}, "logprobs must be an integer"),
        ({"n": 17}, "n must be an integer from 1 to 16"),
    ],
)
def test_completion_arguments_out_of_range_are_refused_before_sending(
    params: dict[str, Any], match: str
) -> None:
    transport = FakeTransport(PLAIN)
    with pytest.raises(ValueError, match=match):
        asyncio.run(complete(transport, prompt="a", **params))
    assert transport.requests == []


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"top_logprobs": 2}, "top_logprobs=2 needs logprobs=True"),
        ({"logprobs": False, "top_logprobs": 0}, "needs logprobs=True"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be an integer from 0 to 20"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs must be an integer from 0 to 20"),
        ({"n": 0}, "n must be an integer from 1 to 16"),
    ],
)
def test_chat_arguments_out_of_range_are_refused_before_sending(params: dict[str, Any], match: str) -> None:
    transport = FakeTransport(PLAIN)
    with pytest.raises(ValueError, match=match):
        asyncio.run(answer(transport, **params))
    assert transport.requests == []


def test_the_client_and_the_server_allow_the_same_number_of_alternatives() -> None:
    assert MAX_LOGPROBS == SERVER_MAX_LOGPROBS


def test_the_sync_client_passes_logprobs_through() -> None:
    with te.Client("localhost:1") as client:
        client._async._connection.transport = FakeTransport(STREAMED)
        completion = client.completions.create(model="m", prompt="a", logprobs=2)
        assert completion.choices[0].logprobs is not None
        with client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, logprobs=True
        ) as stream:
            tokens = [
                t.token
                for chunk in stream
                if chunk.choices[0].logprobs
                for t in chunk.choices[0].logprobs.content or []
            ]
        assert tokens == [" Par", "is", "."]
