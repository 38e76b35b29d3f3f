"""handler.RequestHandler end to end without Triton or vLLM: requests come in
through the fake pb_utils of conftest, a fake engine bridge replays scripted
vLLM outputs, and the handler runs on an event loop in a background thread
as model.py runs it. Each outcome (completed, rejected, unavailable, failed,
cancelled) must reach the client with exactly one final flag and be counted
exactly once in embeds_requests_finished_total."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import triton_python_backend_utils as pb_utils

from embeds_backend import handler as handler_module
from embeds_backend.contract import (
    EMBEDS_FP32_INPUT,
    EXCLUDE_INPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
)
from embeds_backend.drain import DrainWatch, write_drain_order
from embeds_backend.engine_load import LoadProbe, SchedulerLoad
from embeds_backend.handler import RequestHandler
from embeds_backend.metrics import ModelMetrics
from embeds_backend.settings import BackendSettings
from embeds_backend.supervisor import EngineSupervisor

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
HIDDEN = 8
PROMPT = "Say hi"
PROMPT_TOKENS = [7, 7, 7, 7, 7]
PIECES = ("Hel", "lo", "!")
FINISHED = "embeds_requests_finished_total"


# -- fake vLLM ---------------------------------------------------------------------


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    index: int = 0


@dataclass
class FakeOutput:
    """vLLM's RequestOutput, as far as the handler reads it."""

    outputs: list[FakeCompletion]
    prompt_token_ids: list[int]
    finished: bool
    num_cached_tokens: int = 0
    prompt_logprobs: list[Any] | None = None


def output(text: str, token_ids: list[int], finished: bool = False) -> FakeOutput:
    reason = "length" if finished else None
    return FakeOutput([FakeCompletion(text, token_ids, reason)], PROMPT_TOKENS, finished)


Script = Callable[[bool], AsyncIterator[FakeOutput]]


async def complete(stream: bool) -> AsyncIterator[FakeOutput]:
    """What vLLM yields: deltas when streaming (an empty one included, as
    vLLM may send), one final output with the whole text otherwise."""
    if not stream:
        yield output("".join(PIECES), [1, 2, 3], finished=True)
        return
    yield output("", [])
    for i, piece in enumerate(PIECES):
        yield output(piece, [i + 1], finished=i == len(PIECES) - 1)


@dataclass
class FakeEngine:
    """Stands in for EngineBridge: the model facts, health, and generate()
    replaying `script`. Every generate() call is recorded."""

    script: Script = complete
    hidden_size: int = HIDDEN
    dtype: torch.dtype = torch.float32
    max_model_len: int = 64
    embeds_enabled: bool = True
    is_healthy: bool = True
    adapters: tuple[str, ...] = ()
    calls: list[dict[str, Any]] = field(default_factory=list)
    load: LoadProbe = field(default_factory=LoadProbe)

    async def render(self, prompt: dict[str, Any], options: Any = None) -> dict[str, Any]:
        return prompt

    def generate(
        self,
        prompt: dict[str, Any],
        sampling: dict[str, Any],
        request_id: str,
        stream: bool,
        lora_name: str | None = None,
    ) -> AsyncIterator[FakeOutput]:
        self.calls.append(
            {"prompt": prompt, "sampling": sampling, "request_id": request_id, "stream": stream}
        )
        return self.script(stream)

    def unfinished_requests(self) -> int:
        return 0


# -- harness -----------------------------------------------------------------------


