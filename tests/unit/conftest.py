"""Unit-tier setup: a fake of Triton's `triton_python_backend_utils`.

The server package imports `triton_python_backend_utils` (pb_utils), the
module Triton's python-backend stub injects at run time; it cannot be
installed. The fake below goes into `sys.modules` when pytest imports this
conftest, which it does before collecting the test modules, so
`embeds_backend` binds to it exactly as it would to the real one.

The fake models only what the package uses. Where Triton enforces a rule the
package relies on, the fake enforces it too (python_backend's
response_sender.cc and Triton's metric API):

* a response sender refuses any send after a FINAL one, a flags-0 send
  without a response, and flags other than 0 and FINAL;
* a request is freed once its final response goes out, so `is_cancelled()`
  on it afterwards (or while the final send is under way) is a crash in the
  real server: here it raises and is recorded in `request.misuses`, because
  the caller may swallow the exception;
* counters cannot be decremented or set, histograms only observe, and a
  histogram needs buckets.

Test-only knobs are keyword arguments and attributes documented on each
class; the rest has Triton's names and signatures. Test modules reach the
fake with `import triton_python_backend_utils as pb_utils`.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
FINAL = TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonModelException(Exception):
    """What pb_utils raises when Triton refuses an operation."""


class TritonError:
    """An error a response carries; codes are TRITONSERVER_Error_Code's."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class Tensor:
    """A named numpy array. `to_dlpack()` shares its memory, as the real one
    does for a request's input buffer."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def to_dlpack(self) -> Any:
        return self._array.__dlpack__()


class InferenceResponse:
    """Output tensors, or an error, for one response."""

    def __init__(
        self, output_tensors: Sequence[Tensor] | None = None, error: TritonError | None = None
    ) -> None:
        self._tensors = list(output_tensors or [])
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def output_values(self) -> dict[str, Any]:
        """Test helper, not Triton's: output name -> its one value, strings decoded."""
        values = {}
        for tensor in self._tensors:
            value = tensor.as_numpy().reshape(-1)[0]
            values[tensor.name()] = value.decode() if isinstance(value, bytes) else value.item()
        return values


Sent = tuple["InferenceResponse | None", int]


class InferenceResponseSender:
    """One request's response sender, with Triton's rules (see the module
    docstring). Like Triton's, it marks itself closed as a final send
    begins, before the IPC that hands the response over.

    Test knobs:
    * `hold_first_send`: sends block until `release.set()`, and `entered` is
      set when the first one starts: a slow IPC that holds the caller's thread.
    * `journal`: a list shared by several senders, getting `(name, response,
      flags)` per completed send, to show the order across requests.
    * `on_send(response, flags)`: runs as each accepted send begins.
    `sent` lists completed sends; `refused` the messages of refused ones."""

    def __init__(
        self,
        name: str = "",
        *,
        hold_first_send: bool = False,
        journal: list[Any] | None = None,
        on_send: Callable[[InferenceResponse | None, int], None] | None = None,
    ) -> None:
        self.name = name
        self.sent: list[Sent] = []
        self.refused: list[str] = []
        self.closed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first_send:
            self.release.set()
        self._journal = journal
        self._on_send = on_send
        self._changed = threading.Condition()

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        with self._changed:
            if flags not in (0, FINAL):
                self._refuse("Unable to send response. Unsupported flag provided.")
            if flags == 0 and response is None:
                self._refuse(
                    "Inference Response object must be provided when the response flags is set to zero."
                )
            if self.closed:
                self._refuse("Unable to send response. Response sender has been closed.")
            self.closed = flags == FINAL
        if self._on_send is not None:
            self._on_send(response, flags)
        self.entered.set()
        self.release.wait()
        with self._changed:
            self.sent.append((response, flags))
            if self._journal is not None:
                self._journal.append((self.name, response, flags))
            self._changed.notify_all()

    def _refuse(self, message: str) -> None:
        self.refused.append(message)
        raise TritonModelException(message)

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until `count` sends have completed."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.sent) >= count, timeout)

    def wait_final(self, timeout: float = 5.0) -> bool:
        """Wait until a send with the FINAL flag has completed."""
        with self._changed:
            return self._changed.wait_for(lambda: any(f == FINAL for _, f in self.sent), timeout)

    def finals(self) -> int:
        return sum(1 for _, flags in self.sent if flags == FINAL)


