"""Requests to a live model with tritonclient (gRPC) and the HTTP generate
API, one input at a time: what the tests and the latency benchmark send when
they need exact control of every tensor (the client package hides those)."""

from __future__ import annotations

import json
import queue
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

from triton_embeds.protocol import (
    CHAT_PARAMETERS_INPUT,
    EMBEDS_BASE64_INPUT,
    EMBEDS_FP32_INPUT,
    EXCLUDE_INPUT,
    FINISH_REASON_OUTPUT,
    INPUT_TOKENS_OUTPUT,
    MESSAGES_INPUT,
    OUTPUT_TOKENS_OUTPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
)

GREEDY = {"temperature": 0, "max_tokens": 8}


def string_array(value: str | bytes) -> np.ndarray:
    return np.array([value.encode() if isinstance(value, str) else value], dtype=np.object_)


def make_inputs(
    text: str | None = None,
    embeds: np.ndarray | None = None,
    embeds_name: str = EMBEDS_FP32_INPUT,
    embeds_b64: str | bytes | None = None,
    stream: bool | None = None,
    sampling: dict | str | None = None,
    exclude_input: bool | None = None,
    messages: list | str | bytes | None = None,
    chat_parameters: dict | str | None = None,
    returns: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Inputs of one request; JSON inputs may be given as objects."""
    inputs: dict[str, np.ndarray] = {}
    if text is not None:
        inputs[TEXT_INPUT] = string_array(text)
    if embeds is not None:
        inputs[embeds_name] = embeds
    if embeds_b64 is not None:
        inputs[EMBEDS_BASE64_INPUT] = string_array(embeds_b64)
    if stream is not None:
        inputs[STREAM_INPUT] = np.array([stream])
    if sampling is not None:
        inputs[SAMPLING_INPUT] = string_array(sampling if isinstance(sampling, str) else json.dumps(sampling))
    if exclude_input is not None:
        inputs[EXCLUDE_INPUT] = np.array([exclude_input])
    if messages is not None:
        inputs[MESSAGES_INPUT] = string_array(
            messages if isinstance(messages, (str, bytes)) else json.dumps(messages)
        )
    if chat_parameters is not None:
        inputs[CHAT_PARAMETERS_INPUT] = string_array(
            chat_parameters if isinstance(chat_parameters, str) else json.dumps(chat_parameters)
        )
    for name in returns:  # the return_* inputs of Triton's vLLM backend
        inputs[name] = np.array([True])
    return inputs


@dataclass
class Result:
    chunks: list[str] = field(default_factory=list)
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    error_status: str | None = None
    final_flags: int = 0
    output_names: list[set[str]] = field(default_factory=list)  # per response with text
    # Every output of every response with data, name -> its first element.
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def grpc_infer(url: str, model: str, inputs: dict[str, np.ndarray], timeout_s: float = 120) -> Result:
    """One request over a gRPC stream; collects every response up to the final flag."""
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        client.async_stream_infer(model, grpc_inputs(inputs), enable_empty_final_response=True)
        return _collect(responses, timeout_s)
    finally:
        client.stop_stream()
        client.close()


class StreamCall:
    """One request on its own gRPC stream, consumed while the test acts."""

    def __init__(self, url: str, model: str, inputs: dict[str, np.ndarray]) -> None:
        self._responses: queue.Queue = queue.Queue()
        self._client = grpcclient.InferenceServerClient(url)
        self._client.start_stream(callback=lambda result, error: self._responses.put((result, error)))
        self._client.async_stream_infer(model, grpc_inputs(inputs), enable_empty_final_response=True)
        self._first: tuple | None = None

    def wait_first(self, timeout_s: float = 60) -> None:
        """Block until the first response (a token, or an error) arrives."""
        self._first = self._responses.get(timeout=timeout_s)

    def result(self, timeout_s: float = 120) -> Result:
        first, self._first = self._first, None
        return _collect(self._responses, timeout_s, first)

    def cancel(self) -> None:
        self._client.stop_stream(cancel_requests=True)
        self._client.close()

    def close(self) -> None:
        self._client.stop_stream()
        self._client.close()


def grpc_inputs(inputs: dict[str, np.ndarray]) -> list:
    converted = []
    for name, array in inputs.items():
        dtype = "BYTES" if array.dtype == np.object_ else np_to_triton_dtype(array.dtype)
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        converted.append(tensor)
    return converted


def _collect(responses: queue.Queue, timeout_s: float, first: tuple | None = None) -> Result:
    result = Result()
    while True:
        response, error = first or responses.get(timeout=timeout_s)
        first = None
        if error is not None:
            result.error, result.error_status = error.message(), error.status()
            result.final_flags += 1
            return result
        if response.get_response().outputs:
            result.outputs.append(_output_values(response))
        text = response.as_numpy(TEXT_OUTPUT)
        if text is not None:
            result.chunks.append(text[0].decode())
            result.output_names.append({output.name for output in response.get_response().outputs})
        finish_reason = response.as_numpy(FINISH_REASON_OUTPUT)
        if finish_reason is not None:  # streamed responses before the last carry only text
            result.finish_reason = finish_reason[0].decode()
        if response.as_numpy(INPUT_TOKENS_OUTPUT) is not None:  # with n > 1, only on the last
            result.prompt_tokens = int(response.as_numpy(INPUT_TOKENS_OUTPUT)[0])
            result.completion_tokens = int(response.as_numpy(OUTPUT_TOKENS_OUTPUT)[0])
        if response.get_response().parameters["triton_final_response"].bool_param:
            result.final_flags += 1
            return result


def _output_values(response: Any) -> dict[str, Any]:
    values = {}
    for output in response.get_response().outputs:
        value = response.as_numpy(output.name).reshape(-1)[0]
        values[output.name] = value.decode() if isinstance(value, bytes) else value.item()
    return values


def http_body(inputs: dict[str, np.ndarray]) -> dict | None:
    """The JSON body of /generate for string/bool inputs; None for raw tensors."""
    body = {}
    for name, array in inputs.items():
        if array.dtype == np.object_:
            value = array[0]
            try:
                body[name] = value.decode() if isinstance(value, bytes) else value
            except UnicodeDecodeError:
                return None
        elif array.dtype == np.bool_:
            body[name] = bool(array[0])
        else:
            return None
    return body


def http_generate(
    url: str, model: str, body: dict, stream: bool = False, timeout_s: float = 120
) -> list[dict]:
    """POST to /generate or /generate_stream; returns the JSON events."""
    endpoint = "generate_stream" if stream else "generate"
    request = urllib.request.Request(
        f"http://{url}/v2/models/{model}/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read().decode()
    except urllib.error.HTTPError as exc:
        return [{"http_status": exc.code, **json.loads(exc.read().decode() or "{}")}]
    if not stream:
        return [json.loads(payload)]
    return [json.loads(line[5:]) for line in payload.splitlines() if line.startswith("data:")]
