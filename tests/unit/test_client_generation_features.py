"""The client's generation features beyond one plain sequence, without a
Triton server: n > 1 (requests, choices, chunks), `response_format` and
`extra_body` keys in the sampling parameters, LoRA adapters as models
(listing and selection), and the prompt's logprobs. Fake transports script
the server's responses; the HTTP transport runs against a small in-process
aiohttp app speaking Triton's generate extension."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from tritonclient.grpc import service_pb2

import triton_embeds as te
from triton_embeds._adapters import AdapterIndex, ServedModel
from triton_embeds._choices import MAX_N
from triton_embeds._structured import constraint_of, with_response_format
from triton_embeds._transport import Connection
from triton_embeds._transport_grpc import GrpcTransport, _parse_response
from triton_embeds._transport_http import _delta, _is_last
from triton_embeds._types import Delta, GenerateRequest
from triton_embeds.protocol import (
    CHOICE_INDEX_OUTPUT,
    EMBEDS_FP32_INPUT,
    FINISH_REASON_OUTPUT,
    INPUT_TOKENS_OUTPUT,
    MODEL_INFO_OUTPUT,
    OUTPUT_TOKENS_OUTPUT,
    PROMPT_LOGPROBS_OUTPUT,
    RETURN_MODEL_INFO_INPUT,
    TEXT_OUTPUT,
    bytes_element,
)
from triton_embeds.resources.chat import AsyncChatCompletions
from triton_embeds.resources.completions import AsyncCompletions
from triton_embeds.resources.models import AsyncModels

MESSAGES = [{"role": "user", "content": "Name a colour."}]
# vLLM's layout, as the server sends it: nothing for the first position.
PROMPT_LOGPROBS = [None, {"7": {"logprob": float("-inf"), "rank": 2, "decoded_token": " sky"}}]
CLAMPED = [None, {"7": {"logprob": -9999.0, "rank": 2, "decoded_token": " sky"}}]


def not_found(model: str) -> te.NotFoundError:
    return te.NotFoundError(f"Request for unknown model: '{model}' is not found")


class FakeServer:
    """A Triton with `models`: name to its model_info (None: a model without
    the return_model_info input; an exception: one that fails to answer).
    Generation answers every known model with `deltas`."""

    def __init__(self, models: dict[str, Any] | None = None, deltas: list[Delta] | None = None) -> None:
        self.models = {"m": {"adapters": []}} if models is None else models
        self.deltas = deltas or [Delta(0, "ok", "stop", prompt_tokens=1, completion_tokens=1)]
        self.calls: list[tuple[str, list[GenerateRequest]]] = []
        self.listed = 0
        self.asked: list[str] = []

    async def generate(self, model: str, requests: list[GenerateRequest]) -> AsyncGenerator[Delta, None]:
        self.calls.append((model, requests))
        if model not in self.models:
            raise not_found(model)
        for delta in self.deltas:
            yield delta

    async def model_inputs(self, model: str) -> frozenset[str]:
        if model not in self.models:
            raise not_found(model)
        inputs = {EMBEDS_FP32_INPUT}
        return frozenset(inputs if self.models[model] is None else inputs | {RETURN_MODEL_INFO_INPUT})

    async def list_models(self) -> list[tuple[str, str]]:
        self.listed += 1
        return [(name, "READY") for name in self.models] + [("loading", "LOADING")]

    async def model_info(self, model: str) -> dict[str, Any]:
        self.asked.append(model)
        info = self.models[model]
        if isinstance(info, Exception):
            raise info
        assert isinstance(info, dict)
        return info

    async def close(self) -> None:
        pass


def connect(server: FakeServer) -> Connection:
    return Connection(server, "binary", timeout=None)


def complete(server: FakeServer, **params: Any) -> Any:
    params.setdefault("model", "m")
    params.setdefault("prompt", "a")
    return asyncio.run(AsyncCompletions(connect(server)).create(**params))


def answer(server: FakeServer, **params: Any) -> Any:
    params.setdefault("model", "m")
    return asyncio.run(AsyncChatCompletions(connect(server)).create(messages=MESSAGES, **params))


def streamed(server: FakeServer, chat: bool = False, **params: Any) -> list[Any]:
    async def run() -> list[Any]:
        connection = connect(server)
        params.setdefault("model", "m")
        if chat:
            stream = await AsyncChatCompletions(connection).create(messages=MESSAGES, stream=True, **params)
        else:
            params.setdefault("prompt", "a")
            stream = await AsyncCompletions(connection).create(stream=True, **params)
        return [chunk async for chunk in stream]

    return asyncio.run(run())


def sent_sampling(server: FakeServer) -> dict[str, Any]:
    (_, (request, *_)) = server.calls[-1]
    return request.sampling


# -- n > 1: what is sent ----------------------------------------------------------------


def test_n_goes_into_the_sampling_parameters_only_above_one() -> None:
    server = FakeServer()
    answers = [Delta(0, "x", "stop", choice=c, prompt_tokens=1, completion_tokens=2) for c in (0, 1)]
    server.deltas = answers
    complete(server, n=2)
    assert sent_sampling(server)["n"] == 2
    server.deltas = answers[:1]
    complete(server, n=1)
    assert "n" not in sent_sampling(server)
    server.deltas = answers
    answer(server, extra_body={"n": 2})  # as vLLM's clients may send it: understood too
    assert sent_sampling(server)["n"] == 2


@pytest.mark.parametrize("n", [0, MAX_N + 1, True, 2.0])
def test_n_out_of_range_is_refused_before_sending(n: Any) -> None:
    server = FakeServer()
    with pytest.raises(ValueError, match=f"n must be an integer from 1 to {MAX_N}"):
        complete(server, n=n)
    with pytest.raises(ValueError, match="n must be an integer"):
        answer(server, extra_body={"n": n})
    assert server.calls == []


# -- n > 1: choices and chunks ------------------------------------------------------------

# Two prompts, n=2, as the server answers: each response names its sequence,
# each sequence's last has its finish reason, the request's last the totals.
TWO_BY_TWO = [
    Delta(1, "b1", choice=1),
    Delta(0, "a0", choice=0),
    Delta(0, "a1", "length", choice=1),
    Delta(1, "b0", "stop", choice=0),
    Delta(0, "!", "stop", choice=0, prompt_tokens=3, completion_tokens=9),
    Delta(1, "!", "length", choice=1, prompt_tokens=4, completion_tokens=7),
]


def test_completion_choices_are_numbered_prompt_by_prompt() -> None:
    completion = complete(FakeServer(deltas=TWO_BY_TWO), prompt=["a", "b"], n=2)
    assert isinstance(completion, Completion)
    got = [(c.index, c.text, c.finish_reason) for c in completion.choices]
    assert got == [(0, "a0!", "stop"), (1, "a1", "length"), (2, "b0", "stop"), (3, "b1!", "length")]
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 16)


def test_streamed_completion_chunks_carry_their_choice_index() -> None:
    chunks = streamed(
        FakeServer(deltas=TWO_BY_TWO), prompt=["a", "b"], n=2, stream_options={"include_usage": True}
    )
    *content, usage = chunks
    assert [(c.choices[0].index, c.choices[0].text) for c in content] == [
        (3, "b1"),
        (0, "a0"),
        (1, "a1"),
        (2, "b0"),
        (0, "!"),
        (3, "!"),
    ]
    assert [c.choices[0].finish_reason for c in content] == [None, None, "length", "stop", "stop", "length"]
    assert usage.choices == [] and usage.usage.total_tokens == 23


# One conversation, n=3; streamed (deltas) or not (one whole response each).
THREE = [
    Delta(0, "Re", choice=2),
    Delta(0, "Blue", "stop", choice=1),
    Delta(0, "d", "stop", choice=2),
    Delta(0, "Green", "length", choice=0, prompt_tokens=5, completion_tokens=6),
]


def test_chat_choices_are_sorted_by_index_with_their_own_ends() -> None:
    completion = answer(FakeServer(deltas=THREE), n=3)
    assert isinstance(completion, ChatCompletion)
    got = [(c.index, c.message.content, c.finish_reason) for c in completion.choices]
    assert got == [(0, "Green", "length"), (1, "Blue", "stop"), (2, "Red", "stop")]
    assert completion.usage is not None and completion.usage.total_tokens == 11


def test_each_streamed_chat_choice_starts_with_its_role() -> None:
    chunks = streamed(FakeServer(deltas=THREE), chat=True, n=3)
    assert all(isinstance(chunk, ChatCompletionChunk) and len(chunk.choices) == 1 for chunk in chunks)
    seen = [(c.choices[0].index, c.choices[0].delta.role, c.choices[0].delta.content) for c in chunks]
    assert seen == [
        (2, "assistant", ""),
        (2, None, "Re"),
        (1, "assistant", ""),
        (1, None, "Blue"),
        (2, None, "d"),
        (0, "assistant", ""),
        (0, None, "Green"),
    ]


def test_choices_without_a_finish_reason_or_beyond_n_are_server_errors() -> None:
    with pytest.raises(te.InternalServerError, match=r"choice\(s\) \[1\] without a finish reason"):
        answer(
            FakeServer(deltas=[Delta(0, "x", "stop", choice=0, prompt_tokens=1, completion_tokens=1)]), n=2
        )
    with pytest.raises(te.InternalServerError, match="sequence 2 of a request for n=2"):
        answer(FakeServer(deltas=[Delta(0, "x", "stop", choice=2)]), n=2)


# -- n > 1 and the prompt's logprobs on the wire --------------------------------------------


def grpc_response(request_id: str, **outputs: Any) -> Any:
    """A ModelInferResponse with one-element outputs: str as BYTES, int as UINT32."""
    response = service_pb2.ModelInferResponse(id=request_id)
    for name, value in outputs.items():
        tensor = response.outputs.add(name=name, datatype="BYTES" if isinstance(value, str) else "UINT32")
        tensor.shape.append(1)
        data = bytes_element(value) if isinstance(value, str) else np.array([value], np.uint32).tobytes()
        response.raw_output_contents.append(data)
    return response


def test_grpc_responses_name_their_choice_and_a_choices_end_needs_no_counts() -> None:
    ended = grpc_response("1", **{TEXT_OUTPUT: "b", FINISH_REASON_OUTPUT: "stop", CHOICE_INDEX_OUTPUT: 2})
    delta, final = _parse_response(ended)
    assert delta == Delta(1, "b", "stop", choice=2) and not final
    last = grpc_response(
        "0",
        **{
            TEXT_OUTPUT: "",
            FINISH_REASON_OUTPUT: "length",
            CHOICE_INDEX_OUTPUT: 1,
            INPUT_TOKENS_OUTPUT: 3,
            OUTPUT_TOKENS_OUTPUT: 12,
            PROMPT_LOGPROBS_OUTPUT: json.dumps(PROMPT_LOGPROBS),
        },
    )
    delta, _ = _parse_response(last)
    assert delta is not None and (delta.choice, delta.prompt_tokens, delta.completion_tokens) == (1, 3, 12)
    assert delta.prompt_logprobs == PROMPT_LOGPROBS
    plain, _ = _parse_response(grpc_response("0", **{TEXT_OUTPUT: "x"}))
    assert plain == Delta(0, "x")  # one sequence: no choice output, choice 0


def test_http_events_name_their_choice_and_the_request_ends_with_the_totals() -> None:
    event = {TEXT_OUTPUT: "b", FINISH_REASON_OUTPUT: "stop", CHOICE_INDEX_OUTPUT: 2}
    assert _delta(0, event) == Delta(0, "b", "stop", choice=2)
    assert _delta(0, {**event, CHOICE_INDEX_OUTPUT: [3]}).choice == 3
    with_prompt = _delta(0, {TEXT_OUTPUT: "", PROMPT_LOGPROBS_OUTPUT: json.dumps(PROMPT_LOGPROBS)})
    assert with_prompt.prompt_logprobs == PROMPT_LOGPROBS
    assert _is_last({FINISH_REASON_OUTPUT: "stop"}, n=1)
    assert not _is_last(event, n=3)  # one choice ended, not the request
    assert _is_last({**event, INPUT_TOKENS_OUTPUT: 3, OUTPUT_TOKENS_OUTPUT: 9}, n=3)


@pytest.mark.parametrize("raw", ["{", '{"a": 1}', "[3]"])
def test_a_malformed_prompt_logprobs_output_is_a_server_error(raw: str) -> None:
    with pytest.raises(te.InternalServerError, match="prompt_logprobs"):
        _delta(0, {TEXT_OUTPUT: "", PROMPT_LOGPROBS_OUTPUT: raw})


# -- structured outputs and extra_body ----------------------------------------------------

SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}


@pytest.mark.parametrize(
    ("response_format", "constraint"),
    [
        (None, None),
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"json_object": True}),
        (
            {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA, "strict": True}},
            {"json": SCHEMA},
        ),
    ],
)
def test_response_format_becomes_structured_outputs(
    response_format: dict[str, Any] | None, constraint: dict[str, Any] | None
) -> None:
    assert constraint_of(response_format) == constraint
    for create in (answer, complete):
        server = FakeServer()
        create(server, response_format=response_format)
        assert sent_sampling(server).get("structured_outputs") == constraint


@pytest.mark.parametrize(
    ("response_format", "extra", "match"),
    [
        ({"type": "structural_tag"}, {}, "response_format type must be one of"),
        ({"type": "json_schema", "json_schema": {"name": "c"}}, {}, "needs json_schema.schema"),
        ({"type": "json_object"}, {"structured_outputs": {"regex": "a+"}}, "structured_outputs.regex"),
        ({"type": "json_object"}, {"guided_choice": ["a"]}, "guided_choice both constrain"),
        ({"type": "json_object"}, {"structured_outputs": ["x"]}, "must be an object"),
    ],
)
def test_response_format_that_cannot_be_sent_is_refused_before_sending(
    response_format: dict[str, Any], extra: dict[str, Any], match: str
) -> None:
    server = FakeServer()
    with pytest.raises(ValueError, match=match):
        answer(server, response_format=response_format, extra_body=extra)
    assert server.calls == []


def test_response_format_keeps_the_options_given_beside_it() -> None:
    extra = {"structured_outputs": json.dumps({"disable_any_whitespace": True}), "seed": 3}
    merged = with_response_format(extra, {"type": "json_object"})
    assert merged == {"structured_outputs": {"disable_any_whitespace": True, "json_object": True}, "seed": 3}
    assert isinstance(extra["structured_outputs"], str)  # the caller's dict is left alone


def test_engine_keys_in_extra_body_pass_through_unchanged() -> None:
    extra = {
        "structured_outputs": {"choice": ["red", "blue"]},
        "guided_regex": "[a-z]+",  # the server refuses the pair by name, not the client
        "lora_name": "style",
        "truncate_prompt_tokens": 64,
        "cache_salt": "tenant-a",
        "prompt_logprobs": 2,
        "not_a_key": 1,  # the server's allow-list decides
    }
    for create in (answer, complete):
        server = FakeServer()
        create(server, max_tokens=5, extra_body=extra)
        assert sent_sampling(server) == {"max_tokens": 5, **extra}


# -- the prompt's logprobs ----------------------------------------------------------------


def with_prompt_logprobs(n: int) -> list[Delta]:
    first = Delta(0, "x", choice=n - 1, prompt_logprobs=PROMPT_LOGPROBS)
    rest = [Delta(0, "y", "stop", choice=c, prompt_tokens=2, completion_tokens=2) for c in range(n)]
    return [first, *rest]


def test_completion_choices_carry_their_prompts_logprobs_as_vllm() -> None:
    completion = complete(FakeServer(deltas=with_prompt_logprobs(2)), n=2, extra_body={"prompt_logprobs": 1})
    assert [choice.prompt_logprobs for choice in completion.choices] == [CLAMPED, CLAMPED]
    assert completion.model_dump()["choices"][1]["prompt_logprobs"] == CLAMPED
    json.loads(completion.model_dump_json())  # -inf is clamped: the JSON stays valid
    plain = complete(FakeServer())
    assert "prompt_logprobs" not in plain.model_dump()["choices"][0]


def test_chat_responses_carry_the_prompts_logprobs_beside_the_choices() -> None:
    completion = answer(FakeServer(deltas=with_prompt_logprobs(1)), extra_body={"prompt_logprobs": 1})
    assert completion.prompt_logprobs == CLAMPED
    assert "prompt_logprobs" not in answer(FakeServer()).model_dump()
    chunks = streamed(FakeServer(deltas=with_prompt_logprobs(1)), chat=True)
    assert [getattr(chunk, "prompt_logprobs", None) for chunk in chunks] == [None, CLAMPED, None]


def test_streamed_completions_put_the_prompts_logprobs_on_the_chunk_that_brought_them() -> None:
    deltas = [
        Delta(0, "", prompt_logprobs=PROMPT_LOGPROBS),
        Delta(0, "y", "stop", prompt_tokens=2, completion_tokens=1),
    ]
    chunks = streamed(FakeServer(deltas=deltas))
    assert [getattr(chunk.choices[0], "prompt_logprobs", None) for chunk in chunks] == [CLAMPED, None]


# -- LoRA adapters ----------------------------------------------------------------------------

SERVED = {
    "base": {"adapters": ["style", "legal"], "max_model_len": 512},
    "other": {"adapters": [], "max_model_len": 2048},
    "not_ours": None,  # no return_model_info input: never asked
    "broken": te.ServiceUnavailableError("[unavailable:engine_restarting] restarting"),
}


def test_models_list_shows_each_model_then_its_adapters() -> None:
    server = FakeServer(SERVED)
    models = asyncio.run(AsyncModels(connect(server)).list())
    assert [(m.id, getattr(m, "parent", None)) for m in models] == [
        ("base", None),
        ("style", "base"),
        ("legal", "base"),
        ("other", None),
        ("not_ours", None),
        ("broken", None),
    ]
    assert [getattr(m, "max_model_len", None) for m in models.data[:4]] == [512, 512, 512, 2048]
    assert models.data[1].owned_by == "triton" and models.data[1].model_dump()["parent"] == "base"
    assert sorted(server.asked) == ["base", "broken", "other"]


def test_an_adapter_is_a_model_its_base_serves_with_lora_name() -> None:
    server = FakeServer(SERVED)
    connection = connect(server)
    completions = AsyncCompletions(connection)
    first = asyncio.run(completions.create(model="style", prompt="a", max_tokens=4))
    assert first.model == "style"  # as the caller named it, as vLLM answers
    # Triton has no model "style": the client looked it up once, then resent.
    assert [(model, requests[0].sampling.get("lora_name")) for model, requests in server.calls] == [
        ("style", None),
        ("base", "style"),
    ]
    asyncio.run(AsyncChatCompletions(connection).create(model="legal", messages=MESSAGES))
    assert server.calls[-1][0] == "base" and sent_sampling(server)["lora_name"] == "legal"
    assert server.listed == 1 and len(server.calls) == 3  # known since the look-up: sent straight away


def test_a_name_neither_model_nor_adapter_stays_not_found() -> None:
    server = FakeServer(SERVED)
    with pytest.raises(te.NotFoundError, match="'nope' is not found"):
        complete(server, model="nope")
    assert server.listed == 1


def test_an_explicit_lora_name_is_sent_as_given() -> None:
    server = FakeServer(SERVED)
    complete(server, model="base", extra_body={"lora_name": "style"})
    assert server.calls[-1][0] == "base" and server.listed == 0
    with pytest.raises(te.NotFoundError):  # lora_name wants the base as model
        complete(server, model="style", extra_body={"lora_name": "style"})
    assert server.listed == 0


def test_an_adapters_embeddings_take_its_base_models_inputs() -> None:
    server = FakeServer(SERVED)
    complete(server, model="style", prompt=None, prompt_embeds=np.ones((2, 4), np.float32))
    (model, (request,)) = server.calls[-1]
    assert model == "base" and request.embeds_tensor is not None
    assert request.embeds_tensor.input_name == EMBEDS_FP32_INPUT
    assert request.sampling["lora_name"] == "style"


def test_a_triton_model_wins_over_an_adapter_of_the_same_name() -> None:
    index = AdapterIndex()
    index.update([ServedModel("a", {"adapters": ["b", "x"]}), ServedModel("b", {"adapters": []})])
    assert (index.base_of("x"), index.base_of("b"), index.base_of("a")) == ("a", None, None)


# -- the transports' model-info request ---------------------------------------------------------


class FakeStub:
    """The gRPC stub's ModelStreamInfer, answering with `responses`."""

    def __init__(self, responses: list[Any]) -> None:
        self.responses = responses
        self.sent: list[Any] = []

    def ModelStreamInfer(self, requests: Any, timeout: float | None = None) -> Any:  # gRPC's name
        self.sent.extend(requests)
        responses = self.responses

        class Call:
            def __aiter__(self) -> AsyncIterator[Any]:
                return self._responses()

            async def _responses(self) -> AsyncIterator[Any]:
                for response in responses:
                    yield response

            async def code(self) -> Any:  # the stream's status, once it closed by itself
                return None

            def cancel(self) -> None:
                pass

        return Call()


