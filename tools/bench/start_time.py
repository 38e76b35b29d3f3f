"""Seconds from start to ready, cold (empty compile caches) and warm (the
caches of the cold start), for a replica (`python -m triton_embeds_replica`:
tritonserver, model and engine, to /ready) and for `vllm serve` (to /health)
with the same engine arguments, one server at a time; and the replica's
SIGTERM stop time when idle.

    .venv/bin/python -m tools.bench.start_time                 # tiny and SmolLM2
    .venv/bin/python -m tools.bench.start_time --models tiny

`vllm serve` runs twice per phase for SmolLM2: as its users run it, and with
VLLM_USE_AOT_COMPILE=0, the setting the model applies on CPU hosts (see
embeds_backend/engine.py), so both sides compile the same way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..models import ensure_models
from ..paths import SMOLLM2_DIR
from ..server.launcher import free_port, own_process_group, server_environment
from ..server.replica_launcher import ReplicaServer
from ..server.repository import tiny_engine_args, write_model
from .servers import _stop, _wait_healthy, vllm_serve_command

MODELS: dict[str, Callable[[], dict[str, Any]]] = {
    "tiny": tiny_engine_args,
    "smollm2": lambda: {
        "model": str(SMOLLM2_DIR),
        "enable_prompt_embeds": True,
        "dtype": "float32",
        "max_model_len": 2048,
        "max_num_seqs": 64,
    },
}


def cache_env(cache: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        **(extra or {}),
    }


def replica_start(engine_args: dict[str, Any], work: Path, cache: Path) -> dict[str, float]:
    repository = work / "repository"
    write_model(repository, "model", engine_args)
    replica = ReplicaServer(repository, work / f"replica-{time.monotonic_ns()}.log", env=cache_env(cache))
    replica.start()
    try:
        ready = replica.wait_ready(timeout_s=1200)
        code, stop = replica.terminate(timeout_s=180)
    finally:
        replica.stop()
    return {"ready_s": round(ready, 1), "stop_s": round(stop, 1), "exit_code": code}


def vllm_serve_start(
    engine_args: dict[str, Any], work: Path, cache: Path, extra: dict[str, str]
) -> dict[str, float]:
    port = free_port()
    log_path = work / f"vllm-serve-{time.monotonic_ns()}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            vllm_serve_command(engine_args, port),
            env=server_environment(cache_env(cache, extra)),
            stdout=log,
            stderr=subprocess.STDOUT,
            **own_process_group(),
        )
    try:
        ready = _wait_healthy(process, f"http://127.0.0.1:{port}/health", log_path)
    finally:
        _stop(process)
    return {"ready_s": round(ready, 1)}


def measure(model: str, work: Path) -> list[dict[str, Any]]:
    engine_args = MODELS[model]()
    systems: list[tuple[str, Callable[[Path], dict[str, float]]]] = [
        ("replica", lambda cache: replica_start(engine_args, work, cache)),
        ("vllm serve", lambda cache: vllm_serve_start(engine_args, work, cache, {})),
    ]
    if not engine_args.get("enforce_eager"):
        systems.append(
            (
                "vllm serve, AOT compile off",
                lambda cache: vllm_serve_start(engine_args, work, cache, {"VLLM_USE_AOT_COMPILE": "0"}),
            )
        )
    rows = []
    for system, start in systems:
        cache = work / f"cache-{len(rows)}"
        for phase in ("cold", "warm"):
            result = start(cache)
            rows.append({"model": model, "system": system, "phase": phase, **result})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.start_time", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "smollm2"])
    args = parser.parse_args()
    ensure_models(smollm2="smollm2" in args.models)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for model in args.models for row in measure(model, Path(tmp) / model)]
    print("\n| model | system | phase | ready (s) | idle SIGTERM stop (s) |\n|---|---|---|---:|---:|")
    for row in rows:
        cells = (row["model"], row["system"], row["phase"], row["ready_s"], row.get("stop_s", ""))
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


if __name__ == "__main__":
    main()
