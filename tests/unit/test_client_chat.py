"""`client.chat.completions` without a server: how a conversation's
embeddings parts travel on each transport, which `extra_body` keys become
chat parameters, the openai objects built from the model's deltas, and the
CLI's chat mode. A fake transport records the requests and answers with
scripted deltas."""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
from collections.abc import AsyncGenerator, Collection
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import pytest
import torch
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import triton_embeds as te
from triton_embeds import cli
from triton_embeds._chat_messages import encode_chat
from triton_embeds._transport import Connection, EmbedsTransport
from triton_embeds._transport_grpc import _inputs
from triton_embeds._transport_http import _body
from triton_embeds._types import Delta, GenerateRequest
from triton_embeds.protocol import (
    CHAT_PARAMETERS_INPUT,
    EMBEDS_BF16_INPUT,
    EMBEDS_FP16_INPUT,
    EMBEDS_FP32_INPUT,
    EMBEDS_TENSOR_DATATYPES,
    MESSAGES_INPUT,
    TEXT_INPUT,
)
from triton_embeds.resources.chat import AsyncChatCompletions, ChatCompletionParams, ChatCompletions

HIDDEN = 8
ALL_INPUTS = frozenset(EMBEDS_TENSOR_DATATYPES)
ANSWER = [Delta(0, "Par"), Delta(0, "is"), Delta(0, ".", "stop", prompt_tokens=12, completion_tokens=3)]


class FakeTransport:
    """Records each call's requests and answers with `deltas`; `error`
    is raised before the first delta, as a rejected request's is."""

    def __init__(
        self,
        deltas: list[Delta] | None = None,
        inputs: Collection[str] = ALL_INPUTS,
        error: Exception | None = None,
    ) -> None:
        self.deltas = ANSWER if deltas is None else deltas
        self.inputs = frozenset(inputs)
        self.error = error
        self.requests: list[GenerateRequest] = []
        self.inputs_looked_up = 0

    async def generate(self, model: str, requests: list[GenerateRequest]) -> AsyncGenerator[Delta, None]:
        self.requests.extend(requests)
        if self.error is not None:
            raise self.error
        for delta in self.deltas:
            yield delta

    async def model_inputs(self, model: str) -> frozenset[str]:
        self.inputs_looked_up += 1
        return self.inputs

    async def list_models(self) -> list[tuple[str, str]]:
        return []

    async def close(self) -> None:
        pass


def encode(
    messages: Any, transport: EmbedsTransport = "binary", inputs: Collection[str] = ALL_INPUTS
) -> tuple[list[dict[str, Any]], Any]:
    """(the messages JSON, decoded; the raw tensor payload) of a conversation."""

    async def model_inputs() -> Collection[str]:
        return inputs

    encoded = asyncio.run(encode_chat(messages, transport, model_inputs))
    return json.loads(encoded.messages), encoded.embeds_tensor


def embeds_part(data: Any) -> dict[str, Any]:
    return {"type": "prompt_embeds", "data": data}


def saved(tensor: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    return buffer.getvalue()


def loaded(data: str) -> torch.Tensor:
    return torch.load(io.BytesIO(base64.b64decode(data)), weights_only=True)


def chat(transport: FakeTransport, embeds_transport: EmbedsTransport = "binary") -> AsyncChatCompletions:
    return AsyncChatCompletions(Connection(transport, embeds_transport, timeout=None))


# -- embeddings parts on the wire -------------------------------------------------------


def test_tensor_parts_become_rows_of_one_tensor_in_part_order() -> None:
    first, second = torch.randn(3, HIDDEN), torch.randn(1, 2, HIDDEN)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Read:"}, embeds_part(first)]},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": [embeds_part(second), {"type": "text", "text": "And this?"}]},
    ]
    sent, tensor = encode(messages)
    assert sent[0] == messages[0] and sent[2] == messages[2]
    assert sent[1]["content"] == [{"type": "text", "text": "Read:"}, {"type": "prompt_embeds", "rows": 3}]
    assert sent[3]["content"][0] == {"type": "prompt_embeds", "rows": 2}
    assert (tensor.input_name, tensor.datatype, tensor.shape) == (EMBEDS_FP32_INPUT, "FP32", (5, HIDDEN))
    rows = np.frombuffer(tensor.data, dtype=np.float32).reshape(5, HIDDEN)
    assert np.array_equal(rows, torch.cat([first, second[0]]).numpy())


