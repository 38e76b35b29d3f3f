"""triton_io's ResponseSender and ClientStream: per-request coalescing, the
one-final-flag guarantee, and the lock that keeps a cancellation check off a
request Triton has already freed. Driven through the fake pb_utils of
conftest; a sender held on its first send stands in for a slow IPC round
trip, which makes every interleaving below deterministic."""

from __future__ import annotations

import json
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import triton_python_backend_utils as pb_utils

from embeds_backend.contract import FINAL_OUTPUTS, TEXT_OUTPUT
from embeds_backend.metrics import ModelMetrics
from embeds_backend.request_parsing import ExtraOutputs
from embeds_backend.triton_io import (
    ClientStream,
    ResponseSender,
    StepOutputs,
    Usage,
    internal_error,
    make_text_response,
)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
USAGE = Usage(prompt_tokens=4, completion_tokens=1)


def outputs(response: Any) -> dict[str, Any]:
    return response.output_values()


def describe(response: Any) -> str | None:
    """A response as one string: its text, `error: <message>`, or None for a flags-only send."""
    if response is None:
        return None
    if response.has_error():
        return f"error: {response.error().message()}"
    return outputs(response)[TEXT_OUTPUT]


# The fake response sender behind each stream: ClientStream keeps its own
# private, and lets go of it after the final response.
_SENDERS: dict[int, Any] = {}


def client(name: str, journal: list[Any] | None = None, *, hold_first_send: bool = False) -> ClientStream:
    sender = pb_utils.InferenceResponseSender(name, journal=journal, hold_first_send=hold_first_send)
    stream = ClientStream(pb_utils.InferenceRequest(sender=sender))
    _SENDERS[id(stream)] = sender
    return stream


def sender_of(stream: ClientStream) -> Any:
    return _SENDERS[id(stream)]


def test_a_stream_lets_go_of_its_request_and_sender_once_final():
    """Triton keeps a model loaded while the stub references any response
    sender: holding one past its final response blocked every unload."""
    sender = pb_utils.InferenceResponseSender("c")
    stream = ClientStream(pb_utils.InferenceRequest(sender=sender))
    alive = weakref.ref(sender)
    del sender
    stream.send(make_text_response("x"))
    assert alive() is not None
    stream.send(flags=FINAL)
    assert alive() is None  # without a garbage collection: no reference is left
    stream.send(flags=FINAL)  # a late send after the final is dropped, not a crash
    assert not stream.is_cancelled()


@pytest.fixture
def make_responses() -> Iterator[Callable[..., ResponseSender]]:
    """ResponseSenders closed, and their threads checked gone, at teardown."""
    made: list[ResponseSender] = []

    def make(before_final: Callable[[], None] = lambda: None) -> ResponseSender:
        made.append(ResponseSender(before_final=before_final))
        return made[-1]

    yield make
    for responses in made:
        responses.close()
        assert not responses._thread.is_alive()


def blocked_plug(responses: ResponseSender, journal: list[Any]) -> ClientStream:
    """A request whose first send is in flight and held: the sender thread is busy."""
    plug = client("plug", journal, hold_first_send=True)
    responses.stream(plug, "p", None, USAGE, final=False)
    assert sender_of(plug).entered.wait(5)
    return plug


def flush(responses: ResponseSender) -> None:
    """Return once everything queued so far was handled: the queue is FIFO,
    so it is when a marker request queued now has its final."""
    marker = client("marker")
    responses.finish(marker)
    assert sender_of(marker).wait_final()


# -- coalescing ----------------------------------------------------------------------


def test_deltas_queued_behind_a_send_in_flight_merge_into_one_response_per_request(make_responses):
    journal: list[Any] = []
    responses = make_responses()
    plug = blocked_plug(responses, journal)
    streams = [client(name, journal) for name in ("a", "b", "c")]

    for i in range(3):
        for stream in streams:
            responses.stream(stream, f"{sender_of(stream).name}{i}", None, USAGE, final=False)
    assert responses._queue.qsize() == len(streams)  # one entry per request, not per delta

    sender_of(plug).release.set()
    for stream in streams:
        assert sender_of(stream).wait_for(1)
    summary = [(name, describe(response), flags) for name, response, flags in journal]
    assert summary == [("plug", "p", 0), ("a", "a0a1a2", 0), ("b", "b0b1b2", 0), ("c", "c0c1c2", 0)]
    # Not final: only the text goes out (finish reason and usage come with the last response).
    assert all(set(outputs(response)) == {TEXT_OUTPUT} for _, response, _ in journal)