class Harness:
    """A RequestHandler wired as model.py wires it: real supervisor (not
    started; the handler only asks it for errors) and real metrics over the
    fake pb_utils, the handler on a loop in its own thread."""

    def __init__(
        self, engine: FakeEngine, settings: BackendSettings, drain: DrainWatch | None = None
    ) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._loop_thread.start()
        self.metrics = ModelMetrics("test_model")
        supervisor = EngineSupervisor(engine, self.loop, self.metrics.engine_state, pb_utils.Logger.log_warn)
        before = set(threading.enumerate())
        self.handler = RequestHandler(engine, supervisor, settings, self.metrics, self.loop, drain)
        self.handler_threads = set(threading.enumerate()) - before
        assert {thread.name for thread in self.handler_threads} == {"cancel-watcher", "response-sender"}
        self.closed = False

    def serve(self, request: Any) -> Any:
        """Submit as execute() does; return the sender once the final is out."""
        self.handler.submit(request)
        assert request.sender.wait_final(), "no final response"
        return request.sender

    def outcomes(self) -> dict[str, float]:
        self.metrics.publish()
        family = next(f for f in reversed(pb_utils.MetricFamily.created) if f.name == FINISHED)
        return family.by_label("outcome")

    def metrics_value(self, name: str) -> float:
        """The value of this handler's metric `name` (summed over labels)."""
        self.metrics.publish()
        family = next(f for f in reversed(pb_utils.MetricFamily.created) if f.name == name)
        return sum(metric.value() for metric in family.metrics)

    def shutdown(self) -> None:
        self.closed = True
        asyncio.run_coroutine_threadsafe(self.handler.shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(5)
        self.loop.close()
        assert not any(thread.is_alive() for thread in self.handler_threads)


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(engine: FakeEngine | None = None, drain: DrainWatch | None = None, **settings: Any) -> Harness:
        settings.setdefault("cancel_poll_interval_s", 0.01)
        made.append(Harness(engine or FakeEngine(), BackendSettings(**settings), drain))
        return made[-1]

    yield make
    for h in made:
        if not h.closed:
            h.shutdown()


def make_request(
    text: str | None = PROMPT,
    *,
    stream: bool | None = None,
    sampling: str | None = None,
    exclude_input: bool | None = None,
    embeds: np.ndarray | None = None,
) -> Any:
    """A request whose inputs arrive as Triton delivers them: strings as
    object arrays of bytes, bools as bool arrays, embeddings as a tensor."""
    inputs = []
    for name, value in ((TEXT_INPUT, text), (SAMPLING_INPUT, sampling)):
        if value is not None:
            inputs.append(pb_utils.Tensor(name, np.array([value.encode()], dtype=np.object_)))
    for name, flag in ((STREAM_INPUT, stream), (EXCLUDE_INPUT, exclude_input)):
        if flag is not None:
            inputs.append(pb_utils.Tensor(name, np.array([flag], dtype=np.bool_)))
    if embeds is not None:
        inputs.append(pb_utils.Tensor(EMBEDS_FP32_INPUT, embeds))
    return pb_utils.InferenceRequest(inputs)


def outputs(response: Any) -> dict[str, Any]:
    return response.output_values()


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def assert_one_final_and_clean(request: Any) -> None:
    """Exactly one FINAL, last; nothing refused; the request never touched
    after it (the cancel watcher polled it all along); no warnings."""
    sender = request.sender
    assert sender.finals() == 1
    assert sender.sent[-1][1] == FINAL
    assert sender.refused == []
    assert request.misuses == []
    assert pb_utils.Logger.records == []


def held_until(gate: threading.Event) -> Script:
    """A script that completes normally once `gate` is set."""

    async def held(stream: bool) -> AsyncIterator[FakeOutput]:
        while not gate.is_set():
            await asyncio.sleep(0.002)
        async for item in complete(stream):
            yield item

    return held


def assert_error(request: Any, code: int, prefix: str) -> None:
    [(response, flags)] = request.sender.sent
    assert flags == FINAL
    error = response.error()
    assert error.code() == code
    assert error.message().startswith(prefix), error.message()


# -- completed --------------------------------------------------------------------


def test_a_streamed_text_request_gets_its_deltas_then_a_final_with_usage(harness, metric_family):
    request = make_request(stream=True)

    async def paced(stream: bool) -> AsyncIterator[FakeOutput]:
        """complete(), each delta waiting for the last to reach the client, so
        that none are coalesced."""
        responses = 0
        async for item in complete(stream):
            yield item
            if item.outputs[0].text:
                responses += 1
                while len(request.sender.sent) < responses:
                    await asyncio.sleep(0.001)

    h = harness(FakeEngine(script=paced))
    sender = h.serve(request)

    assert [(outputs(response), flags) for response, flags in sender.sent] == [
        ({TEXT_OUTPUT: "Hel"}, 0),
        ({TEXT_OUTPUT: "lo"}, 0),
        (
            {
                TEXT_OUTPUT: "!",
                "finish_reason": "length",
                "num_input_tokens": len(PROMPT_TOKENS),
                "num_output_tokens": 3,
            },
            FINAL,
        ),
    ]
    assert_one_final_and_clean(request)
    assert [(call["prompt"], call["stream"]) for call in h.engine.calls] == [({"prompt": PROMPT}, True)]
    assert h.outcomes() == {"completed": 1}
    assert len(metric_family("embeds_time_to_first_token_seconds").find().observations()) == 1
    assert metric_family("embeds_prompt_tokens_total").find().value() == len(PROMPT_TOKENS)
    assert metric_family("embeds_generation_tokens_total").find().value() == 3
    h.shutdown()


@pytest.mark.parametrize(("exclude_input", "text"), [(None, PROMPT + "Hello!"), (True, "Hello!")])
def test_a_non_streamed_text_request_gets_one_final_response(harness, metric_family, exclude_input, text):
    h = harness()
    request = make_request(exclude_input=exclude_input)
    sender = h.serve(request)

    [(response, flags)] = sender.sent
    assert flags == FINAL
    assert outputs(response) == {
        "text_output": text,  # the prompt is echoed unless excluded, as in Triton's vLLM backend
        "finish_reason": "length",
        "num_input_tokens": len(PROMPT_TOKENS),
        "num_output_tokens": 3,
    }
    assert_one_final_and_clean(request)
    assert h.outcomes() == {"completed": 1}
    assert metric_family("embeds_time_to_first_token_seconds").find().observations() == []
    h.shutdown()


def test_an_embeddings_request_is_decoded_off_the_loop_and_completed(harness, metric_family):
    h = harness()
    embeds = np.ones((2, HIDDEN), dtype=np.float32)
    request = make_request(text=None, embeds=embeds)
    sender = h.serve(request)

    [(response, _)] = sender.sent
    assert outputs(response)[TEXT_OUTPUT] == "Hello!"  # embeddings have no text to echo
    [call] = h.engine.calls
    assert torch.equal(call["prompt"]["prompt_embeds"], torch.ones(2, HIDDEN))
    assert_one_final_and_clean(request)
    assert h.outcomes() == {"completed": 1}
    assert metric_family("embeds_requests_total").by_label("kind") == {"embeds_tensor": 1}
    h.shutdown()


# -- rejected ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_kwargs", "rule"),
    [
        ({"sampling": "{not json"}, "bad_sampling"),
        ({"text": None, "embeds": np.ones((3, HIDDEN + 1), dtype=np.float32)}, "hidden_size"),
    ],
)
def test_a_rejected_request_gets_invalid_arg_and_never_reaches_the_engine(
    harness, metric_family, request_kwargs, rule
):
    h = harness()
    request = make_request(**request_kwargs)
    h.serve(request)

    assert_error(request, pb_utils.TritonError.INVALID_ARG, f"[rejected:{rule}] ")
    assert_one_final_and_clean(request)
    assert h.engine.calls == []
    assert h.outcomes() == {"rejected": 1}
    assert metric_family("embeds_rejections_total").by_label("rule") == {rule: 1}
    h.shutdown()


