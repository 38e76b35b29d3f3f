"""What the supervisor reads from its tritonserver: Triton's own health
endpoints and the model's gauges on the metrics port."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class TritonState:
    """One look at the server. `engine_ready` is None when no model exports
    the engine gauge (a repository without this project's model)."""

    live: bool
    ready: bool
    engine_ready: bool | None
    inflight: int
    # Every model has seen the drain order (None: no model exports the gauge).
    draining: bool | None = None

    @property
    def serving(self) -> bool:
        return self.live and self.ready and self.engine_ready is not False


NOT_RUNNING = TritonState(live=False, ready=False, engine_ready=None, inflight=0)


def read_state(http_port: int, metrics_port: int, host: str = "127.0.0.1") -> TritonState:
    live = _ok(f"http://{host}:{http_port}/v2/health/live")
    if not live:
        return NOT_RUNNING
    ready = _ok(f"http://{host}:{http_port}/v2/health/ready")
    text = _get(f"http://{host}:{metrics_port}/metrics")
    if text is None:
        return TritonState(live, ready, engine_ready=False, inflight=0)
    gauges = _gauges(text, ("embeds_engine_ready", "embeds_requests_inflight", "embeds_draining"))
    return TritonState(
        live,
        ready,
        engine_ready=_all_one(gauges["embeds_engine_ready"]),
        inflight=int(sum(gauges["embeds_requests_inflight"])),
        draining=_all_one(gauges["embeds_draining"]),
    )


def _gauges(text: str, names: tuple[str, ...]) -> dict[str, list[float]]:
    """Each named gauge's values over every model."""
    values: dict[str, list[float]] = {name: [] for name in names}
    for family in text_string_to_metric_families(text):
        if family.name in values:
            values[family.name] += [sample.value for sample in family.samples]
    return values


def _all_one(values: list[float]) -> bool | None:
    return all(value == 1 for value in values) if values else None


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            return str(response.read().decode("utf-8", "replace"))
    except (OSError, urllib.error.URLError):
        return None
