"""The server's settings, from the command line (or, for worker processes,
the environment the command line wrote)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

# Worker processes started by uvicorn read their settings from here.
SETTINGS_ENV = "TRITON_EMBEDS_OPENAI_SETTINGS"
DEFAULT_PORT = 9000
# 64 MiB: a batch of several 10 MiB embeddings in base64, with room to spare.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    # Triton gRPC endpoints (host:port); requests go to them in turn.
    triton_urls: tuple[str, ...] = ("localhost:8001",)
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    # Bearer token the /v1 routes require; None: no authentication.
    api_key: str | None = None
    workers: int = 1
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Whole-request bound, seconds (None: no bound).
    request_timeout_s: float | None = 600.0
    # Where worker processes share their Prometheus metrics (workers > 1).
    metrics_dir: str | None = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServerSettings:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            return cls()
        values = json.loads(raw)
        values["triton_urls"] = tuple(values["triton_urls"])
        return cls(**values)
