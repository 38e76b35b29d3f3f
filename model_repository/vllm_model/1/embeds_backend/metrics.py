"""Triton custom metrics (Prometheus, served on Triton's metrics port)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

_TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class ModelMetrics:
    def __init__(self, model_name: str) -> None:
        counter = pb_utils.MetricFamily.COUNTER
        self._labels = {"model": model_name}
        self._requests = pb_utils.MetricFamily(
            "embeds_requests_total", "Requests received, by prompt kind", counter
        )
        self._rejections = pb_utils.MetricFamily(
            "embeds_rejections_total", "Requests rejected before the engine, by rule", counter
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
            pb_utils.MetricFamily(
                "embeds_engine_restarts_total", "Engine restarts after a failure", counter
            ),
            pb_utils.MetricFamily(
                "embeds_engine_recovery_seconds",
                "Seconds the last engine restart took, from failure to serving",
                pb_utils.MetricFamily.GAUGE,
            ),
        ]
        prompt, generated, ttft, unfinished, ready, restarts, recovery = self._families
        self._prompt_tokens = prompt.Metric(labels=self._labels)
        self._generated_tokens = generated.Metric(labels=self._labels)
        self._ttft = ttft.Metric(labels=self._labels, buckets=_TTFT_BUCKETS)
        self._unfinished = unfinished.Metric(labels=self._labels)
        self._ready = ready.Metric(labels=self._labels)
        self._restarts = restarts.Metric(labels=self._labels)
        self._recovery = recovery.Metric(labels=self._labels)
        self._by_kind: dict[str, object] = {}
        self._by_rule: dict[str, object] = {}
        self._by_outcome: dict[str, object] = {}

    def request(self, kind: str) -> None:
        self._labelled(self._requests, self._by_kind, "kind", kind).increment(1)

    def rejection(self, rule: str) -> None:
        self._labelled(self._rejections, self._by_rule, "rule", rule).increment(1)

    def finished(self, outcome: str) -> None:
        self._labelled(self._outcomes, self._by_outcome, "outcome", outcome).increment(1)

    def engine_state(self, ready: bool, recovery_seconds: float | None = None) -> None:
        self._ready.set(1 if ready else 0)
        if recovery_seconds is not None:
            self._restarts.increment(1)
            self._recovery.set(recovery_seconds)

    def tokens(self, prompt: int, generated: int) -> None:
        self._prompt_tokens.increment(prompt)
        self._generated_tokens.increment(generated)

    def time_to_first_token(self, seconds: float) -> None:
        self._ttft.observe(seconds)

    def unfinished(self, count: int) -> None:
        self._unfinished.set(count)

    def _labelled(self, family, cache: dict, key: str, value: str):
        metric = cache.get(value)
        if metric is None:
            metric = cache[value] = family.Metric(labels={**self._labels, key: value})
        return metric

    def close(self) -> None:
        """Release metrics, then families, while Triton's shared memory still
        exists: left to interpreter exit, their destructors crash the stub."""
        for name in ("_prompt_tokens", "_generated_tokens", "_ttft", "_unfinished",
                     "_ready", "_restarts", "_recovery"):
            setattr(self, name, None)
        self._by_kind.clear()
        self._by_rule.clear()
        self._by_outcome.clear()
        self._families.clear()
