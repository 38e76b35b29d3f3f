"""The load generator reports why a client process failed before the timed
window, instead of the start barrier's empty error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from benchmarking.loadgen import plan_tasks, run_clients  # noqa: E402
from benchmarking.paths import PATHS  # noqa: E402
from benchmarking.settings import Workload  # noqa: E402
from tritonserver_launcher import free_port  # noqa: E402


def test_a_client_failing_its_warm_up_surfaces_the_request_error() -> None:
    # Nothing listens on the port: every warm-up request fails to connect.
    url = f"127.0.0.1:{free_port()}"
    tasks = plan_tasks(PATHS["triton-http-base64"], url, "model", Workload(4, 4, 2, 2),
                       hidden=8, processes=2, texts={})
    with pytest.raises(RuntimeError) as failure:
        run_clients(tasks, server_cpu=dict)
    message = str(failure.value)
    assert "client process failed before the timed window" in message
    assert "warm-up request failed" in message
    assert "ClientConnectorError" in message
