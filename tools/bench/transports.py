"""Async clients, one per wire protocol. `prepare` builds a request's complete
wire payload (run before the timed window); `send` only transmits it and
reads the responses, timing the first token and the end.

Responses are parsed as little as possible: the clients share the host's
cores with the server, so client CPU is taken from the thing measured.
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import numpy as np

from triton_embeds.protocol import (
    EMBEDS_BASE64_INPUT,
    EMBEDS_BF16_INPUT,
    EMBEDS_FP16_INPUT,
    EMBEDS_FP32_INPUT,
    EMBEDS_TENSOR_DATATYPES,
    EXCLUDE_INPUT,
    INPUT_TOKENS_OUTPUT,
    OUTPUT_TOKENS_OUTPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
    bool_element,
    bytes_element,
)

from .stats import RequestRecord

_MAX_GRPC_MESSAGE = 2**31 - 1  # gRPC's default 4 MiB would refuse large embeddings
# The benchmark's embeddings kinds and the model input each is sent as.
_EMBEDS_TENSOR_INPUTS = {
    "embeds": EMBEDS_FP32_INPUT,
    "embeds_fp16": EMBEDS_FP16_INPUT,
    "embeds_bf16": EMBEDS_BF16_INPUT,
}


class TritonGrpc:
    """Triton's ModelStreamInfer, one bidirectional stream per request, as
    independent clients would do. Built on grpc.aio and Triton's protobufs
    directly: tritonclient's asyncio stream cannot ask for the final flag."""

    def __init__(
        self,
        url: str,
        model: str,
        kind: str,
        seq_len: int,
        hidden: int,
        sampling: dict[str, Any],
        stream: bool,
    ) -> None:
        self._url, self._model, self._kind = url, model, kind
        self._shape = (seq_len, hidden)
        self._sampling = json.dumps(sampling)
        self._stream = stream
        self._channel: Any = None
        self._stub: Any = None

    async def open(self) -> None:
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        options = [
            ("grpc.max_send_message_length", _MAX_GRPC_MESSAGE),
            ("grpc.max_receive_message_length", _MAX_GRPC_MESSAGE),
        ]
        self._channel = grpc.aio.insecure_channel(self._url, options=options)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def prepare(self, prompt: str | bytes | np.ndarray) -> Any:
        from tritonclient.grpc import service_pb2

        message = service_pb2.ModelInferRequest(model_name=self._model)
        message.parameters["triton_enable_empty_final_response"].bool_param = True
        _add_input(message, SAMPLING_INPUT, "BYTES", (1,), bytes_element(self._sampling))
        _add_input(message, STREAM_INPUT, "BOOL", (1,), bool_element(self._stream))
        _add_input(message, EXCLUDE_INPUT, "BOOL", (1,), bool_element(True))
        if self._kind == "text":
            _add_input(message, TEXT_INPUT, "BYTES", (1,), bytes_element(prompt))
        elif self._kind == "embeds_base64":
            _add_input(message, EMBEDS_BASE64_INPUT, "BYTES", (1,), bytes_element(prompt))
        else:
            name = _EMBEDS_TENSOR_INPUTS[self._kind]
            datatype = EMBEDS_TENSOR_DATATYPES[name]
            data = prompt.tobytes() if isinstance(prompt, np.ndarray) else prompt
            _add_input(message, name, datatype, self._shape, data)
        return message

    async def send(self, message: Any) -> RequestRecord:
        record = RequestRecord(time.monotonic(), 0.0)
        call = self._stub.ModelStreamInfer(iter((message,)))
        last_output = None
        try:
            async for response in call:
                if response.error_message:
                    record.error = response.error_message[:300]
                    break
                infer = response.infer_response
                if infer.outputs:
                    if record.first_token is None and self._stream:
                        record.first_token = time.monotonic()
                    last_output = infer
                if infer.parameters["triton_final_response"].bool_param:
                    break
        finally:
            call.cancel()  # a no-op once the request has finished
        record.end = time.monotonic()
        if last_output is not None:
            record.prompt_tokens, record.output_tokens = _grpc_usage(last_output)
        elif record.error is None:
            record.error = "stream ended without an output"
        return record

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def _add_input(message: Any, name: str, datatype: str, shape: tuple[int, ...], data: bytes) -> None:
    tensor = message.inputs.add(name=name, datatype=datatype)
    tensor.shape.extend(shape)
    message.raw_input_contents.append(data)


