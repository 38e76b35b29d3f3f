"""Faults, load and limits through a real server of its own: concurrent
streams with cancellations, invalid requests and killed clients; the vLLM
engine core killed under a running request; the per-model resource limits."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil
import pytest

from tools.infer import GREEDY, StreamCall, grpc_infer, make_inputs
from tools.load_fault import LONG_CONTEXT, LoadPlan, print_report, run_load_fault
from tools.metrics import metric_value, wait_for_metric
from tools.payloads import bf16_exact, torch_b64
from tools.server.launcher import start_ready_server
from tools.server.repository import tiny_engine_args, write_model
from triton_embeds.protocol import ErrorKind, ErrorMarker, parse_error_marker

HIDDEN = 128
LIMITED_CONTEXT = 64
LIMITED_BYTES = 8192
# Long enough that the engine is still generating when the test kills it.
LONG_STREAM = {"max_tokens": LONG_CONTEXT - 64, "ignore_eos": True, "temperature": 0}


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("fault_repository")
    write_model(repository, "tiny_faults", tiny_engine_args(max_model_len=LONG_CONTEXT))
    write_model(
        repository,
        "tiny_limited",
        tiny_engine_args(max_model_len=LIMITED_CONTEXT),
        {"max_concurrent_requests": 2, "max_embeds_bytes": LIMITED_BYTES},
    )
    server = start_ready_server(repository, repository.parent / "fault-tritonserver.log")
    yield server
    server.stop()


def model_processes(server, model: str) -> tuple[psutil.Process, list[psutil.Process]]:
    """The model's python-backend stub and the vLLM engine-core processes under it."""
    for child in psutil.Process(server.process.pid).children(recursive=True):
        if f"/{model}/" in " ".join(child.cmdline()):
            engines = [p for p in child.children(recursive=True) if "EngineCore" in _title(p)]
            return child, engines
    raise AssertionError(f"no stub process for {model}")


def _title(process: psutil.Process) -> str:
    try:
        return process.name() + " " + " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return ""


def test_load_with_cancellations_invalid_requests_and_killed_clients(fault_server):
    """A small version of `python -m tools.load_fault`: nothing lost, nothing leaked."""
    plan = LoadPlan(streams=64, max_tokens=16, kill_processes=2)
    metrics = f"localhost:{fault_server.ports.metrics}"
    result = asyncio.run(
        run_load_fault(fault_server.grpc_url, metrics, fault_server.process.pid, "tiny_faults", HIDDEN, plan)
    )
    print_report(result)
    assert result["lost"] == 0
    assert result["client"]["killed"] > 0 and result["client"]["cancelled"] > 0
    assert result["client"]["rejected"] == result["sent"]["invalid"] > 0
    failed = [name for name, ok in result["checks"].items() if not ok]
    assert not failed, failed


def test_engine_death_fails_fast_then_recovers_in_place(fault_server):
    grpc_url, metrics = fault_server.grpc_url, f"localhost:{fault_server.ports.metrics}"
    request = make_inputs(embeds=bf16_exact((5, HIDDEN), seed=3).numpy(), sampling=GREEDY)
    reference = grpc_infer(grpc_url, "tiny_faults", request).text
    stub, engines = model_processes(fault_server, "tiny_faults")
    assert len(engines) == 1, [_title(p) for p in engines]

    running = StreamCall(
        grpc_url, "tiny_faults", make_inputs(text="hello", stream=True, sampling=LONG_STREAM)
    )
    # Kill as soon as the engine holds the request (the client may read its
    # first token later than the engine produces its last).
    held = wait_for_metric(
        metrics, "embeds_engine_unfinished_requests", lambda v: v == 1, 30, model="tiny_faults"
    )
    assert held == 1
    killed_at = time.monotonic()
    os.kill(engines[0].pid, signal.SIGKILL)
    failed = running.result(timeout_s=30)
    fail_seconds = time.monotonic() - killed_at
    running.close()
    assert failed.error is not None and "engine" in failed.error, failed
    assert parse_error_marker(failed.error) == ErrorMarker(ErrorKind.UNAVAILABLE, "engine_down"), failed
    assert failed.final_flags == 1
    assert wait_for_metric(metrics, "embeds_engine_ready", lambda v: v == 0, 10, model="tiny_faults") == 0

    during = grpc_infer(grpc_url, "tiny_faults", request)
    assert during.error is not None and "unavailable" in during.error, during
    assert parse_error_marker(during.error) == ErrorMarker(ErrorKind.UNAVAILABLE, "engine_restarting"), during

    recovered = None
    while recovered is None or recovered.error is not None:
        assert time.monotonic() - killed_at < 600, "the engine never came back"
        time.sleep(0.5)
        recovered = grpc_infer(grpc_url, "tiny_faults", request)
    recovery_seconds = time.monotonic() - killed_at
    print(
        f"\nin-flight request failed {fail_seconds:.2f} s after the kill; "
        f"serving again after {recovery_seconds:.1f} s"
    )
    assert recovered.text == reference
    assert metric_value(metrics, "embeds_engine_restarts_total", model="tiny_faults") == 1
    assert metric_value(metrics, "embeds_engine_ready", model="tiny_faults") == 1
    assert metric_value(metrics, "embeds_engine_recovery_seconds", model="tiny_faults") > 0
    new_stub, new_engines = model_processes(fault_server, "tiny_faults")
    assert new_stub.pid == stub.pid, "the model was reloaded instead of restarting its engine"
    assert [p.pid for p in new_engines] != [engines[0].pid] and len(new_engines) == 1
    assert psutil.Process(fault_server.process.pid).is_running()


def test_concurrency_limit_answers_at_once(fault_server):
    grpc_url = fault_server.grpc_url
    sampling = {"max_tokens": LIMITED_CONTEXT - 8, "ignore_eos": True, "temperature": 0}
    holders = [
        StreamCall(grpc_url, "tiny_limited", make_inputs(text="hi", stream=True, sampling=sampling))
        for _ in range(2)
    ]
    for holder in holders:
        holder.wait_first()
    excess = grpc_infer(grpc_url, "tiny_limited", make_inputs(text="hi", sampling=GREEDY), timeout_s=10)
    results = [holder.result() for holder in holders]
    for holder in holders:
        holder.close()
    assert excess.error is not None
    assert "limit of 2 concurrent requests" in excess.error, excess
    assert parse_error_marker(excess.error) == ErrorMarker(ErrorKind.UNAVAILABLE, "concurrency_limit")
    assert all(r.error is None and r.completion_tokens == LIMITED_CONTEXT - 8 for r in results)
    after = grpc_infer(grpc_url, "tiny_limited", make_inputs(text="hi", sampling=GREEDY))
    assert after.error is None and after.completion_tokens == GREEDY["max_tokens"]


def test_embeds_byte_limit_is_a_model_parameter(fault_server):
    payload = torch_b64(bf16_exact((20, HIDDEN)))  # ~10 KB of torch.save bytes
    result = grpc_infer(fault_server.grpc_url, "tiny_limited", make_inputs(embeds_b64=payload))
    assert result.error is not None
    assert f"above this model's limit of {LIMITED_BYTES} bytes (max_embeds_bytes)" in result.error


def test_sequence_limit_follows_max_model_len(fault_server):
    embeds = bf16_exact((LIMITED_CONTEXT - 4, HIDDEN)).numpy()
    result = grpc_infer(
        fault_server.grpc_url, "tiny_limited", make_inputs(embeds=embeds, sampling={"max_tokens": 8})
    )
    assert result.error is not None
    assert f"exceeds the model's context length of {LIMITED_CONTEXT}" in result.error