@pytest.mark.parametrize(
    ("dtypes", "inputs", "expected"),
    [
        ((torch.bfloat16, torch.bfloat16), ALL_INPUTS, EMBEDS_BF16_INPUT),
        ((torch.float16, torch.float16), ALL_INPUTS, EMBEDS_FP16_INPUT),
        ((torch.bfloat16, torch.bfloat16), {EMBEDS_FP32_INPUT}, EMBEDS_FP32_INPUT),
        ((torch.float16, torch.bfloat16), ALL_INPUTS, EMBEDS_FP32_INPUT),  # mixed: a common dtype
        ((torch.float16, torch.float32), ALL_INPUTS, EMBEDS_FP32_INPUT),
    ],
)
def test_the_joined_tensor_takes_a_dtype_the_model_has_an_input_for(
    dtypes: tuple[torch.dtype, ...], inputs: Collection[str], expected: str
) -> None:
    tensors = [torch.randn(2, HIDDEN).to(dtype) for dtype in dtypes]
    messages = [{"role": "user", "content": [embeds_part(t) for t in tensors]}]
    _, tensor = encode(messages, inputs=inputs)
    assert tensor.input_name == expected and tensor.shape == (4, HIDDEN)
    if expected == EMBEDS_FP32_INPUT:  # the upcast is exact
        rows = np.frombuffer(tensor.data, dtype=np.float32).reshape(4, HIDDEN)
        assert np.array_equal(rows, torch.cat([t.float() for t in tensors]).numpy())


def test_numpy_arrays_join_without_torch_in_their_own_dtype() -> None:
    arrays = [np.ones((2, HIDDEN), np.float16), np.zeros((1, HIDDEN), np.float16)]
    sent, tensor = encode([{"role": "user", "content": [embeds_part(a) for a in arrays]}])
    assert [part["rows"] for part in sent[0]["content"]] == [2, 1]
    assert (tensor.input_name, tensor.shape) == (EMBEDS_FP16_INPUT, (3, HIDDEN))
    assert tensor.data == np.concatenate(arrays).tobytes()


def test_base64_strings_and_bytes_stay_data_parts_beside_rows() -> None:
    tensor = torch.randn(2, HIDDEN)
    as_text, as_bytes = te.encode_prompt_embeds(torch.randn(4, HIDDEN)), saved(torch.randn(3, HIDDEN))
    content = [embeds_part(as_text), embeds_part(tensor), embeds_part(as_bytes)]
    sent, payload = encode([{"role": "user", "content": content}])
    assert sent[0]["content"] == [
        {"type": "prompt_embeds", "data": as_text},
        {"type": "prompt_embeds", "rows": 2},
        {"type": "prompt_embeds", "data": base64.b64encode(as_bytes).decode()},
    ]
    assert payload.shape == (2, HIDDEN)  # only the tensor's rows


def test_only_strings_and_bytes_need_no_model_inputs_and_no_tensor() -> None:
    transport = FakeTransport()
    messages = [{"role": "user", "content": [embeds_part(saved(torch.randn(2, HIDDEN)))]}]
    asyncio.run(chat(transport).create(model="m", messages=messages))
    (request,) = transport.requests
    assert request.embeds_tensor is None and transport.inputs_looked_up == 0


