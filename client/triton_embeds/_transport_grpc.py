"""gRPC transport: Triton's ModelStreamInfer on a grpc.aio channel.

The model is decoupled, so Triton only serves it over the bidirectional
stream. All prompts of one call share one stream, told apart by request id;
cancelling the call (a closed stream, a timeout) cancels every request on
the server, as tritonclient's `stop_stream(cancel_requests=True)` does.

Requests are built from Triton's protobuf messages directly rather than
through tritonclient's stream helpers: its asyncio `stream_infer` cannot ask
for the empty final response that marks the end of each request, and its
threaded stream would need a callback thread per call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import grpc
from tritonclient.grpc import InferResult, service_pb2, service_pb2_grpc

from ._adapters import parse_model_info
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    error_from_message,
)
from ._logprobs import parse_logprobs, parse_prompt_logprobs
from ._replicas import LoadBalancing, channel_target
from ._types import Delta, GenerateRequest, TensorPayload, TokenLogprobs
from .protocol import (
    CHOICE_INDEX_OUTPUT,
    EXCLUDE_INPUT,
    FINISH_REASON_OUTPUT,
    INPUT_TOKENS_OUTPUT,
    LOGPROBS_OUTPUT,
    MODEL_INFO_OUTPUT,
    OUTPUT_TOKENS_OUTPUT,
    PROMPT_LOGPROBS_OUTPUT,
    RETURN_LOGPROBS_INPUT,
    RETURN_MODEL_INFO_INPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_OUTPUT,
    bool_element,
    bytes_element,
)

# Triton's own limit; gRPC's default 4 MiB would refuse large embeddings.
_MAX_MESSAGE = 2**31 - 1
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
)

_Input = tuple[str, str, tuple[int, ...], bytes]  # name, datatype, shape, raw bytes


class GrpcTransport:
    """Talks to Triton over one gRPC channel: `url` is `host:port` or a gRPC
    target URI (`dns:///name:8001`, `ipv4:10.0.0.1:8001,10.0.0.2:8001`),
    whose addresses the channel's `load_balancing` policy spreads calls
    over ("round_robin") or fails over between ("pick_first")."""

    def __init__(self, url: str, timeout: float | None, load_balancing: LoadBalancing = "pick_first") -> None:
        self.target = channel_target(url)
        self.options = (*_CHANNEL_OPTIONS, ("grpc.lb_policy_name", load_balancing))
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _service(self) -> Any:
        """The stub for the running loop: grpc.aio channels belong to one loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._channel = grpc.aio.insecure_channel(self.target, options=list(self.options))
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
            self._loop = loop
        return self._stub

    async def model_inputs(self, model: str) -> frozenset[str]:
        request = service_pb2.ModelConfigRequest(name=model)
        response = await self._unary(self._service().ModelConfig, request)
        return frozenset(tensor.name for tensor in response.config.input)

    async def list_models(self) -> list[tuple[str, str]]:
        request = service_pb2.RepositoryIndexRequest(ready=False)
        response = await self._unary(self._service().RepositoryIndex, request)
        return [(model.name, model.state) for model in response.models]

    async def model_info(self, model: str) -> dict[str, Any]:
        """Over the stream, as every request to a decoupled model goes."""
        message = service_pb2.ModelInferRequest(model_name=model, id="model_info")
        name, datatype, shape, data = _bool(RETURN_MODEL_INFO_INPUT, True)
        message.inputs.add(name=name, datatype=datatype).shape.extend(shape)
        message.raw_input_contents.append(data)
        call = self._service().ModelStreamInfer(iter([message]), timeout=self._timeout)
        answered = False
        try:
            async for response in call:
                answered = True  # one response, data or error, ends this request
                if response.error_message:
                    raise error_from_message(response.error_message)
                raw = InferResult(response.infer_response).as_numpy(MODEL_INFO_OUTPUT)
                if raw is not None:
                    return parse_model_info(raw.reshape(-1)[0])
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            await _end_call(call, cancel=not answered)
        raise InternalServerError(f"model {model!r} answered without its model_info")

    async def _unary(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def generate(self, model: str, requests: list[GenerateRequest]) -> AsyncGenerator[Delta, None]:
        """Deltas of every request, interleaved, until each sent its final flag."""
        messages = [_infer_request(model, request) for request in requests]
        logprobs = any(request.return_logprobs for request in requests)
        call = self._service().ModelStreamInfer(iter(messages))
        unfinished = len(messages)
        error: APIError | None = None
        try:
            async for response in call:
                if response.error_message:
                    error = error_from_message(response.error_message)  # it ends its request
                    unfinished -= 1
                    break
                delta, final = _parse_response(response.infer_response, logprobs)
                unfinished -= final
                if delta is not None:
                    yield delta
                if not unfinished:
                    break
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            await _end_call(call, cancel=unfinished > 0)
        if error is not None:
            raise error
        if unfinished:
            raise APIConnectionError("the server closed the stream before the request finished")

    async def close(self) -> None:
        if self._channel is not None and self._loop is asyncio.get_running_loop():
            await self._channel.close()
        self._channel = self._stub = self._loop = None


async def _end_call(call: Any, cancel: bool) -> None:
    """Cancel a stream whose requests are still running (the caller gave up:
    the server then cancels them). One whose requests all ended is let to
    close by itself, the server's status read: cancelling it instead races
    tritonserver's own cleanup of the stream, and in that race (seen with
    error responses under load) tritonserver kept a request's model
    reference, so the model never unloaded and shutdown hung until the exit
    timeout."""
    if not cancel:
        try:
            await asyncio.wait_for(call.code(), _STREAM_CLOSE_TIMEOUT_S)
            return
        except (asyncio.TimeoutError, grpc.aio.AioRpcError):
            pass
    call.cancel()


# How long a finished stream may take to close before it is cancelled.
_STREAM_CLOSE_TIMEOUT_S = 5.0


def error_from_rpc(exc: grpc.aio.AioRpcError) -> APIError:
    """RPC-level failures: Triton puts a model's own errors inside the stream,
    so UNAVAILABLE here means the connection, not the model."""
    code, message = exc.code(), exc.details() or str(exc.code())
    if code == grpc.StatusCode.UNAVAILABLE:
        return APIConnectionError(f"cannot reach the Triton gRPC endpoint: {message}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return APITimeoutError(message)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(message)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadRequestError(message)
    return InternalServerError(f"{code.name}: {message}")


def _infer_request(model: str, request: GenerateRequest) -> Any:
    message = service_pb2.ModelInferRequest(model_name=model, id=str(request.index))
    # Ask for the flags-only final response, so the end of every request is seen.
    message.parameters["triton_enable_empty_final_response"].bool_param = True
    for name, datatype, shape, data in _inputs(request):
        tensor = message.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(shape)
        message.raw_input_contents.append(data)
    return message


def _inputs(request: GenerateRequest) -> Iterator[_Input]:
    yield _string(SAMPLING_INPUT, json.dumps(request.sampling))
    yield _bool(STREAM_INPUT, request.stream)
    yield _bool(EXCLUDE_INPUT, True)  # neither API echoes the prompt (chat never does)
    if request.return_logprobs:
        yield _bool(RETURN_LOGPROBS_INPUT, True)
    for name, value in request.prompt_inputs():
        if isinstance(value, TensorPayload):
            yield name, value.datatype, value.shape, value.data
        else:
            yield _string(name, value)


def _string(name: str, value: str) -> _Input:
    return name, "BYTES", (1,), bytes_element(value)


def _bool(name: str, value: bool) -> _Input:
    return name, "BOOL", (1,), bool_element(value)


def _parse_response(response: Any, logprobs: bool = False) -> tuple[Delta | None, bool]:
    """The delta of one response and whether it was the request's last;
    `logprobs`: whether a request of the call asked for them. Responses
    before a request's last carry the text alone, or (n > 1) the text, the
    choice and, on each choice's last, its finish reason; only the
    request's last has the token counts."""
    parameters = response.parameters
    final = "triton_final_response" in parameters and parameters["triton_final_response"].bool_param
    result = InferResult(response)
    text = result.as_numpy(TEXT_OUTPUT)
    if text is None:  # the flags-only final response
        return None, final
    finish_reason = _first(result, FINISH_REASON_OUTPUT)
    prompt_logprobs = _first(result, PROMPT_LOGPROBS_OUTPUT)
    delta = Delta(
        index=int(response.id or 0),
        text=text.reshape(-1)[0].decode("utf-8"),
        finish_reason=None if finish_reason is None else finish_reason.decode() or None,
        prompt_tokens=_optional_int(_first(result, INPUT_TOKENS_OUTPUT)),
        completion_tokens=_optional_int(_first(result, OUTPUT_TOKENS_OUTPUT)),
        logprobs=_logprobs(result) if logprobs else None,
        choice=_optional_int(_first(result, CHOICE_INDEX_OUTPUT)) or 0,
        prompt_logprobs=None if prompt_logprobs is None else parse_prompt_logprobs(prompt_logprobs),
    )
    return delta, final


def _first(result: InferResult, name: str) -> Any:
    """The output's one element; None when the response does not carry it."""
    array = result.as_numpy(name)
    return None if array is None else array.reshape(-1)[0]


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _logprobs(result: InferResult) -> list[TokenLogprobs] | None:
    raw = _first(result, LOGPROBS_OUTPUT)
    return None if raw is None else parse_logprobs(raw)
