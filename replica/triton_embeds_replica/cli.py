"""python -m triton_embeds_replica [options] -- [tritonserver options]

Runs tritonserver with health endpoints for an orchestrator (/ready, /live on
--health-port) and a drain on SIGTERM. Exits with tritonserver's status."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from .supervisor import Replica, ReplicaConfig


def parse_args(argv: list[str] | None = None) -> ReplicaConfig:
    parser = argparse.ArgumentParser(
        prog="python -m triton_embeds_replica",
        description=(__doc__ or "").splitlines()[2],
        epilog="Arguments after -- go to tritonserver (--model-repository=DIR at least).",
    )
    parser.add_argument("--tritonserver", default=shutil.which("tritonserver") or "tritonserver")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--health-port", type=int, default=8003, help="serves /ready and /live")
    parser.add_argument("--health-host", default="0.0.0.0")
    parser.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds in-flight requests get after SIGTERM"
    )
    parser.add_argument(
        "--unload-timeout", type=float, default=30.0, help="seconds tritonserver then gets to exit"
    )
    parser.add_argument(
        "--shm-prefix", default="", help="python-backend shared-memory prefix (default: from the gRPC port)"
    )
    parser.add_argument("--runtime-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("triton_args", nargs="*", help="tritonserver options, after --")
    args = parser.parse_args(argv)
    return ReplicaConfig(
        tritonserver=args.tritonserver,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        health_host=args.health_host,
        drain_timeout_s=args.drain_timeout,
        unload_timeout_s=args.unload_timeout,
        shm_prefix=args.shm_prefix,
        runtime_dir=args.runtime_dir,
        triton_args=list(args.triton_args),
    )


def main(argv: list[str] | None = None) -> None:
    sys.exit(Replica(parse_args(argv)).run())