def test_grpc_model_info_sends_the_question_alone() -> None:
    info = {"adapters": ["style"], "max_n": 16}
    answer_ = service_pb2.ModelStreamInferResponse(
        infer_response=grpc_response("model_info", **{MODEL_INFO_OUTPUT: json.dumps(info)})
    )
    stub = FakeStub([answer_])
    transport = GrpcTransport("localhost:1", timeout=None)
    transport._service = lambda: stub  # type: ignore[method-assign]
    assert asyncio.run(transport.model_info("base")) == info
    (request,) = stub.sent
    assert request.model_name == "base" and [i.name for i in request.inputs] == [RETURN_MODEL_INFO_INPUT]
    assert request.raw_input_contents == [b"\x01"]
    refused = service_pb2.ModelStreamInferResponse(
        error_message="unexpected inference input 'return_model_info'"
    )
    transport._service = lambda: FakeStub([refused])  # type: ignore[method-assign]
    with pytest.raises(te.BadRequestError):
        asyncio.run(transport.model_info("not_ours"))


Handler = Callable[[dict[str, Any]], list[dict[str, Any]]]


@asynccontextmanager
async def triton_http(models: dict[str, Handler]) -> AsyncIterator[str]:
    """Triton's HTTP generate extension and repository index, for `models`:
    name to the events a request body is answered with."""

    async def generate_stream(request: web.Request) -> web.StreamResponse:
        handler = models.get(request.match_info["model"])
        if handler is None:
            return web.json_response({"error": "Request for unknown model"}, status=404)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in handler(await request.json()):
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
        return response

    async def index(request: web.Request) -> web.Response:
        return web.json_response([{"name": name, "version": "1", "state": "READY"} for name in models])

    async def config(request: web.Request) -> web.Response:
        return web.json_response({"input": [{"name": RETURN_MODEL_INFO_INPUT}]})

    app = web.Application()
    app.router.add_post("/v2/models/{model}/generate_stream", generate_stream)
    app.router.add_post("/v2/repository/index", index)
    app.router.add_get("/v2/models/{model}/config", config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_over_http_n_choices_adapters_and_model_info() -> None:
    bodies: list[dict[str, Any]] = []

    def base(body: dict[str, Any]) -> list[dict[str, Any]]:
        bodies.append(body)
        if body == {RETURN_MODEL_INFO_INPUT: True}:
            return [{MODEL_INFO_OUTPUT: json.dumps({"adapters": ["style"], "max_model_len": 64})}]
        return [  # n=2, streamed: choice 1 ends first, the last event has the totals
            {TEXT_OUTPUT: "B", CHOICE_INDEX_OUTPUT: 1, FINISH_REASON_OUTPUT: "stop"},
            {TEXT_OUTPUT: "A", CHOICE_INDEX_OUTPUT: 0},
            {TEXT_OUTPUT: "a", CHOICE_INDEX_OUTPUT: 0, FINISH_REASON_OUTPUT: "length"}
            | {INPUT_TOKENS_OUTPUT: 2, OUTPUT_TOKENS_OUTPUT: 3},
        ]

    async def scenario() -> tuple[list[str], Completion]:
        async with triton_http({"base": base}) as url, te.AsyncClient(url) as client:
            models = [model.id for model in await client.models.list()]
            completion = await client.completions.create(model="style", prompt="x", n=2)
            return models, completion

    models, completion = asyncio.run(scenario())
    assert models == ["base", "style"]
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [
        (0, "Aa", "length"),
        (1, "B", "stop"),
    ]
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    sampling = json.loads(bodies[-1]["sampling_parameters"])
    assert (sampling["n"], sampling["lora_name"]) == (2, "style")