# -- unavailable ------------------------------------------------------------------


def test_a_request_to_a_dead_engine_gets_unavailable(harness):
    h = harness(FakeEngine(is_healthy=False))
    request = make_request()
    h.serve(request)

    assert_error(request, pb_utils.TritonError.UNAVAILABLE, "[unavailable:engine_down] ")
    assert_one_final_and_clean(request)
    assert h.engine.calls == []
    assert h.outcomes() == {"unavailable": 1}
    h.shutdown()


def test_a_request_past_the_concurrency_limit_gets_unavailable_at_once(harness, metric_family):
    gate = threading.Event()
    held = held_until(gate)

    h = harness(FakeEngine(script=held), max_concurrent_requests=1)
    first, second = make_request(), make_request()
    h.handler.submit(first)
    h.serve(second)  # the loop starts `first` before it: submit order is kept

    assert_error(second, pb_utils.TritonError.UNAVAILABLE, "[unavailable:concurrency_limit] ")
    assert first.sender.sent == []
    assert metric_family("embeds_rejections_total").by_label("rule") == {"concurrency_limit": 1}
    assert h.outcomes() == {"unavailable": 1}

    gate.set()
    assert first.sender.wait_final()
    for request in (first, second):
        assert_one_final_and_clean(request)
    assert len(h.engine.calls) == 1
    assert h.outcomes() == {"unavailable": 1, "completed": 1}
    h.shutdown()


# -- failed -----------------------------------------------------------------------


def test_a_generation_error_gets_internal(harness, monkeypatch):
    # The real classifiers import vLLM (seconds); the server has it loaded
    # already. Stand-ins with their answer for a plain RuntimeError.
    monkeypatch.setattr(handler_module, "is_engine_dead", lambda exc: False)
    monkeypatch.setattr(handler_module, "is_client_error", lambda exc: isinstance(exc, ValueError))

    async def broken(stream: bool) -> AsyncIterator[FakeOutput]:
        raise RuntimeError("CUDA error: an illegal memory access")
        yield  # an async generator, as vLLM's generate() is

    h = harness(FakeEngine(script=broken))
    request = make_request(stream=True)
    h.serve(request)

    assert_error(request, pb_utils.TritonError.INTERNAL, "[internal:generation_failed] ")
    assert "RuntimeError: CUDA error" in request.sender.sent[0][0].error().message()
    assert_one_final_and_clean(request)
    assert h.outcomes() == {"failed": 1}
    h.shutdown()


