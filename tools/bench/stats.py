"""Per-request records and the per-path summary computed from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class RequestRecord:
    start: float  # time.monotonic(): one clock for every process on the host
    end: float
    first_token: float | None = None  # first streamed token; None when not streaming
    output_tokens: int = 0
    prompt_tokens: int = 0
    error: str | None = None


@dataclass
class CpuUse:
    client_s: float | None = None  # CPU seconds of the load generator processes
    # CPU seconds of the serving process tree, per process name (stub, engine core, ...)
    server_by_process: dict[str, float] | None = None
    client_processes: int = 0
    max_client_process_s: float | None = None

    @property
    def server_s(self) -> float | None:
        return None if self.server_by_process is None else sum(self.server_by_process.values())


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def summarize(records: Sequence[RequestRecord], cpu: CpuUse) -> dict[str, Any]:
    ok = [r for r in records if r.error is None]
    errors = [r.error for r in records if r.error is not None]
    wall = (max(r.end for r in records) - min(r.start for r in records)) if records else 0.0
    ttft = [r.first_token - r.start for r in ok if r.first_token is not None]
    e2e = [r.end - r.start for r in ok]
    output_tokens = sum(r.output_tokens for r in ok)
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(ok) / wall, 2) if wall else 0.0,
        "output_tokens_per_s": round(output_tokens / wall, 1) if wall else 0.0,
        "output_tokens_mean": round(output_tokens / len(ok), 2) if ok else 0.0,
        "prompt_tokens_mean": round(sum(r.prompt_tokens for r in ok) / len(ok), 2) if ok else 0.0,
        "ttft_ms_p50": _ms(percentile(ttft, 50)),
        "ttft_ms_p99": _ms(percentile(ttft, 99)),
        "e2e_ms_p50": _ms(percentile(e2e, 50)),
        "e2e_ms_p99": _ms(percentile(e2e, 99)),
        **_cpu_fields(cpu, wall),
    }


def _cpu_fields(cpu: CpuUse, wall: float) -> dict[str, Any]:
    """CPU seconds and the average number of cores they kept busy."""

    def cores(seconds: float | None) -> float | None:
        return round(seconds / wall, 2) if seconds is not None and wall else None

    return {
        "client_processes": cpu.client_processes,
        "client_cpu_s": None if cpu.client_s is None else round(cpu.client_s, 2),
        "client_cpu_cores": cores(cpu.client_s),
        "client_cpu_cores_max_process": cores(cpu.max_client_process_s),
        "server_cpu_s": None if cpu.server_s is None else round(cpu.server_s, 2),
        "server_cpu_cores": cores(cpu.server_s),
        "server_cpu_cores_by_process": {
            name: cores(seconds) for name, seconds in sorted((cpu.server_by_process or {}).items())
        },
    }
