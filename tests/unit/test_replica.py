"""The replica supervisor's pure parts: the drain file both sides read, the
readiness verdicts and their reasons, the command it gives tritonserver, and
the health endpoint over a real socket."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from embeds_backend.drain import DrainWatch, write_drain_order
from triton_embeds_replica.cli import parse_args
from triton_embeds_replica.health import HealthServer, ReplicaStatus
from triton_embeds_replica.supervisor import _group_members
from triton_embeds_replica.triton_state import NOT_RUNNING, TritonState, _gauges

SERVING = TritonState(live=True, ready=True, engine_ready=True, inflight=0)


def test_a_drain_order_carries_its_deadline(tmp_path: Path) -> None:
    path = tmp_path / "drain.json"
    watch = DrainWatch(path, default_timeout_s=30)
    assert watch.poll() is None
    write_drain_order(path, timeout_s=5)
    order = watch.poll()
    assert order is not None and 4 < order.remaining() <= 5
    assert watch.poll() is order  # read once


@pytest.mark.parametrize("content", ["", "not json", '{"other": 1}', '{"deadline_unix": "soon"}'])
def test_a_drain_file_without_a_usable_deadline_drains_with_the_default(tmp_path: Path, content: str) -> None:
    path = tmp_path / "drain.json"
    path.write_text(content)  # e.g. `touch` from a preStop hook
    order = DrainWatch(path, default_timeout_s=12).poll()
    assert order is not None and 11 < order.remaining() <= 12


def test_a_stale_drain_file_is_cleared_and_no_path_means_no_drain(tmp_path: Path) -> None:
    path = tmp_path / "drain.json"
    write_drain_order(path, timeout_s=5)
    watch = DrainWatch(path, default_timeout_s=30)
    watch.clear_stale()
    assert not path.exists() and watch.poll() is None
    assert DrainWatch(None, default_timeout_s=30).poll() is None


def test_a_past_deadline_drains_at_once(tmp_path: Path) -> None:
    path = tmp_path / "drain.json"
    path.write_text(json.dumps({"deadline_unix": time.time() - 10}))
    order = DrainWatch(path, default_timeout_s=30).poll()
    assert order is not None and order.remaining() == 0


@pytest.mark.parametrize(
    ("status", "ready", "live", "reason"),
    [
        (ReplicaStatus(True, False, SERVING), True, True, "serving"),
        (ReplicaStatus(True, True, SERVING), False, True, "draining"),
        (ReplicaStatus(False, False, NOT_RUNNING), False, False, "tritonserver is not running"),
        (ReplicaStatus(True, False, NOT_RUNNING), False, True, "tritonserver is starting"),
        (
            ReplicaStatus(True, False, TritonState(True, True, engine_ready=False, inflight=3)),
            False,
            True,
            "a vLLM engine is starting or being rebuilt",
        ),
        (
            ReplicaStatus(True, False, TritonState(True, False, engine_ready=None, inflight=0)),
            False,
            True,
            "tritonserver or a model is not ready",
        ),
        # A repository without this project's model: Triton's word is enough.
        (
            ReplicaStatus(True, False, TritonState(True, True, engine_ready=None, inflight=0)),
            True,
            True,
            "serving",
        ),
    ],
)
def test_readiness_and_liveness_verdicts(status: ReplicaStatus, ready: bool, live: bool, reason: str) -> None:
    assert (status.ready, status.live) == (ready, live)
    assert status.reason().startswith(reason)


def test_model_gauges_are_read_over_every_model() -> None:
    text = "\n".join(
        [
            "# TYPE embeds_engine_ready gauge",
            'embeds_engine_ready{model="a"} 1',
            'embeds_engine_ready{model="b"} 0',
            "# TYPE embeds_requests_inflight gauge",
            'embeds_requests_inflight{model="a"} 2',
            'embeds_requests_inflight{model="b"} 3',
        ]
    )
    gauges = _gauges(text, ("embeds_engine_ready", "embeds_requests_inflight", "embeds_draining"))
    assert gauges == {
        "embeds_engine_ready": [1, 0],
        "embeds_requests_inflight": [2, 3],
        "embeds_draining": [],
    }


def test_the_tritonserver_command_puts_the_callers_options_last() -> None:
    config = parse_args(["--grpc-port", "9101", "--", "--model-repository=/m", "--exit-timeout-secs=99"])
    command = config.command()
    assert "--backend-config=python,shm-region-prefix-name=triton_embeds_9101_" in command
    assert command[-2:] == ["--model-repository=/m", "--exit-timeout-secs=99"]  # later options win
    assert config.drain_file.name == "triton_embeds_9101_drain.json"


def test_group_members_lists_a_live_process_group() -> None:
    members = _group_members(os.getpgrp())
    assert any(member.endswith(f"[{os.getpid()}]") for member in members)
    assert _group_members(2**22 + 12345) == []


def test_the_health_endpoint_answers_with_the_current_status() -> None:
    current = {"status": ReplicaStatus(True, False, SERVING)}
    server = HealthServer("127.0.0.1", 0, lambda: current["status"])
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read())["reason"] == "serving"
        current["status"] = ReplicaStatus(True, True, SERVING)
        with pytest.raises(urllib.error.HTTPError) as unready:
            urllib.request.urlopen(f"{url}/ready", timeout=5)
        assert unready.value.code == 503 and json.loads(unready.value.read())["draining"] is True
        with urllib.request.urlopen(f"{url}/live", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/other", timeout=5)
        assert missing.value.code == 404
    finally:
        server.stop()
