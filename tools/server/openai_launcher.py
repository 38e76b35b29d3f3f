"""Start, wait for and stop the OpenAI-compatible HTTP server
(`python -m triton_embeds_server`) in front of a running tritonserver."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .launcher import free_port, kill_group, own_process_group


@dataclass
class OpenAIServer:
    triton_urls: tuple[str, ...]
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.port}/v1"

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def command(self) -> list[str]:
        urls = [arg for url in self.triton_urls for arg in ("--triton-url", url)]
        return [sys.executable, "-m", "triton_embeds_server", *urls, "--host", self.host,
                "--port", str(self.port), *self.extra_args]  # fmt: skip

    def start(self) -> None:
        with open(self.log_path, "ab") if self.log_path else contextlib.nullcontext() as out:
            self.process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT if out else None, **own_process_group()
            )

    def health(self) -> int | None:
        """/health's status, None while nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.process is not None and self.process.poll() is not None:
                hint = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(f"the OpenAI server exited with {self.process.returncode}{hint}")
            if self.health() == 200:
                return time.monotonic() - start
            time.sleep(0.2)
        raise TimeoutError(f"the OpenAI server not ready after {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: uvicorn finishes the requests in flight, then exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        kill_group(self.process.pid)

    def __enter__(self) -> OpenAIServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
