"""metrics.ModelMetrics: request-path updates are recorded, merged, and only
reach Triton (the fake pb_utils metrics of conftest) when publish() runs;
engine lifecycle updates go out at once."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import triton_python_backend_utils as pb_utils

from embeds_backend.metrics import ModelMetrics

REQUESTS = "embeds_requests_total"
REJECTIONS = "embeds_rejections_total"
FINISHED = "embeds_requests_finished_total"
PROMPT_TOKENS = "embeds_prompt_tokens_total"
GENERATED_TOKENS = "embeds_generation_tokens_total"
TTFT = "embeds_time_to_first_token_seconds"
UNFINISHED = "embeds_engine_unfinished_requests"


def all_calls() -> list[tuple[str, str, float]]:
    """Every increment/set/observe any metric received: (family, operation, value)."""
    return [
        (family.name, operation, value)
        for family in pb_utils.MetricFamily.created
        for metric in family.metrics
        for operation, value in metric.calls
    ]


def record_one_of_each(metrics: ModelMetrics) -> None:
    metrics.request("text")
    metrics.request("text")
    metrics.request("embeds_tensor")
    metrics.rejection("bad_sampling")
    metrics.rejection("bad_sampling")
    metrics.finished("completed")
    metrics.finished("completed")
    metrics.finished("cancelled")
    metrics.tokens(prompt=10, generated=5)
    metrics.tokens(prompt=3, generated=2)
    metrics.time_to_first_token(0.25)
    metrics.time_to_first_token(0.125)
    metrics.unfinished(5)
    metrics.unfinished(2)


def test_request_path_updates_reach_no_metric_until_publish():
    metrics = ModelMetrics("m")
    record_one_of_each(metrics)
    assert all_calls() == []

    metrics.publish()
    assert all_calls() != []


def test_publish_sums_increments_keeps_the_last_gauge_value_and_every_observation(metric_family):
    metrics = ModelMetrics("m")
    record_one_of_each(metrics)
    metrics.publish()

    def calls(name: str, **labels: str) -> list[tuple[str, float]]:
        return metric_family(name).find(model="m", **labels).calls

    assert calls(REQUESTS, kind="text") == [("increment", 2)]
    assert calls(REQUESTS, kind="embeds_tensor") == [("increment", 1)]
    assert calls(REJECTIONS, rule="bad_sampling") == [("increment", 2)]
    assert calls(FINISHED, outcome="completed") == [("increment", 2)]
    assert calls(FINISHED, outcome="cancelled") == [("increment", 1)]
    assert calls(PROMPT_TOKENS) == [("increment", 13)]
    assert calls(GENERATED_TOKENS) == [("increment", 7)]
    assert calls(TTFT) == [("observe", 0.25), ("observe", 0.125)]
    assert calls(UNFINISHED) == [("set", 2)]


def test_a_second_publish_applies_only_what_was_recorded_since(metric_family):
    metrics = ModelMetrics("m")
    record_one_of_each(metrics)
    metrics.publish()
    before = all_calls()
    metrics.publish()
    assert all_calls() == before

    metrics.finished("completed")
    metrics.publish()
    assert metric_family(FINISHED).find(outcome="completed").calls == [("increment", 2), ("increment", 1)]


def test_a_publish_waits_for_one_under_way_and_each_update_is_applied_once(metric_family, monkeypatch):
    metrics = ModelMetrics("m")
    metrics.finished("completed")
    completed = metric_family(FINISHED).find(outcome="completed")
    applying, release = threading.Event(), threading.Event()
    real_increment = completed.increment

    def held_increment(value: float) -> None:
        applying.set()
        release.wait(5)  # the main thread's checks fail if this times out
        real_increment(value)

    monkeypatch.setattr(completed, "increment", held_increment)
    first = threading.Thread(target=metrics.publish)
    first.start()
    assert applying.wait(5)  # the first publish is applying its batch

    metrics.finished("completed")  # recorded while it runs
    metrics.tokens(prompt=3, generated=1)
    second = threading.Thread(target=metrics.publish)
    second.start()
    second.join(0.05)
    assert second.is_alive()  # waits for the publish under way

    release.set()
    first.join(5)
    second.join(5)
    metrics.publish()
    assert completed.calls == [("increment", 1), ("increment", 1)]
    assert metric_family(PROMPT_TOKENS).find().calls == [("increment", 3)]


def test_concurrent_recording_and_publishing_lose_and_repeat_nothing(metric_family):
    metrics = ModelMetrics("m")
    metrics.finished("completed")  # creates the labelled metric before the race
    per_thread, recorders = 2000, 3
    stop = threading.Event()

    def record() -> None:
        for _ in range(per_thread):
            metrics.finished("completed")
            metrics.tokens(prompt=2, generated=1)

    def publish() -> None:
        while not stop.is_set():
            metrics.publish()

    publishers = [threading.Thread(target=publish) for _ in range(2)]
    recording = [threading.Thread(target=record) for _ in range(recorders)]
    for thread in publishers + recording:
        thread.start()
    for thread in recording:
        thread.join(10)
    stop.set()
    for thread in publishers:
        thread.join(10)
    metrics.publish()

    total = 1 + per_thread * recorders
    assert metric_family(FINISHED).find(outcome="completed").value() == total
    assert metric_family(PROMPT_TOKENS).find().value() == 2 * (total - 1)
    assert metric_family(GENERATED_TOKENS).find().value() == total - 1


@pytest.mark.parametrize(
    ("ready", "recovery", "expected"),
    [
        (False, None, {"embeds_engine_ready": [("set", 0)]}),
        (
            True,
            2.5,
            {
                "embeds_engine_ready": [("set", 1)],
                "embeds_engine_restarts_total": [("increment", 1)],
                "embeds_engine_recovery_seconds": [("set", 2.5)],
            },
        ),
    ],
)
def test_engine_state_is_applied_at_once(ready: bool, recovery: float | None, expected: dict[str, Any]):
    metrics = ModelMetrics("m")
    metrics.finished("completed")  # pending: must not be flushed by engine_state
    metrics.engine_state(ready, recovery)

    applied: dict[str, list[tuple[str, float]]] = {}
    for name, operation, value in all_calls():
        applied.setdefault(name, []).append((operation, value))
    assert applied == expected