def test_a_busy_request_delays_another_by_one_entry_at_most(make_responses):
    journal: list[Any] = []
    responses = make_responses()
    plug = blocked_plug(responses, journal)
    other = client("other", journal)

    responses.stream(plug, "x0", None, USAGE, final=False)
    responses.stream(other, "hi", None, USAGE, final=False)
    for _ in range(50):  # the busy request keeps producing while its send is stuck
        responses.stream(plug, "x", None, USAGE, final=False)
    assert responses._queue.qsize() == 2

    sender_of(plug).release.set()
    assert sender_of(other).wait_for(1)
    summary = [(name, describe(response)) for name, response, _ in journal]
    assert summary == [("plug", "p"), ("plug", "x0" + "x" * 50), ("other", "hi")]


def test_a_merged_final_keeps_the_text_in_order_with_the_last_usage_and_finish_reason(make_responses):
    responses = make_responses()
    plug = blocked_plug(responses, [])
    stream = client("a")

    responses.stream(stream, "Hel", None, Usage(4, 1), final=False)
    responses.stream(stream, "lo", None, Usage(4, 2), final=False)
    responses.stream(stream, "!", "stop", Usage(4, 3), final=True)
    sender_of(plug).release.set()

    assert sender_of(stream).wait_final()
    [(response, flags)] = sender_of(stream).sent
    assert flags == FINAL
    assert outputs(response) == {
        "text_output": "Hello!",
        "finish_reason": "stop",
        "num_input_tokens": 4,
        "num_output_tokens": 3,
    }


# -- exactly one final flag --------------------------------------------------------------


def test_a_data_final_is_one_response_with_every_output_and_the_final_flag(make_responses):
    responses = make_responses()
    stream = client("a")
    responses.stream(stream, "done", "length", Usage(2, 5), final=True)

    assert sender_of(stream).wait_final()
    [(response, flags)] = sender_of(stream).sent
    assert flags == FINAL
    assert tuple(outputs(response)) == FINAL_OUTPUTS
    assert outputs(response)["finish_reason"] == "length"


def test_finish_without_data_sends_the_final_flag_alone(make_responses):
    responses = make_responses()
    stream = client("a")
    responses.finish(stream)

    assert sender_of(stream).wait_final()
    assert sender_of(stream).sent == [(None, FINAL)]


def test_an_error_after_queued_data_follows_the_data_and_carries_the_final_flag(make_responses):
    responses = make_responses()
    plug = blocked_plug(responses, [])
    stream = client("a")

    responses.stream(stream, "Hel", None, USAGE, final=False)
    responses.finish(stream, internal_error("generation_failed", "boom"))
    sender_of(plug).release.set()

    assert sender_of(stream).wait_final()
    (data, data_flags), (error, error_flags) = sender_of(stream).sent
    assert (describe(data), data_flags) == ("Hel", 0)
    assert (describe(error), error_flags) == ("error: [internal:generation_failed] boom", FINAL)
    assert error.error().code() == pb_utils.TritonError.INTERNAL


def test_nothing_is_sent_for_a_request_after_its_final(make_responses):
    responses = make_responses()
    stream = client("a")
    responses.stream(stream, "done", "stop", USAGE, final=True)
    assert sender_of(stream).wait_final()

    responses.stream(stream, "late", None, USAGE, final=False)
    responses.finish(stream)
    responses.finish(stream, internal_error("generation_failed", "late"))
    flush(responses)

    assert len(sender_of(stream).sent) == 1
    assert sender_of(stream).refused == []  # dropped by ClientStream, never offered to Triton
    assert pb_utils.Logger.records == []


def test_client_stream_drops_every_send_after_its_final():
    request = pb_utils.InferenceRequest()
    stream = ClientStream(request)
    stream.send(pb_utils.InferenceResponse(), flags=FINAL)
    stream.send(pb_utils.InferenceResponse())
    stream.send(flags=FINAL)

    assert [flags for _, flags in request.sender.sent] == [FINAL]
    assert request.sender.refused == []
    assert stream.is_cancelled() is False
    assert request.checks == 0  # the freed request was never asked


