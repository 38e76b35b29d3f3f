"""Everything that touches Triton's python-backend types: reading request
inputs, building responses and errors, and sending them off the event loop."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from .contract import (
    BOOL_INPUTS,
    CHOICE_INDEX_OUTPUT,
    CUMULATIVE_LOGPROB_OUTPUT,
    EMBEDS_TENSOR_INPUTS,
    FINISH_REASON_OUTPUT,
    INPUT_TOKENS_OUTPUT,
    LOGPROBS_OUTPUT,
    MODEL_INFO_OUTPUT,
    OUTPUT_TOKENS_OUTPUT,
    PROMPT_LOGPROBS_OUTPUT,
    STRING_INPUTS,
    TEXT_OUTPUT,
    ErrorKind,
    error_message,
)
from .request_parsing import NO_EXTRA_OUTPUTS, ExtraOutputs
from .stub_ipc import STUB_IPC

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def read_inputs(request: Any) -> dict[str, Any]:
    """Map input name -> first string element, bool, or tensor. Embeddings
    are copied out of the request's buffer (through dlpack: BF16 has no numpy
    form): a view would keep the stub's tensor alive until whichever thread
    drops it last (a rejection's traceback, vLLM), and releasing it is a stub
    call that must not race the response thread's (see stub_ipc). Every stub
    object is made and released here, under the stub lock."""
    inputs: dict[str, Any] = {}
    with STUB_IPC:
        for name in STRING_INPUTS:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                inputs[name] = _first_element(tensor.as_numpy())
        for name in BOOL_INPUTS:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                inputs[name] = bool(_first_element(tensor.as_numpy()))
        for name in EMBEDS_TENSOR_INPUTS:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                inputs[name] = torch.from_dlpack(tensor.to_dlpack()).clone()
        del tensor
    return inputs


def _first_element(array: np.ndarray) -> Any:
    flat = array.reshape(-1)
    return flat[0] if flat.size else None


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class StepOutputs:
    """What engine steps added beyond text, for the backend's extra outputs:
    new tokens, their logprobs (per token: {token_id: {"logprob", "rank",
    "decoded_token"}}; None when the request asked for none) and the
    cumulative logprob after them."""

    new_tokens: int = 0
    logprobs: list[dict[int, dict[str, Any]] | None] | None = None
    cumulative_logprob: float | None = None

    def merge(self, later: StepOutputs) -> None:
        self.new_tokens += later.new_tokens
        if later.logprobs is not None:
            self.logprobs = (self.logprobs or []) + later.logprobs
        if later.cumulative_logprob is not None:
            self.cumulative_logprob = later.cumulative_logprob


@dataclass(frozen=True)
class Choice:
    """Which of a request's sequences a response belongs to, and what only
    some responses carry: the prompt's logprobs (JSON) go on the first."""

    index: int = 0
    # Set when the request asked for n > 1: responses then name their choice,
    # and each choice's last response carries its finish reason.
    multiple: bool = False
    prompt_logprobs: str | None = None


SINGLE_CHOICE = Choice()


def make_response(
    text: str,
    finish_reason: str | None,
    usage: Usage,
    final: bool = True,
    extras: ExtraOutputs = NO_EXTRA_OUTPUTS,
    step: StepOutputs | None = None,
    choice: Choice = SINGLE_CHOICE,
) -> Any:
    """A response with data. The last carries the text and the request's
    totals (over all its choices); one before it the text alone. Each
    return_* input the request set adds its output to every response, with
    Triton's vLLM backend's meaning (num_output_tokens then counts this
    response's tokens, also on the last)."""
    step = step or StepOutputs()
    tensors = [_text_tensor(text)]
    if final or extras.finish_reason or (choice.multiple and finish_reason):
        reason = (finish_reason or "") if final else str(finish_reason)
        tensors.append(_string_tensor(FINISH_REASON_OUTPUT, reason))
    if final or extras.num_input_tokens:
        tensors.append(pb_utils.Tensor(INPUT_TOKENS_OUTPUT, np.array([usage.prompt_tokens], dtype=np.uint32)))
    if final or extras.num_output_tokens:
        count = step.new_tokens if extras.num_output_tokens else usage.completion_tokens
        tensors.append(pb_utils.Tensor(OUTPUT_TOKENS_OUTPUT, np.array([count], dtype=np.uint32)))
    if extras.logprobs:
        tensors.append(_string_tensor(LOGPROBS_OUTPUT, json.dumps(step.logprobs)))
    if extras.cumulative_logprob:
        value = float("nan") if step.cumulative_logprob is None else step.cumulative_logprob
        tensors.append(pb_utils.Tensor(CUMULATIVE_LOGPROB_OUTPUT, np.array([value], dtype=np.float32)))
    if choice.multiple:
        tensors.append(pb_utils.Tensor(CHOICE_INDEX_OUTPUT, np.array([choice.index], dtype=np.uint32)))
    if choice.prompt_logprobs is not None:
        tensors.append(_string_tensor(PROMPT_LOGPROBS_OUTPUT, choice.prompt_logprobs))
    return pb_utils.InferenceResponse(output_tensors=tensors)


def make_model_info_response(info: dict[str, Any]) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[_string_tensor(MODEL_INFO_OUTPUT, json.dumps(info))])


