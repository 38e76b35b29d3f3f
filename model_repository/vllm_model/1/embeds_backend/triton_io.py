"""Everything that touches Triton's python-backend types: reading request
inputs, building responses and errors, and sending them off the event loop."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from .request_parsing import (
    EMBEDS_BASE64_INPUT,
    EMBEDS_TENSOR_INPUTS,
    EXCLUDE_INPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_INPUT,
)

_STRING_INPUTS = (TEXT_INPUT, SAMPLING_INPUT, EMBEDS_BASE64_INPUT)
_BOOL_INPUTS = (STREAM_INPUT, EXCLUDE_INPUT)
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def read_inputs(request: Any) -> dict[str, Any]:
    """Map input name -> first string element, bool, or a tensor viewing the
    request's buffer (dlpack: no copy, and BF16 has no numpy form)."""
    inputs: dict[str, Any] = {}
    for name in _STRING_INPUTS:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            inputs[name] = _first_element(tensor.as_numpy())
    for name in _BOOL_INPUTS:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            inputs[name] = bool(_first_element(tensor.as_numpy()))
    for name in EMBEDS_TENSOR_INPUTS:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            inputs[name] = torch.from_dlpack(tensor.to_dlpack())
    return inputs


def _first_element(array: np.ndarray) -> Any:
    flat = array.reshape(-1)
    return flat[0] if flat.size else None


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int


def make_response(text: str, finish_reason: str | None, usage: Usage) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_)),
            pb_utils.Tensor(
                "finish_reason", np.array([(finish_reason or "").encode()], dtype=np.object_)
            ),
            pb_utils.Tensor("num_input_tokens", np.array([usage.prompt_tokens], dtype=np.uint32)),
            pb_utils.Tensor(
                "num_output_tokens", np.array([usage.completion_tokens], dtype=np.uint32)
            ),
        ]
    )


def invalid_argument(message: str) -> Any:
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    )


def unavailable(message: str) -> Any:
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE)
    )


def internal_error(message: str) -> Any:
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL)
    )


class ResponseSender:
    """Sends responses from one dedicated thread. `send` blocks on IPC with
    the Triton process; doing it on the event loop would stall every stream
    the engine is producing. One thread keeps each request's order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, Any, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="response-sender", daemon=True)
        self._thread.start()

    def send(self, sender: Any, response: Any | None, flags: int = 0) -> None:
        self._queue.put((sender, response, flags))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            sender, response, flags = item
            try:
                if response is None:
                    sender.send(flags=flags)
                else:
                    sender.send(response, flags=flags)
            except Exception as exc:  # a closed stream must not stop the others
                pb_utils.Logger.log_warn(f"could not send a response: {exc}")

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
