"""`python -m triton_embeds_server` (or `triton-embeds-openai`): serve the
OpenAI API in front of one or more tritonservers."""

from __future__ import annotations

import argparse
import os
import tempfile

import uvicorn

from .settings import DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT, SETTINGS_ENV, ServerSettings

APP_FACTORY = "triton_embeds_server.app:create_app"


def parse_args(argv: list[str] | None = None) -> ServerSettings:
    parser = argparse.ArgumentParser(
        prog="triton-embeds-openai",
        description="OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /v1/models) "
        "in front of Triton models that generate from text or prompt embeddings.",
    )
    parser.add_argument(
        "--triton-url",
        action="append",
        dest="triton_urls",
        metavar="HOST:PORT",
        help="a tritonserver's gRPC endpoint; repeat for several (requests go to them in turn). "
        "Default: localhost:8001",
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TRITON_EMBEDS_API_KEY"),
        help="require `Authorization: Bearer KEY` on /v1 routes (default: $TRITON_EMBEDS_API_KEY, else none)",
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"larger request bodies get 413 before they are read (default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=600.0, help="seconds a whole request may take (0: no bound)"
    )
    args = parser.parse_args(argv)
    return ServerSettings(
        triton_urls=tuple(args.triton_urls or ("localhost:8001",)),
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        workers=max(1, args.workers),
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout or None,
    )


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Set before any worker imports prometheus_client: they share metrics there.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="triton-embeds-openai-metrics-")
    os.environ[SETTINGS_ENV] = settings.to_env()
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="info",
        access_log=False,  # one line per request is a cost on every token stream
        timeout_graceful_shutdown=30,
    )