def _grpc_usage(infer: Any) -> tuple[int, int]:
    names = [output.name for output in infer.outputs]
    raw = infer.raw_output_contents
    prompt = struct.unpack_from("<I", raw[names.index(INPUT_TOKENS_OUTPUT)])[0]
    output = struct.unpack_from("<I", raw[names.index(OUTPUT_TOKENS_OUTPUT)])[0]
    return prompt, output


class _HttpTransport:
    """Shared aiohttp session handling for the two HTTP protocols."""

    def __init__(self, url: str, connections: int) -> None:
        self._url = url
        self._connections = connections
        self._session: Any = None

    async def open(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self._connections)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post_events(self, body: bytes, record: RequestRecord, stream: bool) -> dict | None:
        """POST and read server-sent events (or one JSON body); returns the
        last event that carried usage, marking the first token on the way."""
        headers = {"Content-Type": "application/json"}
        async with self._session.post(self._url, data=body, headers=headers) as response:
            if response.status != 200:
                record.error = f"HTTP {response.status}: {(await response.text())[:250]}"
                return None
            if not stream:
                return await response.json(content_type=None)
            return await self._read_events(response, record)

    async def _read_events(self, response: Any, record: RequestRecord) -> dict | None:
        last = None
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                record.error = str(event["error"])[:300]
                return None
            if record.first_token is None and self._is_token(event):
                record.first_token = time.monotonic()
            if self._has_usage(event):
                last = event
        return last

    @staticmethod
    def _is_token(event: dict) -> bool:
        raise NotImplementedError

    @staticmethod
    def _has_usage(event: dict) -> bool:
        raise NotImplementedError


class TritonHttp(_HttpTransport):
    """Triton's /v2/models/<m>/generate_stream: the model's inputs as JSON fields."""

    def __init__(
        self, url: str, model: str, kind: str, sampling: dict[str, Any], stream: bool, connections: int
    ) -> None:
        super().__init__(f"http://{url}/v2/models/{model}/generate_stream", connections)
        self._kind, self._sampling, self._stream = kind, json.dumps(sampling), stream

    def prepare(self, prompt: str) -> bytes:
        field = {"embeds_base64": EMBEDS_BASE64_INPUT, "text": TEXT_INPUT}[self._kind]
        return json.dumps(
            {field: prompt, STREAM_INPUT: self._stream, EXCLUDE_INPUT: True, SAMPLING_INPUT: self._sampling}
        ).encode()

    async def send(self, body: bytes) -> RequestRecord:
        record = RequestRecord(time.monotonic(), 0.0)
        # generate_stream either way: with stream=false the model sends one event.
        last = await self._post_events(body, record, stream=True)
        record.end = time.monotonic()
        if not self._stream:
            record.first_token = None
        if last is not None:
            record.prompt_tokens = int(last[INPUT_TOKENS_OUTPUT])
            record.output_tokens = int(last[OUTPUT_TOKENS_OUTPUT])
        elif record.error is None:
            record.error = "stream ended without an output"
        return record

    @staticmethod
    def _is_token(event: dict) -> bool:
        return TEXT_OUTPUT in event

    @staticmethod
    def _has_usage(event: dict) -> bool:
        return OUTPUT_TOKENS_OUTPUT in event


class OpenAICompletions(_HttpTransport):
    """`vllm serve` /v1/completions; embeddings go in `prompt_embeds` as base64."""

    def __init__(
        self, url: str, model: str, kind: str, sampling: dict[str, Any], stream: bool, connections: int
    ) -> None:
        super().__init__(f"http://{url}/v1/completions", connections)
        self._model, self._kind, self._sampling, self._stream = model, kind, sampling, stream

    def prepare(self, prompt: str) -> bytes:
        body: dict[str, Any] = {"model": self._model, **self._sampling, "stream": self._stream}
        if self._stream:
            body["stream_options"] = {"include_usage": True}
        body["prompt_embeds" if self._kind == "embeds_base64" else "prompt"] = prompt
        return json.dumps(body).encode()

    async def send(self, body: bytes) -> RequestRecord:
        record = RequestRecord(time.monotonic(), 0.0)
        last = await self._post_events(body, record, self._stream)
        record.end = time.monotonic()
        if last is not None and last.get("usage"):
            record.prompt_tokens = int(last["usage"]["prompt_tokens"])
            record.output_tokens = int(last["usage"]["completion_tokens"])
        elif record.error is None:
            record.error = "response without usage"
        return record

    @staticmethod
    def _is_token(event: dict) -> bool:
        return bool(event.get("choices"))

    @staticmethod
    def _has_usage(event: dict) -> bool:
        return bool(event.get("usage"))
