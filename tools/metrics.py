"""Reading a live server's Prometheus metrics (Triton's port 8002)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families


def scrape(metrics_url: str) -> str:
    """The exposition text of `host:port/metrics`."""
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=10) as response:
        return response.read().decode()


def sample_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`; an
    unlabelled sample matches when no labels are asked for. A histogram's
    `_bucket`, `_sum` and `_count` samples are named in full. A counter
    exposed without the `_total` suffix (Triton's `nv_inference_*`) is read
    by its exposed name, as Prometheus reads it (the parser renames its
    samples `<name>_total`)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            named = sample.name == name or (
                family.type == "counter" and family.name == name and sample.name == f"{name}_total"
            )
            if named and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def metric_value(metrics_url: str, name: str, **labels: str) -> float:
    """Sum of a live metric's samples matching the labels."""
    return sample_sum(scrape(metrics_url), name, **labels)


def wait_for_metric(
    metrics_url: str, name: str, done: Callable[[float], bool], timeout_s: float, **labels: str
) -> float:
    """Poll a metric until `done(value)` or the timeout; returns the last value seen."""
    deadline = time.monotonic() + timeout_s
    while not done(value := metric_value(metrics_url, name, **labels)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value
