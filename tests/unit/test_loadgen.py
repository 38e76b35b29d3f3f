"""The load generator reports why a client process failed before the timed
window, instead of the start barrier's empty error."""

from __future__ import annotations

import pytest

from tools.bench.loadgen import plan_tasks, run_clients
from tools.bench.paths import PATHS
from tools.bench.settings import Workload
from tools.server.launcher import free_port


def test_a_client_failing_its_warm_up_surfaces_the_request_error() -> None:
    # Nothing listens on the port: every warm-up request fails to connect.
    url = f"127.0.0.1:{free_port()}"
    tasks = plan_tasks(
        PATHS["triton-http-base64"], url, "model", Workload(4, 4, 2, 2), hidden=8, processes=2, texts={}
    )
    with pytest.raises(RuntimeError) as failure:
        run_clients(tasks, server_cpu=dict)
    message = str(failure.value)
    assert "client process failed before the timed window" in message
    assert "warm-up request failed" in message
    assert "ClientConnectorError" in message