def test_before_final_runs_before_each_final_delivery_and_only_then(make_responses):
    journal: list[Any] = []
    responses = make_responses(before_final=lambda: journal.append("before_final"))
    first, second = client("first", journal), client("second", journal)

    responses.stream(first, "x", None, USAGE, final=False)
    assert sender_of(first).wait_for(1)
    responses.stream(first, "y", "stop", USAGE, final=True)
    assert sender_of(first).wait_final()
    responses.finish(second)
    assert sender_of(second).wait_final()

    summary = [entry if isinstance(entry, str) else (entry[0], entry[2]) for entry in journal]
    assert summary == [("first", 0), "before_final", ("first", FINAL), "before_final", ("second", FINAL)]


def test_the_models_deferred_metrics_are_published_before_its_final_goes_out(make_responses, metric_family):
    metrics = ModelMetrics("m")
    responses = make_responses(before_final=metrics.publish)
    seen_at_send: list[float] = []

    def snapshot(response: Any, flags: int) -> None:
        metric = metric_family("embeds_requests_finished_total").find(outcome="completed")
        seen_at_send.append(metric.value())

    request = pb_utils.InferenceRequest(sender=pb_utils.InferenceResponseSender(on_send=snapshot))
    stream = ClientStream(request)
    metrics.finished("completed")
    responses.stream(stream, "done", "stop", USAGE, final=True)

    assert request.sender.wait_final()
    assert seen_at_send == [1]


def test_a_failing_before_final_still_lets_the_final_out(make_responses):
    """before_final is metrics.publish, IPC to Triton that can fail; the final
    response must go out anyway, or the client waits forever and Triton never
    releases the request. (Before the fix, one try block around both lost it.)"""

    failures = [pb_utils.TritonModelException("Failed to increment metric value: shared memory exhausted")]

    def publish_failing_once() -> None:
        if failures:
            raise failures.pop()

    responses = make_responses(before_final=publish_failing_once)
    stream = client("a")
    responses.stream(stream, "done", "stop", USAGE, final=True)
    flush(responses)

    assert sender_of(stream).finals() == 1, "the request never got its final response"


def test_a_failing_data_send_does_not_swallow_the_error_final_behind_it(make_responses):
    """When a box holds data and an error, the data goes first; if that send
    raises (an IPC failure: the stream is still open, Triton would take a
    final), the error response with the FINAL flag must still be sent."""

    def fail_data_sends(response: Any, flags: int) -> None:
        if flags == 0:
            raise pb_utils.TritonModelException("An error occurred while sending a response.")

    responses = make_responses()
    plug = blocked_plug(responses, [])
    request = pb_utils.InferenceRequest(sender=pb_utils.InferenceResponseSender(on_send=fail_data_sends))
    stream = ClientStream(request)
    responses.stream(stream, "Hel", None, USAGE, final=False)
    responses.finish(stream, internal_error("generation_failed", "boom"))
    sender_of(plug).release.set()
    flush(responses)

    assert request.sender.finals() == 1, "the request never got its final response"


# -- ClientStream's lock ----------------------------------------------------------


class HeldCheckRequest(pb_utils.InferenceRequest):
    """A request whose is_cancelled() holds until `release` is set: a slow IPC."""

    def __init__(self) -> None:
        super().__init__()
        self.checking = threading.Event()
        self.release = threading.Event()

    def is_cancelled(self) -> bool:
        self.checking.set()
        assert self.release.wait(5)
        return super().is_cancelled()


def test_the_final_send_waits_for_a_cancellation_check_under_way():
    request = HeldCheckRequest()
    stream = ClientStream(request)
    check = threading.Thread(target=stream.is_cancelled)
    check.start()
    assert request.checking.wait(5)

    final = threading.Thread(
        target=stream.send, args=(pb_utils.InferenceResponse(),), kwargs={"flags": FINAL}
    )
    final.start()
    final.join(0.05)
    assert final.is_alive() and not request.sender.closed  # held off while the check runs

    request.release.set()
    check.join(5)
    final.join(5)
    assert request.sender.finals() == 1
    assert stream.is_cancelled() is False
    assert request.checks == 1
    assert request.misuses == []


