"""Start, wait for and stop a replica: `python -m triton_embeds_replica`
running the bundled tritonserver, as a container would run it (tests of
readiness, drain and load balancing use it)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .launcher import (
    TritonEndpoints,
    free_port,
    installed_triton_home,
    kill_group,
    own_process_group,
    server_environment,
)


@dataclass
class ReplicaPorts:
    http: int = field(default_factory=free_port)
    grpc: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)


@dataclass
class ReplicaServer(TritonEndpoints):
    model_repository: Path
    log_path: Path
    ports: ReplicaPorts = field(default_factory=ReplicaPorts)
    drain_timeout_s: float = 30.0
    unload_timeout_s: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        home = installed_triton_home()
        return [
            sys.executable, "-m", "triton_embeds_replica",
            "--tritonserver", str(home / "bin" / "tritonserver"),
            "--http-port", str(self.ports.http), "--grpc-port", str(self.ports.grpc),
            "--metrics-port", str(self.ports.metrics), "--health-port", str(self.ports.health),
            "--health-host", "127.0.0.1",
            "--drain-timeout", str(self.drain_timeout_s), "--unload-timeout", str(self.unload_timeout_s),
            "--",
            f"--model-repository={self.model_repository}",
            f"--backend-directory={home / 'backends'}",
            "--model-load-thread-count=1",
        ]  # fmt: skip

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                env=server_environment(self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                **own_process_group(),
            )

    def health(self, path: str = "/ready") -> tuple[int, dict[str, Any]]:
        """Status code and JSON body of a health endpoint (0, {} when it does not answer)."""
        url = f"http://127.0.0.1:{self.ports.health}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except OSError:
            return 0, {}

    def wait_ready(self, timeout_s: float = 600.0) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the replica exited with {self.process.returncode}; see {self.log_path}")
            if self.health()[0] == 200:
                return time.monotonic() - began
            time.sleep(0.25)
        raise TimeoutError(f"replica not ready after {timeout_s:.0f} s; see {self.log_path}")

    def start_ready(self, timeout_s: float = 300.0, attempts: int = 2) -> float:
        """Start and wait until ready; seconds it took. A start that never
        gets ready is killed and tried again: on a loaded 2-core host,
        Triton 2.51 has waited forever for a stub whose model had finished
        initializing (seen beside another test's tritonserver)."""
        for attempt in range(1, attempts + 1):
            self.start()
            try:
                return self.wait_ready(timeout_s=timeout_s)
            except TimeoutError:
                self.kill()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL the supervisor and the tritonserver group under it."""
        if self.process is None:
            return
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        kill_group(self.process.pid)
        self.process.wait()

    def terminate(self, timeout_s: float = 120.0) -> tuple[int, float]:
        """SIGTERM, as Kubernetes stops a pod; the exit status and seconds it took."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout_s)
        return code, time.monotonic() - began

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate(timeout_s=90)
        kill_group(self.process.pid)
