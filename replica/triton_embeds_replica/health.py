"""The replica's probe endpoints, for Kubernetes and load balancers.

GET /ready: 200 only while tritonserver, every model and its vLLM engine can
serve and the replica is not draining; 503 otherwise (while an engine is being
rebuilt too, so traffic moves to other replicas). GET /live: 200 while
tritonserver runs, a rebuilding engine included (restarting the container
would only make that recovery slower); 503 once it is gone. Bodies are JSON
saying why.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .triton_state import TritonState


@dataclass(frozen=True)
class ReplicaStatus:
    running: bool  # the tritonserver process exists
    draining: bool
    triton: TritonState

    @property
    def ready(self) -> bool:
        return self.running and not self.draining and self.triton.serving

    @property
    def live(self) -> bool:
        return self.running

    def reason(self) -> str:
        if not self.running:
            return "tritonserver is not running"
        if self.draining:
            return "draining: the replica is stopping"
        if not self.triton.live:
            return "tritonserver is starting"
        if not self.triton.ready:
            return "tritonserver or a model is not ready"
        if self.triton.engine_ready is False:
            return "a vLLM engine is starting or being rebuilt"
        return "serving"

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "ready": self.ready,
                "live": self.live,
                "reason": self.reason(),
                "draining": self.draining,
                "engine_ready": self.triton.engine_ready,
                "inflight": self.triton.inflight,
            }
        ).encode()


class HealthServer:
    """Serves the latest status in a daemon thread; never blocks on Triton
    (the supervisor refreshes the status on its own schedule)."""

    def __init__(self, host: str, port: int, status: Callable[[], ReplicaStatus]) -> None:
        handler = _handler_class(status)
        self._server = _ProbeServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _ProbeServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A prober that hangs up once it has the status line (load balancers
        do) is not an error worth a traceback in the replica's log."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def _handler_class(status: Callable[[], ReplicaStatus]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            current = status()
            checks = {"/ready": current.ready, "/live": current.live}
            if self.path not in checks:
                self._send(404, b'{"error": "not found: use /ready or /live"}')
                return
            self._send(200 if checks[self.path] else 503, current.as_json())

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every second would drown the server's log

    return Handler
