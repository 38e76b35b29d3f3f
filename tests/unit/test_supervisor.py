"""The engine supervisor's restart logic, with a stand-in for the engine
(the real engine-death path is tested through the server in test_faults)."""

from __future__ import annotations

import asyncio

from embeds_backend.contract import Unavailable
from embeds_backend.supervisor import EngineSupervisor


class FlakyEngine:
    """Dies on demand; its first restart attempt fails."""

    def __init__(self) -> None:
        self.is_healthy = True
        self.starts = 0
        self.shutdowns = 0

    def start(self) -> None:
        self.starts += 1
        if self.starts == 1:
            raise RuntimeError("not enough memory for the KV cache")
        self.is_healthy = True

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_dead_engine_is_restarted_with_backoff_and_reported():
    async def scenario() -> tuple[FlakyEngine, EngineSupervisor, list, list[str]]:
        engine, states, logs = FlakyEngine(), [], []
        supervisor = EngineSupervisor(
            engine,
            asyncio.get_running_loop(),
            on_state=lambda *s: states.append(s),
            log=logs.append,
            check_interval_s=0.01,
        )
        supervisor.start()
        engine.is_healthy = False
        supervisor.report_failure()
        await asyncio.sleep(0.05)
        assert supervisor.restarting
        assert supervisor.unavailable().code == Unavailable.ENGINE_RESTARTING
        while supervisor.restarting:  # the failed attempt backs off ~1 s
            await asyncio.sleep(0.05)
        await supervisor.stop()
        return engine, supervisor, states, logs

    engine, supervisor, states, logs = asyncio.run(scenario())
    assert engine.starts == 2 and engine.shutdowns == 2
    assert supervisor.restarts == 1
    assert states[0] == (False, None)
    assert states[1][0] is True and states[1][1] >= 1.0
    assert any("restart failed" in line for line in logs)
    assert supervisor.unavailable().code == Unavailable.ENGINE_DOWN