def _string_tensor(name: str, value: str) -> Any:
    return pb_utils.Tensor(name, np.array([value.encode("utf-8")], dtype=np.object_))


def make_text_response(text: str) -> Any:
    """A streamed response before the last: new text only. Each output tensor
    costs work in the stub, in tritonserver and in the client for every
    response; finish reason and usage are only known, and only needed, at the
    end (as in Triton's vLLM backend, which adds them only on request)."""
    return pb_utils.InferenceResponse(output_tensors=[_text_tensor(text)])


def _text_tensor(text: str) -> Any:
    return _string_tensor(TEXT_OUTPUT, text)


# A response still to be built: the stub's objects are made (and released)
# only on the response thread, under the stub lock (see stub_ipc).
Reply = Callable[[], Any]


@dataclass(frozen=True)
class ErrorReply:
    """An error that ends a request, built into the stub's response when sent."""

    kind: str
    code: str
    message: str
    status: str  # the pb_utils.TritonError code's name

    def __call__(self) -> Any:
        status = getattr(pb_utils.TritonError, self.status)
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(error_message(self.kind, self.code, self.message), status)
        )


def rejected(rule: str, message: str) -> ErrorReply:
    """INVALID_ARG: the request broke `rule` and will never be served as sent."""
    return ErrorReply(ErrorKind.REJECTED, rule, message, "INVALID_ARG")


def unavailable(code: str, message: str) -> ErrorReply:
    """UNAVAILABLE: a valid request the model cannot serve now."""
    return ErrorReply(ErrorKind.UNAVAILABLE, code, message, "UNAVAILABLE")


def internal_error(code: str, message: str) -> ErrorReply:
    """INTERNAL: a valid request that failed in the engine."""
    return ErrorReply(ErrorKind.INTERNAL, code, message, "INTERNAL")


def warn(message: str) -> None:
    with STUB_IPC:
        pb_utils.Logger.log_warn(message)


class ClientStream:
    """One request's way back to its client. Triton frees a request once its
    final response is sent, after which asking whether it was cancelled
    crashes tritonserver; the stub lock (stub_ipc) keeps the cancellation
    check and the final send apart, whichever thread each runs on.

    After the final send the stream lets go of the request and its response
    sender at once. While the stub holds a response sender, Triton keeps the
    request's response factory, and with it the model, alive: one sender
    still referenced anywhere (by a worker thread's last local variable, say)
    made every unload wait out tritonserver's exit timeout and then abort."""

    def __init__(self, request: Any) -> None:
        self._request: Any = request
        self._sender: Any = request.get_response_sender()  # local to the stub: no message
        self._closed = False

    def is_cancelled(self) -> bool:
        with STUB_IPC:
            return not self._closed and bool(self._request.is_cancelled())

    def send(self, response: Any | None = None, flags: int = 0) -> None:
        with STUB_IPC:
            if self._closed:
                return
            self._closed = bool(flags & FINAL)
            sender = self._sender
            if self._closed:
                self._request = self._sender = None
            try:
                if response is None:
                    sender.send(flags=flags)
                else:
                    sender.send(response, flags=flags)
            finally:
                del sender  # a released sender's destructor messages the stub: under the lock too


@dataclass
class _Segment:
    """One choice's output waiting to be sent."""

    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    step: StepOutputs = field(default_factory=StepOutputs)
    prompt_logprobs: str | None = None


@dataclass
class _Outbox:
    """What is waiting to be sent to one request's client: a segment per
    choice with new output, in arrival order."""

    stream: ClientStream
    segments: dict[int, _Segment] = field(default_factory=dict)
    multiple: bool = False
    usage: Usage | None = None
    final: bool = False
    # The choice whose output ended the request: its response goes last,
    # with the final flag.
    final_choice: int = 0
    error: Reply | None = None
    extras: ExtraOutputs = NO_EXTRA_OUTPUTS