@pytest.mark.parametrize("inputs", [frozenset(), frozenset({EMBEDS_BF16_INPUT})])
def test_without_a_fitting_raw_input_every_part_goes_base64(inputs: frozenset[str]) -> None:
    tensors = [torch.randn(2, HIDDEN), torch.randn(3, HIDDEN).to(torch.bfloat16)]
    sent, payload = encode([{"role": "user", "content": [embeds_part(t) for t in tensors]}], inputs=inputs)
    assert payload is None
    for part, tensor in zip(sent[0]["content"], tensors, strict=True):
        assert torch.equal(loaded(part["data"]), tensor)


def test_base64_transport_sends_every_part_as_data() -> None:
    transport = FakeTransport()
    tensor, array = torch.randn(3, HIDDEN).to(torch.bfloat16), np.random.rand(1, 2, HIDDEN).astype(np.float32)
    messages = [{"role": "user", "content": [embeds_part(tensor), embeds_part(array)]}]
    asyncio.run(chat(transport, "base64").create(model="m", messages=messages))
    (request,) = transport.requests
    assert request.embeds_tensor is None and transport.inputs_looked_up == 0
    first, second = json.loads(request.messages or "")[0]["content"]
    assert first.keys() == {"type", "data"} and torch.equal(loaded(first["data"]), tensor)
    assert torch.equal(loaded(second["data"]), torch.from_numpy(array[0]))


def test_the_callers_messages_are_not_changed() -> None:
    tensor = torch.randn(2, HIDDEN)
    original = tensor.clone()
    part = embeds_part(tensor)
    content = [{"type": "text", "text": "x"}, part]
    message = {"role": "user", "content": content, "name": "ann"}
    messages = [message]
    for transport in ("binary", "base64"):
        sent, _ = encode(messages, transport)
        assert sent[0]["name"] == "ann"
    assert messages == [message] and message == {"role": "user", "content": content, "name": "ann"}
    assert content == [{"type": "text", "text": "x"}, part]
    assert part == {"type": "prompt_embeds", "data": tensor} and torch.equal(tensor, original)