def test_cancellation_checks_racing_the_final_send_never_reach_a_freed_request():
    misuses: list[str] = []
    checks = 0
    for _ in range(200):
        request = pb_utils.InferenceRequest()
        stream = ClientStream(request)
        start, done = threading.Barrier(2), threading.Event()

        def watch(
            stream: ClientStream = stream, start: threading.Barrier = start, done: threading.Event = done
        ) -> None:
            start.wait()
            while not done.is_set():
                try:
                    stream.is_cancelled()
                except pb_utils.TritonModelException:
                    pass  # recorded in request.misuses

        watcher = threading.Thread(target=watch)
        watcher.start()
        start.wait()
        while request.checks == 0:  # send while the checks are under way
            time.sleep(0)
        stream.send(pb_utils.InferenceResponse(), flags=FINAL)
        done.set()
        watcher.join(5)
        misuses += request.misuses
        checks += request.checks
    assert misuses == []
    assert checks > 0  # the checks did run alongside the sends


# -- Triton's vLLM backend's extra outputs -------------------------------------------------

EVERY_EXTRA = ExtraOutputs(
    finish_reason=True, num_input_tokens=True, num_output_tokens=True, logprobs=True, cumulative_logprob=True
)


def logprob(token_id: int, value: float) -> dict[int, dict[str, Any]]:
    return {token_id: {"logprob": value, "rank": 1, "decoded_token": str(token_id)}}


def test_requested_extras_go_on_every_response_with_the_backends_meaning(make_responses):
    responses = make_responses()
    stream = client("a")
    responses.stream(
        stream, "Hel", None, Usage(4, 1), False, EVERY_EXTRA, StepOutputs(1, [logprob(7, -0.5)], -0.5)
    )
    flush(responses)
    responses.stream(
        stream, "lo", "length", Usage(4, 2), True, EVERY_EXTRA, StepOutputs(1, [logprob(9, -1.0)], -1.5)
    )
    assert sender_of(stream).wait_final()
    (first, first_flags), (last, last_flags) = sender_of(stream).sent
    assert (first_flags, last_flags) == (0, FINAL)
    assert outputs(first) == {
        "text_output": "Hel",
        "finish_reason": "None",  # as the backend sends it before the end
        "num_input_tokens": 4,
        "num_output_tokens": 1,
        "logprobs": json.dumps([logprob(7, -0.5)]),
        "cumulative_logprob": -0.5,
    }
    # The last counts its own tokens, not the total, as the backend's does.
    assert outputs(last)["num_output_tokens"] == 1
    assert outputs(last)["finish_reason"] == "length"
    assert json.loads(outputs(last)["logprobs"]) == [
        {"9": {"logprob": -1.0, "rank": 1, "decoded_token": "9"}}
    ]


def test_merged_steps_add_their_tokens_and_logprobs(make_responses):
    responses = make_responses()
    plug = blocked_plug(responses, [])
    stream = client("a")
    only_counts = ExtraOutputs(num_output_tokens=True, logprobs=True, cumulative_logprob=True)
    responses.stream(
        stream, "a", None, Usage(4, 1), False, only_counts, StepOutputs(1, [logprob(1, -0.1)], -0.1)
    )
    responses.stream(
        stream, "b", None, Usage(4, 3), False, only_counts, StepOutputs(2, [logprob(2, -0.2)], -0.3)
    )
    sender_of(plug).release.set()
    flush(responses)
    [(response, _)] = sender_of(stream).sent
    values = outputs(response)
    assert set(values) == {"text_output", "num_output_tokens", "logprobs", "cumulative_logprob"}
    assert values["num_output_tokens"] == 3
    assert len(json.loads(values["logprobs"])) == 2
    assert values["cumulative_logprob"] == pytest.approx(-0.3)


def test_logprobs_asked_for_without_the_sampling_key_are_null(make_responses):
    responses = make_responses()
    stream = client("a")
    responses.stream(
        stream,
        "x",
        "stop",
        Usage(2, 1),
        True,
        ExtraOutputs(logprobs=True, cumulative_logprob=True),
        StepOutputs(1),
    )
    assert sender_of(stream).wait_final()
    [(response, _)] = sender_of(stream).sent
    assert outputs(response)["logprobs"] == "null"
    assert math.isnan(outputs(response)["cumulative_logprob"])
