"""Keeps the vLLM engine alive: when its engine-core process dies, the model
replaces the engine in place instead of staying broken until tritonserver is
restarted (Triton's own vLLM backend can only unload the model).

While the replacement loads, requests get UNAVAILABLE with a message saying
so; requests that were running when the engine died fail at once with
UNAVAILABLE (vLLM raises EngineDeadError to each of them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .contract import Unavailable
from .engine import EngineBridge
from .errors import EngineUnavailable

Log = Callable[[str], None]


class EngineSupervisor:
    def __init__(
        self,
        engine: EngineBridge,
        loop: asyncio.AbstractEventLoop,
        on_state: Callable[[bool, float | None], None],
        log: Log,
        check_interval_s: float = 0.5,
        max_backoff_s: float = 60.0,
    ) -> None:
        """`on_state(ready, recovery_seconds)` is called when the engine goes
        down (False, None) and when it is back (True, seconds it took)."""
        self._engine = engine
        self._loop = loop
        self._on_state = on_state
        self._log = log
        self._check_interval_s = check_interval_s
        self._max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.restarts = 0
        self.restarting = False

    def start(self) -> None:
        """Begin watching; call on the event loop."""
        self._task = self._loop.create_task(self._watch())

    def report_failure(self) -> None:
        """A request saw the engine die: check now rather than at the next tick."""
        self._wake.set()

    def unavailable(self) -> EngineUnavailable:
        """The error for a request that finds the engine down."""
        if self.restarting:
            return EngineUnavailable(
                Unavailable.ENGINE_RESTARTING, "the vLLM engine failed and is restarting; retry shortly"
            )
        return EngineUnavailable(Unavailable.ENGINE_DOWN, "the vLLM engine is not running")

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._check_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if not self._engine.is_healthy:
                await self._recover()

    async def _recover(self) -> None:
        self.restarting = True
        self._on_state(False, None)
        self._log("vLLM engine died; starting a new one")
        began = time.monotonic()
        backoff = 1.0
        # Shut the dead engine down on this loop: it owns the output task.
        self._shutdown_quietly()
        while True:
            try:
                await self._loop.run_in_executor(None, self._engine.start)
                break
            except Exception as exc:  # noqa: BLE001 - keep trying, with backoff
                self._log(
                    f"vLLM engine restart failed ({type(exc).__name__}: {exc}); retrying in {backoff:.0f} s"
                )
                self._shutdown_quietly()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
        seconds = time.monotonic() - began
        self.restarts += 1
        self.restarting = False
        self._on_state(True, seconds)
        self._log(f"vLLM engine restarted in {seconds:.1f} s (restart {self.restarts})")

    def _shutdown_quietly(self) -> None:
        try:
            self._engine.shutdown()
        except Exception as exc:  # noqa: BLE001 - a dead engine may fail to stop cleanly
            self._log(f"stopping the dead engine raised {type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
