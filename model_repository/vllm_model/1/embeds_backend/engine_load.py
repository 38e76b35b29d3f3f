"""The engine's load as its scheduler reports it: what an autoscaler needs
(queue length, running requests, KV-cache use), taken from vLLM's stat-logger
interface rather than from private engine state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SchedulerLoad:
    waiting: int
    running: int
    kv_cache_usage: float


class LoadProbe:
    """Keeps the scheduler's last report. vLLM calls the logger on the
    engine's output loop after each step; readers on other threads see the
    last snapshot (one reference assignment, atomic under the GIL)."""

    def __init__(self) -> None:
        self.latest: SchedulerLoad | None = None

    def logger_factory(self) -> Callable[..., Any]:
        """A vLLM StatLoggerFactory that records into this probe."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        probe = self

        class _LoadLogger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                if scheduler_stats is not None:
                    probe.latest = SchedulerLoad(
                        int(scheduler_stats.num_waiting_reqs),
                        int(scheduler_stats.num_running_reqs),
                        float(scheduler_stats.kv_cache_usage),
                    )

            def log_engine_initialized(self) -> None:
                pass

        return _LoadLogger
