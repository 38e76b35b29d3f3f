"""Triton custom metrics (Prometheus, served on Triton's metrics port).

Every metric update is a blocking IPC round trip to the Triton process, a
millisecond or more when the host is busy. Request-path updates are therefore
only recorded here, merged (counter increments summed, a gauge's last value
kept) and published later by `publish()`: from the response sender before a
request's final response goes out, so a client that has its answer also sees
its metrics, and from the cancellation watcher for the rest. Under load the
model's event loop makes no IPC for metrics at all.
"""

from __future__ import annotations

import threading
from typing import Any

import triton_python_backend_utils as pb_utils

from .engine_load import SchedulerLoad
from .stub_ipc import STUB_IPC

_TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class ModelMetrics:
    def __init__(self, model_name: str) -> None:
        counter = pb_utils.MetricFamily.COUNTER
        gauge = pb_utils.MetricFamily.GAUGE
        self._labels = {"model": model_name}
        self._requests = pb_utils.MetricFamily(
            "embeds_requests_total", "Requests received, by prompt kind", counter
        )
        self._rejections = pb_utils.MetricFamily(
            "embeds_rejections_total", "Requests rejected before the engine, by rule", counter
        )
        self._features = pb_utils.MetricFamily(
            "embeds_feature_requests_total",
            "Requests using a generation feature (logprobs, n, structured, adapter, ...), by feature",
            counter,
        )
        self._outcomes = pb_utils.MetricFamily(
            "embeds_requests_finished_total",
            "Requests that received their final response, by outcome",
            counter,
        )
        # Families must outlive their metrics, so each is kept on self.
        self._families = [
            pb_utils.MetricFamily(
                "embeds_prompt_tokens_total", "Prompt positions (tokens or embedding rows)", counter
            ),
            pb_utils.MetricFamily("embeds_generation_tokens_total", "Generated tokens", counter),
            pb_utils.MetricFamily(
                "embeds_prompt_cached_tokens_total",
                "Prompt positions served from vLLM's prefix cache (shared only within one cache_salt)",
                counter,
            ),
            pb_utils.MetricFamily(
                "embeds_time_to_first_token_seconds",
                "Seconds from request arrival to its first streamed token",
                pb_utils.MetricFamily.HISTOGRAM,
            ),
            pb_utils.MetricFamily(
                "embeds_engine_unfinished_requests",
                "Requests the vLLM engine holds (queued or running)",
                pb_utils.MetricFamily.GAUGE,
            ),
            pb_utils.MetricFamily(
                "embeds_engine_ready",
                "1 while the vLLM engine serves, 0 while it is down or restarting",
                pb_utils.MetricFamily.GAUGE,
            ),
            pb_utils.MetricFamily("embeds_engine_restarts_total", "Engine restarts after a failure", counter),
            pb_utils.MetricFamily(
                "embeds_engine_recovery_seconds",
                "Seconds the last engine restart took, from failure to serving",
                pb_utils.MetricFamily.GAUGE,
            ),
            pb_utils.MetricFamily(
                "embeds_requests_inflight",
                "Requests the model holds, from arrival (validation included) to their final response",
                gauge,
            ),
            pb_utils.MetricFamily(
                "embeds_engine_waiting_requests", "Requests queued in vLLM's scheduler", gauge
            ),
            pb_utils.MetricFamily(
                "embeds_engine_running_requests", "Requests vLLM's scheduler is running", gauge
            ),
            pb_utils.MetricFamily(
                "embeds_engine_kv_cache_usage", "Fraction of vLLM's KV cache in use (0 to 1)", gauge
            ),
            pb_utils.MetricFamily(
                "embeds_draining", "1 once the replica is stopping: new requests are refused", gauge
            ),
        ]
        (
            prompt,
            generated,
            cached,
            ttft,
            unfinished,
            ready,
            restarts,
            recovery,
            inflight,
            waiting,
            running,
            kv_usage,
            draining,
        ) = self._families
        self._prompt_tokens = prompt.Metric(labels=self._labels)
        self._generated_tokens = generated.Metric(labels=self._labels)
        self._cached_tokens = cached.Metric(labels=self._labels)
        self._ttft = ttft.Metric(labels=self._labels, buckets=_TTFT_BUCKETS)
        self._unfinished = unfinished.Metric(labels=self._labels)
        self._ready = ready.Metric(labels=self._labels)
        self._restarts = restarts.Metric(labels=self._labels)
        self._recovery = recovery.Metric(labels=self._labels)
        self._inflight = inflight.Metric(labels=self._labels)
        self._waiting = waiting.Metric(labels=self._labels)
        self._running = running.Metric(labels=self._labels)
        self._kv_usage = kv_usage.Metric(labels=self._labels)
        self._draining = draining.Metric(labels=self._labels)
        self._by_kind: dict[str, object] = {}
        self._by_rule: dict[str, object] = {}
        self._by_feature: dict[str, object] = {}
        self._by_outcome: dict[str, object] = {}
        self._pending = _PendingUpdates()
        self._publishing = STUB_IPC  # publishing is stub IPC (see stub_ipc)

    # -- request path: recorded now, published by publish() ---------------------
    def request(self, kind: str) -> None:
        self._pending.increment(self._labelled(self._requests, self._by_kind, "kind", kind), 1)

    def feature(self, name: str) -> None:
        self._pending.increment(self._labelled(self._features, self._by_feature, "feature", name), 1)

    def rejection(self, rule: str) -> None:
        self._pending.increment(self._labelled(self._rejections, self._by_rule, "rule", rule), 1)

    def finished(self, outcome: str) -> None:
        metric = self._labelled(self._outcomes, self._by_outcome, "outcome", outcome)
        self._pending.increment(metric, 1)

    def tokens(self, prompt: int, generated: int) -> None:
        self._pending.increment(self._prompt_tokens, prompt)
        self._pending.increment(self._generated_tokens, generated)

    def cached_prompt_tokens(self, count: int) -> None:
        self._pending.increment(self._cached_tokens, count)

    def time_to_first_token(self, seconds: float) -> None:
        self._pending.observe(self._ttft, seconds)

    def unfinished(self, count: int) -> None:
        self._pending.set(self._unfinished, count)

    def load(self, inflight: int, scheduler: SchedulerLoad | None) -> None:
        """What demand looks like now (an autoscaler's inputs)."""
        self._pending.set(self._inflight, inflight)
        if scheduler is not None:
            self._pending.set(self._waiting, scheduler.waiting)
            self._pending.set(self._running, scheduler.running)
            self._pending.set(self._kv_usage, scheduler.kv_cache_usage)

    def draining(self) -> None:
        with self._publishing:
            self._draining.set(1)

    def publish(self) -> None:
        """Apply what was recorded. The lock makes a caller wait for a publish
        already under way, so whatever it recorded earlier is out on return."""
        with self._publishing:
            increments, observations, values = self._pending.take()
            for metric, amount in increments.items():
                metric.increment(amount)
            for metric, value in observations:
                metric.observe(value)
            for metric, value in values.items():
                metric.set(value)

    # -- engine lifecycle: rare, applied at once ----------------------------------
    def engine_state(self, ready: bool, recovery_seconds: float | None = None) -> None:
        with self._publishing:
            self._ready.set(1 if ready else 0)
            if recovery_seconds is not None:
                self._restarts.increment(1)
                self._recovery.set(recovery_seconds)

    def _labelled(self, family: Any, cache: dict[str, Any], key: str, value: str) -> Any:
        metric = cache.get(value)
        if metric is None:
            with STUB_IPC:  # creating a metric registers it with tritonserver
                metric = cache[value] = family.Metric(labels={**self._labels, key: value})
        return metric

    def close(self) -> None:
        """Release every metric, then every family, while Triton's shared
        memory still exists: one left to interpreter exit crashes the stub in
        its destructor (seen: a segfault in ~MetricFamily after unload)."""
        with STUB_IPC:
            self._close()

    def _close(self) -> None:
        self.publish()
        for cache in (self._by_kind, self._by_rule, self._by_feature, self._by_outcome):
            cache.clear()
        kept = {"_pending", "_publishing", "_labels"}
        names = [name for name in vars(self) if name not in kept]
        metrics = [name for name in names if hasattr(getattr(self, name), "set")]
        for name in metrics + [name for name in names if name not in metrics]:
            setattr(self, name, None)


class _PendingUpdates:
    """Metric updates not yet sent to Triton, merged per metric."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._increments: dict[Any, float] = {}
        self._observations: list[tuple[Any, float]] = []
        self._values: dict[Any, float] = {}

    def increment(self, metric: Any, amount: float) -> None:
        with self._lock:
            self._increments[metric] = self._increments.get(metric, 0) + amount

    def observe(self, metric: Any, value: float) -> None:
        with self._lock:
            self._observations.append((metric, value))

    def set(self, metric: Any, value: float) -> None:
        with self._lock:
            self._values[metric] = value

    def take(self) -> tuple[dict[Any, float], list[tuple[Any, float]], dict[Any, float]]:
        with self._lock:
            taken = self._increments, self._observations, self._values
            self._increments, self._observations, self._values = {}, [], {}
        return taken