# -- cancelled --------------------------------------------------------------------


def test_a_request_cancelled_by_its_client_is_aborted_and_ends_with_the_final_flag_alone(harness):
    aborted = threading.Event()

    async def endless(stream: bool) -> AsyncIterator[FakeOutput]:
        yield output(PIECES[0], [1])
        try:
            await asyncio.sleep(30)
        finally:  # vLLM aborts the request when the consuming task is cancelled
            aborted.set()

    h = harness(FakeEngine(script=endless))
    request = make_request(stream=True)
    h.handler.submit(request)
    assert request.sender.wait_for(1)  # generation is under way
    request.cancelled.set()

    assert request.sender.wait_final()
    assert aborted.wait(5)
    (delta, delta_flags), final = request.sender.sent
    assert (outputs(delta), delta_flags) == ({TEXT_OUTPUT: PIECES[0]}, 0)
    assert final == (None, FINAL)
    assert_one_final_and_clean(request)
    assert h.outcomes() == {"cancelled": 1}
    h.shutdown()


def test_unloading_ends_requests_still_running_with_a_shutdown_error(harness):
    async def endless(stream: bool) -> AsyncIterator[FakeOutput]:
        await asyncio.sleep(30)
        yield output("never", [1])

    h = harness(FakeEngine(script=endless))
    request = make_request()
    h.handler.submit(request)
    assert wait_until(lambda: h.engine.calls)  # generation under way
    h.shutdown()

    assert_error(
        request, pb_utils.TritonError.UNAVAILABLE, "[unavailable:shutdown] the server is shutting down"
    )
    assert "being unloaded" in request.sender.sent[0][0].error().message()
    assert h.outcomes() == {"unavailable": 1}


# -- draining ---------------------------------------------------------------------


def test_a_drain_order_refuses_new_requests_and_lets_held_ones_finish(harness, metric_family, tmp_path):
    gate = threading.Event()
    held = held_until(gate)

    order = tmp_path / "drain.json"
    h = harness(FakeEngine(script=held), drain=DrainWatch(order, default_timeout_s=30))
    first = make_request()
    h.handler.submit(first)
    assert wait_until(lambda: h.engine.calls)
    write_drain_order(order, timeout_s=30)
    assert wait_until(lambda: h.metrics_value("embeds_draining") == 1)

    late = make_request()
    h.serve(late)
    assert_error(late, pb_utils.TritonError.UNAVAILABLE, "[unavailable:draining] the server is shutting down")
    assert len(h.engine.calls) == 1  # the engine never saw it
    [(level, message)] = pb_utils.Logger.records
    assert level == "warn" and message.startswith("draining: 1 requests in flight"), message
    pb_utils.Logger.records.clear()
    gate.set()
    assert first.sender.wait_final()
    assert_one_final_and_clean(first)
    assert h.outcomes() == {"unavailable": 1, "completed": 1}
    assert metric_family("embeds_rejections_total").by_label("rule") == {"draining": 1}


def test_the_drain_deadline_ends_held_requests_with_a_shutdown_error(harness, tmp_path):
    async def endless(stream: bool) -> AsyncIterator[FakeOutput]:
        await asyncio.sleep(30)
        yield output("never", [1])

    order = tmp_path / "drain.json"
    h = harness(FakeEngine(script=endless), drain=DrainWatch(order, default_timeout_s=30))
    request = make_request()
    h.handler.submit(request)
    assert wait_until(lambda: h.engine.calls)
    order.write_text(json.dumps({"deadline_unix": time.time() + 0.2}))

    assert request.sender.wait_final()
    assert_error(request, pb_utils.TritonError.UNAVAILABLE, "[unavailable:shutdown] ")
    assert "drain time ran out" in request.sender.sent[0][0].error().message()
    assert h.outcomes() == {"unavailable": 1}


def test_the_load_gauges_follow_held_requests_and_the_scheduler(harness):
    gate = threading.Event()
    held = held_until(gate)

    h = harness(FakeEngine(script=held))
    h.engine.load.latest = SchedulerLoad(waiting=3, running=2, kv_cache_usage=0.25)
    requests = [make_request() for _ in range(2)]
    for request in requests:
        h.handler.submit(request)
    assert wait_until(lambda: h.metrics_value("embeds_requests_inflight") == 2)
    assert h.metrics_value("embeds_engine_waiting_requests") == 3
    assert h.metrics_value("embeds_engine_running_requests") == 2
    assert h.metrics_value("embeds_engine_kv_cache_usage") == 0.25
    gate.set()
    assert all(request.sender.wait_final() for request in requests)
    assert wait_until(lambda: h.metrics_value("embeds_requests_inflight") == 0)