def test_parts_of_different_hidden_sizes_are_refused_before_sending() -> None:
    transport = FakeTransport()
    messages = [
        {"role": "user", "content": [embeds_part(torch.randn(2, HIDDEN))]},
        {"role": "user", "content": [embeds_part(np.zeros((3, HIDDEN * 2), np.float32))]},
    ]
    for embeds_transport in ("binary", "base64"):
        with pytest.raises(
            ValueError, match=r"share a hidden size.*messages\[1\]\.content\[0\] is \[3, 16\]"
        ):
            asyncio.run(chat(transport, embeds_transport).create(model="m", messages=messages))
    assert transport.requests == []


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (torch.randn(2, 3, HIDDEN), ValueError, "2 prompts"),
        (
            torch.randn(HIDDEN),
            ValueError,
            r"messages\[0\]\.content\[0\]\.data: prompt_embeds must have shape",
        ),
        (torch.randn(0, HIDDEN), ValueError, "has no rows"),
        ([[0.0] * HIDDEN], TypeError, "got list"),
        (42, TypeError, "must be a torch.Tensor"),
        (None, ValueError, 'needs "data"'),
    ],
)
def test_parts_that_are_not_one_prompts_embeddings_are_refused(data: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        encode([{"role": "user", "content": [embeds_part(data)]}])


def test_rows_parts_are_the_clients_to_make() -> None:
    with pytest.raises(ValueError, match='"rows" parts are made by the client'):
        encode([{"role": "user", "content": [{"type": "prompt_embeds", "rows": 2}]}])


def test_messages_must_be_a_non_empty_list_of_messages() -> None:
    with pytest.raises(TypeError, match="list of chat messages"):
        encode({"role": "user", "content": "hi"})
    with pytest.raises(ValueError, match="messages is empty"):
        encode([])
    with pytest.raises(TypeError, match=r"messages\[0\] must be a dict"):
        encode(["hi"])


def test_an_earlier_responses_message_is_sent_as_role_and_content() -> None:
    transport = FakeTransport()
    answer = asyncio.run(chat(transport).create(model="m", messages=[{"role": "user", "content": "Hi"}]))
    follow_up = [
        {"role": "user", "content": "Hi"},
        answer.choices[0].message,
        {"role": "user", "content": "?"},
    ]
    sent, _ = encode(follow_up)
    assert sent[1] == {"role": "assistant", "content": "Paris."}


def test_chat_requests_on_the_wire() -> None:
    tensor = torch.randn(2, HIDDEN)
    transport = FakeTransport()
    messages = [{"role": "user", "content": [embeds_part(tensor)]}]
    asyncio.run(chat(transport).create(model="m", messages=messages))
    grpc_inputs = {name: (datatype, shape) for name, datatype, shape, _ in _inputs(transport.requests[0])}
    assert grpc_inputs[MESSAGES_INPUT] == ("BYTES", (1,))
    assert grpc_inputs[EMBEDS_FP32_INPUT] == ("FP32", (2, HIDDEN))
    assert TEXT_INPUT not in grpc_inputs and CHAT_PARAMETERS_INPUT not in grpc_inputs
    with pytest.raises(ValueError, match="cannot travel over HTTP"):
        _body(transport.requests[0])
    asyncio.run(chat(transport, "base64").create(model="m", messages=messages))
    body = _body(transport.requests[1])
    assert json.loads(body[MESSAGES_INPUT])[0]["content"][0]["type"] == "prompt_embeds"
    assert TEXT_INPUT not in body and not set(body) & set(EMBEDS_TENSOR_DATATYPES)


# -- create(): parameters and responses --------------------------------------------------


def test_chat_parameters_are_split_from_extra_body() -> None:
    transport = FakeTransport()
    extra = {
        "add_generation_prompt": False,
        "continue_final_message": True,
        "chat_template_kwargs": {"enable_thinking": False},
        "ignore_eos": True,
    }
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The"}]
    completions = chat(transport)
    asyncio.run(completions.create(model="m", messages=messages, max_tokens=5, extra_body=extra))
    asyncio.run(completions.create(model="m", messages=messages, max_tokens=5, max_completion_tokens=7))
    with_parameters, without = transport.requests
    assert json.loads(with_parameters.chat_parameters or "") == {
        "add_generation_prompt": False,
        "continue_final_message": True,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    assert with_parameters.sampling == {"max_tokens": 5, "ignore_eos": True}
    assert without.chat_parameters is None and without.sampling == {"max_tokens": 7}
    assert extra["ignore_eos"] is True and len(extra) == 4  # the caller's dict is left alone
    sent = {name for name, *_ in _inputs(with_parameters)}
    assert {MESSAGES_INPUT, CHAT_PARAMETERS_INPUT} <= sent and TEXT_INPUT not in sent


def test_a_whole_answer_is_one_chat_completion() -> None:
    answer = asyncio.run(
        chat(FakeTransport()).create(model="m", messages=[{"role": "user", "content": "Capital?"}])
    )
    assert isinstance(answer, ChatCompletion) and answer.object == "chat.completion"
    assert answer.id.startswith("chatcmpl-") and answer.model == "m"
    (choice,) = answer.choices
    assert (choice.index, choice.message.role, choice.message.content) == (0, "assistant", "Paris.")
    assert choice.finish_reason == "stop"
    usage = answer.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 3, 15)


async def _chunks(include_usage: bool, deltas: list[Delta] | None = None) -> list[ChatCompletionChunk]:
    stream = await chat(FakeTransport(deltas)).create(
        model="m",
        messages=[{"role": "user", "content": "Capital?"}],
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    return [chunk async for chunk in stream]


def test_a_stream_starts_with_the_role_and_ends_with_usage() -> None:
    chunks = asyncio.run(_chunks(include_usage=True, deltas=[Delta(0, ""), *ANSWER]))
    assert all(isinstance(c, ChatCompletionChunk) and c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    role, *content, usage = chunks
    assert role.choices[0].delta.role == "assistant" and role.choices[0].delta.content == ""
    # A delta whose token decodes to no text yet still gets its chunk, as in vLLM.
    assert [c.choices[0].delta.content for c in content] == ["", "Par", "is", "."]
    assert [c.choices[0].finish_reason for c in content] == [None, None, None, "stop"]
    assert all(c.choices[0].delta.role is None and c.usage is None for c in content)
    assert usage.choices == [] and usage.usage is not None and usage.usage.total_tokens == 15


def test_without_include_usage_no_usage_chunk_is_sent() -> None:
    chunks = asyncio.run(_chunks(include_usage=False))
    assert len(chunks) == 4 and chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


def test_a_rejected_stream_raises_from_create() -> None:
    error = te.BadRequestError("[rejected:bad_messages] messages[0].role is 'x'")
    completions = chat(FakeTransport(error=error))
    with pytest.raises(te.BadRequestError):
        asyncio.run(completions.create(model="m", messages=[{"role": "x", "content": ""}], stream=True))


def test_the_sync_client_answers_and_streams() -> None:
    with te.Client("localhost:1") as client:
        client._async._connection.transport = FakeTransport()
        messages = [{"role": "user", "content": [embeds_part(np.ones((2, HIDDEN), np.float32))]}]
        answer = client.chat.completions.create(model="m", messages=messages)
        assert answer.choices[0].message.content == "Paris."
        with client.chat.completions.create(model="m", messages=messages, stream=True) as stream:
            assert isinstance(stream, te.Stream)
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert text == "Paris."


def test_sync_create_shows_the_async_signature_and_docs() -> None:
    assert inspect.signature(ChatCompletions.create) == inspect.signature(AsyncChatCompletions.create)
    assert ChatCompletions.create.__doc__ == AsyncChatCompletions.create.__doc__
    parameters = set(inspect.signature(AsyncChatCompletions.create).parameters)
    assert set(get_type_hints(ChatCompletionParams)) == parameters - {"self", "model", "messages", "stream"}


# -- the CLI's chat mode -----------------------------------------------------------------


def test_cli_chat_sends_the_system_and_user_messages() -> None:
    args = cli.parse_args(["--chat", "--system", "Be brief.", "Capital of France?", "--max-tokens", "8"])
    arguments = cli.request_arguments(args)
    assert arguments["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert arguments["max_tokens"] == 8 and "prompt" not in arguments


def test_cli_chat_puts_the_embeddings_before_the_text(tmp_path: Path) -> None:
    path = tmp_path / "prompt.pt"
    path.write_bytes(saved(torch.randn(2, HIDDEN)))
    both = cli.request_arguments(cli.parse_args(["--chat", "--embeds", str(path), "Summarize."]))
    assert both["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "prompt_embeds", "data": path.read_bytes()},
                {"type": "text", "text": "Summarize."},
            ],
        }
    ]
    alone = cli.request_arguments(cli.parse_args(["--chat", "--embeds", str(path)]))
    assert alone["messages"][0]["content"] == [{"type": "prompt_embeds", "data": path.read_bytes()}]


@pytest.mark.parametrize(
    "argv",
    [["--system", "S", "hi"], ["--chat"], ["--chat", "--system", "S"], ["--embeds", "x.pt", "hi"]],
)
def test_cli_refuses_incomplete_or_conflicting_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(argv)


@pytest.mark.parametrize("no_stream", [False, True])
def test_cli_chat_prints_the_answer_and_usage(no_stream: bool, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--chat", "Capital?", *(["--no-stream"] if no_stream else [])]
    with te.Client("localhost:1") as client:
        client._async._connection.transport = FakeTransport()
        cli.run(client, cli.parse_args(argv))
    out, err = capsys.readouterr()
    assert out == "Paris.\n" and "[12 prompt + 3 completion tokens]" in err
