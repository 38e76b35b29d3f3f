"""Runs tritonserver as a child and stops it without losing a request.

On SIGTERM or SIGINT (Kubernetes sends SIGTERM on every rollout and scale-in):
  1. /ready turns 503 at once, so load balancers stop sending new requests;
  2. the model is told to drain (embeds_backend.drain): it refuses new
     requests with UNAVAILABLE `draining` and gives the ones it holds until
     the drain deadline, then ends them with UNAVAILABLE `shutdown`;
  3. once nothing is in flight, tritonserver gets SIGTERM and unloads the
     model (its engine stops) well inside Triton's exit timeout;
  4. anything that outlives that (processes, shared-memory regions) is
     removed and reported.
A second signal skips the wait for in-flight requests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from embeds_backend.drain import DRAIN_FILE_ENV, write_drain_order

from .health import HealthServer, ReplicaStatus
from .triton_state import NOT_RUNNING, TritonState, read_state

SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class ReplicaConfig:
    tritonserver: str
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    health_port: int = 8003
    health_host: str = "0.0.0.0"
    # In-flight requests get this long after SIGTERM before they are ended.
    drain_timeout_s: float = 30.0
    # Then tritonserver gets this long to unload models and exit (its own
    # --exit-timeout-secs); past it the process group is killed.
    unload_timeout_s: float = 30.0
    # Python-backend shared-memory regions are named by this prefix: two
    # tritonservers on one host (or one pod's restarted container, whose
    # /dev/shm survives) must not share one.
    shm_prefix: str = ""
    runtime_dir: Path = Path("/tmp")
    triton_args: list[str] = field(default_factory=list)
    poll_interval_s: float = 0.5

    @property
    def prefix(self) -> str:
        return self.shm_prefix or f"triton_embeds_{self.grpc_port}_"

    @property
    def drain_file(self) -> Path:
        return self.runtime_dir / f"{self.prefix}drain.json"

    def command(self) -> list[str]:
        """Our options first: the caller's arguments after `--` may override them."""
        return [
            self.tritonserver,
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            f"--exit-timeout-secs={int(self.unload_timeout_s)}",
            f"--backend-config=python,shm-region-prefix-name={self.prefix}",
            # Lets busy clients keep their HTTP/2 connections (Triton's
            # default ping policy closes them under load).
            "--grpc-http2-max-ping-strikes=0",
            *self.triton_args,
        ]


def log(message: str) -> None:
    print(f"[replica] {message}", file=sys.stderr, flush=True)


class Replica:
    def __init__(self, config: ReplicaConfig, env: dict[str, str] | None = None) -> None:
        self.config = config
        self._env = {**(env if env is not None else os.environ), DRAIN_FILE_ENV: str(config.drain_file)}
        self._process: subprocess.Popen[bytes] | None = None
        self._triton: TritonState = NOT_RUNNING
        self._draining = False
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._health = HealthServer(config.health_host, config.health_port, self.status)

    def status(self) -> ReplicaStatus:
        running = self._process is not None and self._process.poll() is None
        return ReplicaStatus(running, self._draining, self._triton)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.config.drain_file.unlink(missing_ok=True)
        self._remove_shared_memory("left by an earlier run")
        self._health.start()
        log(f"starting: {' '.join(self.config.command())}")
        # Its own process group, so a terminal's Ctrl-C reaches this
        # supervisor only, not the engine processes in the middle of a drain;
        # but the same session: on a CPU host, vLLM's spin-waiting engine in
        # a session of its own (Linux autogroup) starves its clients.
        self._process = subprocess.Popen(self.config.command(), env=self._env, preexec_fn=os.setpgrp)
        began = time.monotonic()
        announced = False
        while self._process.poll() is None and not self._stop.is_set():
            self._triton = read_state(self.config.http_port, self.config.metrics_port)
            if not announced and self.status().ready:
                announced = True
                log(f"ready in {time.monotonic() - began:.1f} s; health on :{self._health.port}/ready")
            self._stop.wait(self.config.poll_interval_s)
        code = self._shut_down() if self._process.poll() is None else self._exited_alone()
        self._health.stop()
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            self._hurry.set()  # a second signal: stop without waiting
        self._stop.set()

    def _exited_alone(self) -> int:
        assert self._process is not None
        code = self._process.returncode
        log(f"tritonserver exited on its own with {code}")
        self._clean_up()
        return code if code != 0 else 1  # a replica must not end while it should serve

    def _shut_down(self) -> int:
        assert self._process is not None
        began = time.monotonic()
        self._draining = True
        if self._triton.serving:
            self._drain()
        self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout=self.config.unload_timeout_s + 10)
        except subprocess.TimeoutExpired:
            log("tritonserver did not exit in time; killing it")
            self._kill_group()
            code = self._process.wait()
        log(f"tritonserver exited with {code}; stopped in {time.monotonic() - began:.1f} s")
        self._clean_up()
        return code

    def _drain(self) -> None:
        """Tell the model, then wait until it holds nothing (or its deadline,
        after which it has ended what was left)."""
        config = self.config
        write_drain_order(config.drain_file, config.drain_timeout_s)
        began = time.monotonic()
        deadline = began + config.drain_timeout_s + 5.0  # the model's own deadline, plus its last answers
        log(f"draining: {self._triton.inflight} requests in flight, up to {config.drain_timeout_s:.0f} s")
        while time.monotonic() < deadline and not self._hurry.is_set() and self._process_running():
            state = read_state(config.http_port, config.metrics_port)
            self._triton = state
            # The model's own gauge confirms it saw the order: a count read
            # before that could miss a request that had just arrived.
            if state.draining is not False and state.inflight == 0:
                break
            self._hurry.wait(0.1)
        log(f"drained in {time.monotonic() - began:.1f} s ({self._triton.inflight} left)")

    def _process_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _kill_group(self) -> None:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _clean_up(self) -> None:
        """Processes or shared memory that outlived tritonserver are leaks:
        removed here so a restart starts clean, and reported."""
        assert self._process is not None
        survivors = _group_members(self._process.pid)
        if survivors:
            log(f"processes outlived tritonserver (leaked): {', '.join(survivors)}; killing them")
            self._kill_group()
        self._remove_shared_memory("outlived tritonserver (leaked)")
        self.config.drain_file.unlink(missing_ok=True)

    def _remove_shared_memory(self, why: str) -> None:
        """Regions under this replica's prefix, when no tritonserver of it
        runs, are stale: a container restarted in its pod keeps /dev/shm, and
        a new stub that finds an old region's lock fails to start."""
        regions = sorted(SHM_DIR.glob(f"{self.config.prefix}*"))
        if regions:
            log(f"{len(regions)} shared-memory regions {why}; removing them")
        for region in regions:
            region.unlink(missing_ok=True)


def _group_members(pgid: int) -> list[str]:
    """`name[pid]` of each live process in a process group (from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ")".
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{name}[{stat.parent.name}]")
    return members
