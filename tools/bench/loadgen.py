"""Client processes that drive one server path.

Each process has its own event loop and connections, a share of the
concurrency and of the requests, and encodes its payloads and warms its
connections before a barrier; the timed window opens for all of them at once.
Timestamps use time.monotonic(), one clock for every process on the host.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .closed_loop import run_closed_loop
from .cpu import cpu_delta
from .paths import PathSpec
from .settings import Workload
from .stats import CpuUse, RequestRecord
from .transports import OpenAICompletions, TritonGrpc, TritonHttp
from .workload import encode_prompt

_SETUP_TIMEOUT_S = 900  # encoding 256 large tensors plus warm-up on a busy host
_RUN_TIMEOUT_S = 3600


@dataclass
class ClientTask:
    """One client process's share of a path's work."""

    path: PathSpec
    url: str
    model: str
    workload: Workload
    hidden: int
    indices: list[int]
    warmup_indices: list[int]
    concurrency: int
    texts: dict[int, str] = field(default_factory=dict)


@dataclass
class ClientResult:
    records: list[RequestRecord]
    cpu_s: float
    error: str | None = None


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as integers allow."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def plan_tasks(
    path: PathSpec,
    url: str,
    model: str,
    workload: Workload,
    hidden: int,
    processes: int,
    texts: dict[int, str],
) -> list[ClientTask]:
    """Concurrency and requests are both spread evenly over the processes, so
    every slot has about the same number of requests to send. Warm-up
    requests (one per slot) use indices past the measured ones."""
    processes = max(1, min(processes, workload.concurrency))
    shares = split(workload.concurrency, processes)
    counts = split(workload.requests, processes)
    tasks, first, warm_first = [], 0, workload.requests
    for share, count in zip(shares, counts, strict=True):
        indices = list(range(first, first + count))
        warmup = list(range(warm_first, warm_first + share))
        task_texts = {i: texts[i] for i in indices + warmup} if path.prompt == "text" else {}
        tasks.append(ClientTask(path, url, model, workload, hidden, indices, warmup, share, task_texts))
        first, warm_first = first + count, warm_first + share
    return tasks


def run_clients(
    tasks: list[ClientTask], server_cpu: Callable[[], dict[str, float]]
) -> tuple[list[RequestRecord], CpuUse]:
    """Start the client processes, open the window together, collect records."""
    context = mp.get_context("spawn")  # fresh interpreters: no inherited loops or channels
    barrier = context.Barrier(len(tasks) + 1)
    results: Any = context.Queue()
    processes = [context.Process(target=client_main, args=(task, barrier, results)) for task in tasks]
    for process in processes:
        process.start()
    try:
        _wait_for_clients(barrier, results)
        server_before = server_cpu()
        collected = [_next_result(results, processes) for _ in tasks]
        server_by_process = cpu_delta(server_before, server_cpu())
    finally:
        _reap(processes)
    return _merge(collected, server_by_process)


def _wait_for_clients(barrier: Any, results: Any) -> None:
    """Wait until every client has encoded its payloads and warmed up. A
    client that fails first breaks the barrier and queues its traceback:
    raise with that traceback rather than the barrier's empty error."""
    try:
        barrier.wait(timeout=_SETUP_TIMEOUT_S)
    except threading.BrokenBarrierError:
        try:
            failed = results.get(timeout=10)
        except queue.Empty:
            raise RuntimeError(
                f"the clients were not all ready within {_SETUP_TIMEOUT_S} s, and none reported an error"
            ) from None
        raise RuntimeError(f"client process failed before the timed window:\n{failed.error}") from None


def _next_result(results: Any, processes: list[Any]) -> ClientResult:
    deadline = time.monotonic() + _RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            result = results.get(timeout=1)
        except queue.Empty:
            if not any(p.is_alive() for p in processes):
                raise RuntimeError("client processes exited without reporting") from None
            continue
        if result.error:
            raise RuntimeError(f"client process failed:\n{result.error}")
        return result
    raise TimeoutError("client processes did not finish in time")


def _reap(processes: list[Any]) -> None:
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


def _merge(
    collected: list[ClientResult], server_by_process: dict[str, float]
) -> tuple[list[RequestRecord], CpuUse]:
    records = [record for result in collected for record in result.records]
    cpu = CpuUse(
        client_s=sum(r.cpu_s for r in collected),
        server_by_process=server_by_process,
        client_processes=len(collected),
        max_client_process_s=max(r.cpu_s for r in collected),
    )
    return records, cpu


def client_main(task: ClientTask, barrier: Any, results: Any) -> None:
    try:
        results.put(asyncio.run(_client(task, barrier)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the path
        barrier.abort()
        results.put(ClientResult([], 0.0, traceback.format_exc()))


async def _client(task: ClientTask, barrier: Any) -> ClientResult:
    transport = make_transport(task)
    await transport.open()
    try:
        warmup = [transport.prepare(_prompt(task, i)) for i in task.warmup_indices]
        payloads = [transport.prepare(_prompt(task, i)) for i in task.indices]
        warm = await run_closed_loop(transport.send, warmup, task.concurrency)
        failed = [r.error for r in warm if r.error]
        if failed:
            raise RuntimeError(f"warm-up request failed: {failed[0]}")
        barrier.wait(timeout=_SETUP_TIMEOUT_S)
        cpu_before = time.process_time()  # every thread of this process, gRPC's included
        records = await run_closed_loop(transport.send, payloads, task.concurrency)
        return ClientResult(records, time.process_time() - cpu_before)
    finally:
        await transport.close()


def _prompt(task: ClientTask, index: int) -> Any:
    w = task.workload
    return encode_prompt(task.path.prompt, index, w.seq_len, task.hidden, w.seed, task.texts)


def make_transport(task: ClientTask) -> Any:
    w, kind = task.workload, task.path.prompt
    if task.path.transport == "grpc":
        return TritonGrpc(task.url, task.model, kind, w.seq_len, task.hidden, w.sampling(), w.stream)
    if task.path.transport == "http":
        return TritonHttp(task.url, task.model, kind, w.sampling(), w.stream, task.concurrency)
    if task.path.transport in ("openai", "openai-server"):
        return OpenAICompletions(task.url, task.model, kind, w.sampling(), w.stream, task.concurrency)
    raise ValueError(f"no client for transport {task.path.transport!r}")
