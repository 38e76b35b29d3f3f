"""Start, wait for and stop a real `tritonserver` with the environment the
bundled python backend needs. Used by `tools.server.serve`, the tests and
the benchmarks.

The stub interpreter of Triton 2.51 is found through PATH (`python3`), links
libpython from LD_LIBRARY_PATH and ignores PYTHONPATH, so all three are set
here rather than left to the user's shell.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..paths import CACHE, VENV
from .install import install_stub, triton_home


@dataclass
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls) -> Ports:
        """Three ports nothing listens on now, for servers beside others."""
        ports: list[int] = []
        while len(ports) < 3:
            if (port := free_port()) not in ports:
                ports.append(port)
        return cls(*ports)


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range.

    A server binds its ports only after its models load (tens of seconds).
    A port the kernel handed out (bind to 0) lies in the ephemeral range, from
    which every outgoing connection and vLLM's own sockets draw meanwhile; one
    test run lost its server to "Socket ... already in use" that way. Below the
    range, only another listener choosing the same way can collide."""
    low, high = _ephemeral_range()
    for _ in range(1000):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below the ephemeral range {low}-{high}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def installed_triton_home() -> Path:
    """The wheel's tritonserver, with the stub for this interpreter in place."""
    home = triton_home()
    install_stub(home)
    return home


def server_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and the python-backend stubs it spawns."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = f"{libdir}:{env.get('LD_LIBRARY_PATH', '')}"
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_CACHE_ROOT", str(CACHE / "vllm"))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(CACHE / "inductor"))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    env.pop("VLLM_CPU_OMP_THREADS_BIND", None)
    env.update(extra or {})
    return env


# tritonserver options this project always passes (extra_args come after and
# win). With gRPC's default ping policy (a peer's second "bad" ping closes
# the connection), 256-stream load runs lost whole HTTP/2 connections, and
# every stream on them ("Stream removed", "Connection reset by peer"), in
# three runs out of three; with strikes disabled, two runs lost nothing.
# Keepalive is unchanged; README "Security and reliability" has the trade-off.
SERVER_DEFAULT_ARGS = ("--grpc-http2-max-ping-strikes=0",)


def own_process_group() -> dict[str, object]:
    """Popen options for a server that can be killed as one process group
    but stays in the caller's session.

    Linux autogroup scheduling (on by default in most distributions) gives
    each session one share of the CPU. vLLM's CPU engine spin-waits between
    its engine-core and worker processes, and a server started in a session
    of its own (setsid) then starved processes in the caller's session: on a
    2-core host, clients waited on the run queue for a whole generation, so
    streamed first tokens arrived ~2 s late. Staying in the caller's session
    puts server and clients under one share, as when a user starts both
    from one shell.
    """
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}


class _PortSet(Protocol):
    http: int
    grpc: int
    metrics: int


class TritonEndpoints:
    """host:port of a tritonserver's HTTP, gRPC and metrics endpoints, for
    the launchers that hold its `ports`."""

    ports: _PortSet

    @property
    def http_url(self) -> str:
        return f"localhost:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"localhost:{self.ports.metrics}"


@dataclass
class TritonServer(TritonEndpoints):
    """A tritonserver child process in its own process group."""

    model_repository: Path
    ports: Ports = field(default_factory=Ports)
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        home = installed_triton_home()
        return [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={home / 'backends'}",
            f"--http-port={self.ports.http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true",
            *SERVER_DEFAULT_ARGS,
            *self.extra_args,
        ]

    def start(self) -> None:
        # The child gets its own copy of the log's descriptor; ours closes here.
        with open(self.log_path, "ab") if self.log_path else contextlib.nullcontext() as out:
            self.process = subprocess.Popen(
                self.command(),
                env=server_environment(self.env),
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                **own_process_group(),  # stub and engine processes die with it
            )

    def is_ready(self) -> bool:
        try:
            url = f"http://{self.http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout_s: float = 600.0) -> float:
        """Block until the server and all its models are ready; return seconds."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}{self._log_hint()}")
            if self.is_ready():
                return time.monotonic() - start
            time.sleep(0.5)
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s{self._log_hint()}")

    def _log_hint(self) -> str:
        return f"; see {self.log_path}" if self.log_path else ""

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGINT lets Triton unload models (finalize stops the engines); the
        group is killed if anything outlives the grace period."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        kill_group(self.process.pid)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_ready_server(repository: Path, log: Path, timeout_s: float = 900) -> TritonServer:
    """A server on free ports, ready to serve; its log's tail is printed if it
    never gets there."""
    server = TritonServer(
        repository,
        ports=Ports.free(),
        log_path=log,
        # One model at a time: with engines starting together on a loaded
        # 2-core host, Triton has given up on a stub mid-initialize and then
        # waited forever for it to exit.
        extra_args=["--model-load-thread-count=1"],
    )
    server.start()
    try:
        server.wait_ready(timeout_s=timeout_s)
    except BaseException:
        server.stop()
        print(log.read_text()[-5000:])
        raise
    return server


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
