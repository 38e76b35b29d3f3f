"""The server's own Prometheus metrics: requests by route, status and prompt
kind, their latency, and what is in flight. With several worker processes
the metrics live in a shared directory (prometheus_client's multiprocess
mode), so /metrics shows the whole server whichever worker answers."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "openai_requests_total",
    "Requests answered, by route, HTTP status and prompt kind",
    ["route", "status", "kind"],
)
LATENCY = Histogram(
    "openai_request_seconds",
    "Seconds from a request's arrival to its last byte, by route",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "openai_requests_in_flight", "Requests being answered, by route", ["route"], multiprocess_mode="livesum"
)


def exposition() -> tuple[bytes, str]:
    """The metrics text: this process's, or every worker's in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