class InferenceRequest:
    """A request as execute() receives it: inputs, a response sender, and the
    cancellation check.

    Test knobs: `cancelled` (an Event) is what is_cancelled() reports, i.e.
    the client went away; `misuses` records each is_cancelled() that a real
    server would have run on a freed request. is_cancelled() yields the GIL
    in the middle, as its real IPC round trip does, so that a final send
    racing with it has the chance to land inside it."""

    def __init__(
        self, inputs: Sequence[Tensor] = (), *, sender: InferenceResponseSender | None = None
    ) -> None:
        self._inputs = list(inputs)
        self.sender = sender or InferenceResponseSender()
        self.cancelled = threading.Event()
        self.misuses: list[str] = []
        self.checks = 0

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def get_response_sender(self) -> InferenceResponseSender:
        return self.sender

    def is_cancelled(self) -> bool:
        self.checks += 1
        if self.sender.closed:
            self._misuse("is_cancelled() called after the final response was sent")
        time.sleep(0)
        if self.sender.closed:
            self._misuse("the final response was sent while is_cancelled() ran")
        return self.cancelled.is_set()

    def _misuse(self, message: str) -> None:
        self.misuses.append(message)
        raise TritonModelException(message)


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((tensor for tensor in request.inputs() if tensor.name() == name), None)


class Logger:
    """Records each line as (level, message) in `records`."""

    records: ClassVar[list[tuple[str, str]]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.records.append(("info", message))

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.records.append(("warn", message))

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.records.append(("error", message))

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls.records.append(("verbose", message))


class Metric:
    """One labelled metric. `calls` records every (operation, value) in
    order; value() is what Triton would report for a counter or gauge."""

    def __init__(self, family: MetricFamily, labels: dict[str, str], buckets: list[float] | None) -> None:
        self.family = family
        self.labels = labels
        self.buckets = buckets
        self.calls: list[tuple[str, float]] = []

    def increment(self, value: float) -> None:
        if self.family.kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("Failed to increment metric value: not supported for histogram")
        if self.family.kind == MetricFamily.COUNTER and value < 0:
            raise TritonModelException("Failed to increment metric value: counters cannot be decremented")
        self.calls.append(("increment", value))

    def set(self, value: float) -> None:
        if self.family.kind != MetricFamily.GAUGE:
            raise TritonModelException("Failed to set metric value: only gauges can be set")
        self.calls.append(("set", value))

    def observe(self, value: float) -> None:
        if self.family.kind != MetricFamily.HISTOGRAM:
            raise TritonModelException("Failed to observe metric value: only histograms observe")
        self.calls.append(("observe", value))

    def value(self) -> float:
        if self.family.kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("Failed to get metric value: not supported for histogram")
        total = 0.0
        for operation, value in self.calls:
            total = value if operation == "set" else total + value
        return total

    def observations(self) -> list[float]:
        """Test helper: the values a histogram observed, in order."""
        return [value for operation, value in self.calls if operation == "observe"]


class MetricFamily:
    """A named metric family. Every family created is kept in `created`
    (reset for each test), so tests find metrics by name and labels as a
    scrape would, without reaching into the model's attributes."""

    COUNTER, GAUGE, HISTOGRAM = range(3)
    created: ClassVar[list[MetricFamily]] = []

    def __init__(self, name: str, description: str, kind: int) -> None:
        self.name = name
        self.description = description
        self.kind = kind
        self.metrics: list[Metric] = []
        MetricFamily.created.append(self)

    def Metric(self, labels: dict[str, str] | None = None, buckets: list[float] | None = None) -> Metric:
        if self.kind == MetricFamily.HISTOGRAM and not buckets:
            raise TritonModelException("Error when creating Metric: a histogram needs buckets")
        metric = Metric(self, dict(labels or {}), buckets)
        self.metrics.append(metric)
        return metric

    def find(self, **labels: str) -> Metric | None:
        """Test helper: the metric whose labels include `labels`."""
        return next((m for m in self.metrics if labels.items() <= m.labels.items()), None)

    def by_label(self, key: str) -> dict[str, float]:
        """Test helper: label value -> value() for each metric in the family."""
        return {m.labels[key]: m.value() for m in self.metrics if key in m.labels}


def _build_module() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils", "Fake of Triton's python-backend stub module.")
    for value in (
        TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        TritonModelException,
        TritonError,
        Tensor,
        InferenceResponse,
        InferenceResponseSender,
        InferenceRequest,
        get_input_tensor_by_name,
        Logger,
        Metric,
        MetricFamily,
    ):
        name = "TRITONSERVER_RESPONSE_COMPLETE_FINAL" if isinstance(value, int) else value.__name__
        setattr(module, name, value)
    return module


sys.modules["triton_python_backend_utils"] = _build_module()


@pytest.fixture(autouse=True)
def _fresh_fake() -> Iterator[None]:
    """Each test starts with no metric families and no log lines."""
    MetricFamily.created.clear()
    Logger.records.clear()
    yield


@pytest.fixture
def metric_family() -> Callable[[str], MetricFamily]:
    """The family of that name created in this test (the newest, if several)."""

    def find(name: str) -> MetricFamily:
        for family in reversed(MetricFamily.created):
            if family.name == name:
                return family
        raise LookupError(f"no metric family {name!r} was created")

    return find