class ResponseSender:
    """Sends responses from one dedicated thread. `send` blocks on IPC with
    the Triton process; doing it on the event loop would stall every stream
    the engine is producing.

    Deltas are coalesced per request: while a request's previous response is
    still waiting to go, new text joins it instead of queueing behind every
    other stream's backlog. The queue therefore never holds more than one
    entry per request, a slow IPC turns into fewer, larger responses rather
    than growing latency, and a client's first token is never stuck behind
    thousands of other tokens.

    `before_final` runs on this thread before each request's final response
    (the model publishes its deferred metrics there)."""

    def __init__(self, before_final: Callable[[], None] = lambda: None) -> None:
        self._before_final = before_final
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._outboxes: dict[int, _Outbox] = {}
        self._thread = threading.Thread(target=self._run, name="response-sender", daemon=True)
        self._thread.start()

    def stream(
        self,
        stream: ClientStream,
        text: str,
        finish_reason: str | None,
        usage: Usage,
        final: bool,
        extras: ExtraOutputs = NO_EXTRA_OUTPUTS,
        step: StepOutputs | None = None,
        choice: Choice = SINGLE_CHOICE,
    ) -> None:
        with self._lock:
            box = self._outbox(stream)
            segment = box.segments.setdefault(choice.index, _Segment())
            segment.text.append(text)
            segment.finish_reason = finish_reason or segment.finish_reason
            segment.prompt_logprobs = segment.prompt_logprobs or choice.prompt_logprobs
            if step is not None:
                segment.step.merge(step)
            box.usage = usage
            box.multiple = choice.multiple
            box.extras = extras
            if final:
                box.final, box.final_choice = True, choice.index

    def send_one(self, stream: ClientStream, reply: Reply) -> None:
        """Answer a request with this one response, which ends it."""
        self.finish(stream, reply)

    def finish(self, stream: ClientStream, error: Reply | None = None) -> None:
        """End the request: with an error response, or with the final flag alone."""
        with self._lock:
            box = self._outbox(stream)
            box.error, box.final = error, True

    def _outbox(self, stream: ClientStream) -> _Outbox:
        box = self._outboxes.get(id(stream))
        if box is None:
            box = self._outboxes[id(stream)] = _Outbox(stream)
            self._queue.put(id(stream))
        return box

    def _run(self) -> None:
        while (key := self._queue.get()) is not None:
            with self._lock:
                box = self._outboxes.pop(key)
            if box.final:
                self._publish_before_final()
            # Building and releasing responses are stub calls too: all of it,
            # and dropping the outbox, under the lock.
            with STUB_IPC:
                try:
                    _deliver(box)
                except Exception as exc:  # noqa: BLE001 - a closed stream must not stop the others
                    warn(f"could not send a response: {exc}")
                del box  # not held while waiting for the next one (see ClientStream)

    def _publish_before_final(self) -> None:
        """A failure here (metrics are IPC to Triton) must not cost the
        request its final response: the client would wait forever."""
        try:
            self._before_final()
        except Exception as exc:  # noqa: BLE001 - logged; the final still goes out
            warn(f"could not publish metrics before a final response: {exc}")

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)


def _deliver(box: _Outbox) -> None:
    """Send what the outbox holds. The error (with the final flag) is tried
    even when the data before it failed to go: the stream is still open then,
    and the error is what ends the request."""
    try:
        if box.usage is not None:  # text was queued: every delta brings its usage
            _deliver_segments(box)
    finally:
        if box.error is not None:
            box.stream.send(box.error(), flags=FINAL)
        elif box.final and box.usage is None:
            box.stream.send(flags=FINAL)


def _deliver_segments(box: _Outbox) -> None:
    assert box.usage is not None
    order = sorted(box.segments, key=lambda index: box.final and index == box.final_choice)
    for position, index in enumerate(order):
        segment = box.segments[index]
        text = "".join(segment.text)
        final = box.final and position == len(order) - 1
        choice = Choice(index, box.multiple, segment.prompt_logprobs)
        if not final and not box.extras.any and not box.multiple and choice.prompt_logprobs is None:
            box.stream.send(make_text_response(text))
            continue
        reason = segment.finish_reason
        response = make_response(text, reason, box.usage, final, box.extras, segment.step, choice)
        box.stream.send(response, flags=FINAL if final and box.error is None else 0)
