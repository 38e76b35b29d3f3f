"""Starting and stopping what serves each system, one at a time so no two
engines share the host: tritonserver (through `tools.server.launcher` with a
generated model repository), `vllm serve`, and the in-process engine child.
All get the environment the launcher gives Triton."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import ensure_models
from ..paths import ROOT
from ..server.launcher import (
    Ports,
    TritonServer,
    free_port,
    kill_group,
    own_process_group,
    server_environment,
    start_ready_server,
)
from ..server.openai_launcher import OpenAIServer
from ..server.repository import tiny_engine_args, write_model
from .settings import SERVED_NAME

_READY_TIMEOUT_S = 900


@dataclass
class RunningServer:
    url: str  # host:port the clients talk to (gRPC for Triton)
    http_url: str  # host:port of its HTTP endpoint
    pid: int  # root of the process tree whose CPU is measured
    startup_s: float
    # host:port and pid of this project's OpenAI server beside tritonserver, if started
    openai_url: str | None = None
    openai_pid: int | None = None


@contextlib.contextmanager
def tiny_triton(
    engine_args: dict[str, Any] | None = None, lora_adapters: dict[str, Path] | None = None
) -> Iterator[TritonServer]:
    """tritonserver serving the tiny model as `tiny` from a temporary
    repository, for the small benchmarks (latency, features, overhead)."""
    ensure_models(smollm2=False)
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp) / "repo"
        repository.mkdir()
        write_model(repository, "tiny", engine_args or tiny_engine_args(), lora_adapters=lora_adapters)
        server = start_ready_server(repository, Path(tmp) / "server.log")
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def triton(engine_args: dict[str, Any], work_dir: Path, openai: bool = False) -> Iterator[RunningServer]:
    """tritonserver, and with `openai` this project's OpenAI server in front
    of it (its own process; the OpenAI paths count its CPU as the server's)."""
    repository = work_dir / "triton-repository"
    write_model(repository, SERVED_NAME, engine_args)
    ports = Ports.free()
    server = TritonServer(repository, ports=ports, log_path=work_dir / "logs" / "tritonserver.log")
    server.log_path.parent.mkdir(parents=True, exist_ok=True)
    front = (
        OpenAIServer((server.grpc_url,), log_path=work_dir / "logs" / "openai-server.log") if openai else None
    )
    server.start()
    try:
        startup = server.wait_ready(timeout_s=_READY_TIMEOUT_S)
        if front is not None:
            front.start()
            front.wait_ready()
        openai_url = f"127.0.0.1:{front.port}" if front else None
        openai_pid = front.process.pid if front and front.process else None
        yield RunningServer(
            server.grpc_url, server.http_url, server.process.pid, round(startup, 1), openai_url, openai_pid
        )
    finally:
        if front is not None:
            front.stop()
        server.stop()


def vllm_serve_command(engine_args: dict[str, Any], port: int) -> list[str]:
    """`vllm serve` with the engine args as flags. The console script is
    broken in the CPU build; the module entry point is the same server."""
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        SERVED_NAME,
        # Triton logs nothing per request either; an access log line per request costs CPU.
        "--disable-uvicorn-access-log",
    ]
    for key, value in engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not False and value is not None:
            command += [flag, str(value)]
    return command


@contextlib.contextmanager
def vllm_serve(engine_args: dict[str, Any], work_dir: Path) -> Iterator[RunningServer]:
    port = free_port()
    log_path = work_dir / "logs" / "vllm-serve.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            vllm_serve_command(engine_args, port),
            env=server_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            **own_process_group(),
        )
    try:
        startup = _wait_healthy(process, f"http://127.0.0.1:{port}/health", log_path)
        url = f"127.0.0.1:{port}"
        yield RunningServer(url, url, process.pid, round(startup, 1))
    finally:
        _stop(process)


def _wait_healthy(process: subprocess.Popen, url: str, log_path: Path) -> float:
    start = time.monotonic()
    while time.monotonic() - start < _READY_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"vllm serve not healthy after {_READY_TIMEOUT_S} s; see {log_path}")


def _stop(process: subprocess.Popen) -> None:
    """SIGINT lets the API server stop its engine core; the group is killed after a grace period."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    kill_group(process.pid)


def run_engine_child(spec: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """The in-process engine paths in a child process with the servers' environment."""
    spec_path, result_path = work_dir / "engine-spec.json", work_dir / "engine-result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    log_path = work_dir / "logs" / "engine.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = server_environment()
    command = [sys.executable, "-m", "tools.bench.engine_run", str(spec_path), str(result_path)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, **own_process_group()
        )
    try:
        code = process.wait()
    finally:
        kill_group(process.pid)  # engine-core children must not outlive it
    if code != 0 or not result_path.exists():
        raise RuntimeError(f"in-process engine run failed with {code}; see {log_path}")
    return json.loads(result_path.read_text())
