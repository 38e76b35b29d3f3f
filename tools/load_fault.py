"""Load-and-fault run: many concurrent streams mixing text, raw embeds and
base64 embeds, with a share cancelled mid-stream, a share invalid and a share
of clients killed abruptly. Prints what every request got and what the
server was left with, and exits non-zero when anything was lost or leaked.

    .venv/bin/python -m tools.load_fault                    # own server, tiny model, 256 streams
    .venv/bin/python -m tools.load_fault --grpc-url localhost:8001 --metrics-url localhost:8002 \\
        --model vllm_model --hidden 576

Every request is accounted for twice: by the client (tokens received, the
error it got) and by the server's `embeds_requests_finished_total{outcome}`
counter, which counts final responses sent (a cancelled or killed client
cannot see its final flag; the server's count shows it was sent). A cancel
that reaches the server after the stream's last token has nothing left to
abort; the report shows how many cancellations did abort generation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

from triton_embeds import AsyncClient, BadRequestError

from .metrics import metric_value, sample_sum, scrape
from .server.launcher import TritonServer, start_ready_server
from .server.repository import TINY_HIDDEN, tiny_engine_args, write_model

KINDS = ("text", "embeds_tensor", "embeds_base64")
FATES = ("complete", "cancel", "invalid")
# Streams per HTTP/2 connection: a pool of clients, as a real fleet would have.
STREAMS_PER_CONNECTION = 32
# Settle times: how long the server gets to account for cancelled streams.
SETTLE_TIMEOUT_S = 60.0
THREAD_TOLERANCE = 2
LONG_CONTEXT = 4096
FD_TOLERANCE = 8


@dataclass(frozen=True)
class LoadPlan:
    streams: int = 256
    cancel_share: float = 0.15
    invalid_share: float = 0.10
    kill_share: float = 0.10
    max_tokens: int = 32
    # Streams that get cancelled or killed ask for this many tokens, so they
    # are surely still generating when their client goes (the tiny model
    # makes hundreds of tokens a second).
    long_tokens: int = 3500
    kill_processes: int = 4
    seed: int = 0


@dataclass
class Tally:
    """What the clients saw."""

    sent: Counter = field(default_factory=Counter)
    completed_ok: int = 0
    wrong_token_count: int = 0
    cancelled: int = 0
    rejected_ok: int = 0
    unexpected: list[str] = field(default_factory=list)
    peak_open_streams: int = 0
    open_streams: int = 0


# -- requests ----------------------------------------------------------------------
def request_args(kind: str, hidden: int, rng: np.random.Generator, fate: str, plan: LoadPlan) -> dict:
    tokens = plan.long_tokens if fate == "cancel" else plan.max_tokens
    args: dict = {"max_tokens": tokens, "temperature": 0, "extra_body": {"ignore_eos": True}}
    if kind == "text":
        args["prompt"] = "a load test prompt number " + str(int(rng.integers(1_000_000)))
    else:
        rows = int(rng.integers(4, 24))
        args["prompt_embeds"] = rng.standard_normal((rows, hidden), dtype=np.float32)
        args["transport"] = "base64" if kind == "embeds_base64" else "binary"
    if fate == "invalid":
        spoil(args, kind, hidden, rng)
    return args


def spoil(args: dict, kind: str, hidden: int, rng: np.random.Generator) -> None:
    """Make a request the server must reject (each kind its own way)."""
    if kind == "text":
        args["extra_body"] = {"ignore_eos": True, "max_tokenz": 3}
    elif kind == "embeds_tensor":
        args["prompt_embeds"][0, 0] = np.nan
    else:
        args["prompt_embeds"] = rng.standard_normal((4, hidden + 1), dtype=np.float32)


class ClientPool:
    """A few clients per embeds transport (the transport is a client
    setting), so streams spread over several HTTP/2 connections."""

    def __init__(self, grpc_url: str, per_transport: int) -> None:
        self._clients = {
            t: [AsyncClient(grpc_url, transport=t) for _ in range(per_transport)]
            for t in ("binary", "base64")
        }
        self._next = 0

    def pick(self, transport: str | None) -> AsyncClient:
        self._next += 1
        clients = self._clients[transport or "binary"]
        return clients[self._next % len(clients)]

    async def close(self) -> None:
        for clients in self._clients.values():
            for client in clients:
                await client.close()


async def run_one(pool: ClientPool, model: str, fate: str, args: dict, plan: LoadPlan, tally: Tally) -> None:
    client = pool.pick(args.pop("transport", None))
    tally.open_streams += 1
    tally.peak_open_streams = max(tally.peak_open_streams, tally.open_streams)
    try:
        stream = await client.completions.create(
            model=model, stream=True, stream_options={"include_usage": True}, **args
        )
        if fate == "cancel":
            await cancel_after_first_chunk(stream, tally)
        else:
            await consume(stream, fate, plan, tally)
    except BadRequestError:
        if fate == "invalid":
            tally.rejected_ok += 1
        else:
            tally.unexpected.append(f"{fate}: rejected")
    except Exception as exc:  # noqa: BLE001 - every surprise is counted and shown
        tally.unexpected.append(f"{fate}: {type(exc).__name__}: {exc}")
    finally:
        tally.open_streams -= 1


async def cancel_after_first_chunk(stream, tally: Tally) -> None:
    async for _chunk in stream:
        break
    await stream.close()
    tally.cancelled += 1


async def consume(stream, fate: str, plan: LoadPlan, tally: Tally) -> None:
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
    if fate == "invalid":
        tally.unexpected.append("invalid: served")
    elif usage is not None and usage.completion_tokens == plan.max_tokens:
        tally.completed_ok += 1
    else:
        tally.wrong_token_count += 1


# -- killed clients ------------------------------------------------------------------
def start_doomed_clients(grpc_url: str, model: str, hidden: int, count: int, plan: LoadPlan) -> list:
    """Child processes that open long streams and report once each has
    produced a token; they are then SIGKILLed (no goodbye on the socket)."""
    if count == 0:
        return []
    per_process = [
        count // plan.kill_processes + (i < count % plan.kill_processes) for i in range(plan.kill_processes)
    ]
    children = []
    for index, streams in enumerate(n for n in per_process if n):
        command = [
            sys.executable,
            "-m",
            "tools.load_fault",
            "--doomed-child",
            "--grpc-url",
            grpc_url,
            "--model",
            model,
            "--hidden",
            str(hidden),
            "--streams",
            str(streams),
            "--seed",
            str(plan.seed + index),
            "--long-tokens",
            str(plan.long_tokens),
        ]
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    return children


def kill_when_streaming(children: list) -> int:
    killed = 0
    for child in children:
        line = child.stdout.readline()  # "STREAMING <n>" once every stream has a token
        if not line.startswith("STREAMING"):
            raise RuntimeError(f"a doomed client did not start streaming: {line!r}")
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed += int(line.split()[1])
    return killed


async def doomed_child(
    grpc_url: str, model: str, hidden: int, streams: int, seed: int, long_tokens: int
) -> None:
    rng = np.random.default_rng(seed)
    pool = ClientPool(grpc_url, per_transport=1)
    plan = LoadPlan(long_tokens=long_tokens)
    opened = []
    for index in range(streams):
        args = request_args(KINDS[index % len(KINDS)], hidden, rng, "cancel", plan)
        client = pool.pick(args.pop("transport", None))
        stream = await client.completions.create(model=model, stream=True, **args)
        await stream.__anext__()
        opened.append(stream)
    # Keep reading, as a live client does: a client that stops reading leaves
    # the server buffering its stream, which is a different fault.
    drains = [asyncio.create_task(drain(stream)) for stream in opened]
    print(f"STREAMING {len(opened)}", flush=True)
    await asyncio.gather(*drains)
    await asyncio.sleep(3600)


async def drain(stream) -> None:
    async for _chunk in stream:
        pass


# -- server state ------------------------------------------------------------------
OUTCOMES = ("completed", "cancelled", "rejected", "unavailable", "failed")


def outcomes(metrics_url: str, model: str) -> dict[str, float]:
    text = scrape(metrics_url)
    return {o: sample_sum(text, "embeds_requests_finished_total", model=model, outcome=o) for o in OUTCOMES}


def resources(server_pid: int) -> dict[str, int]:
    """Threads and open files of tritonserver and its model processes, and
    shared-memory regions on the host."""
    root = psutil.Process(server_pid)
    processes = [root, *root.children(recursive=True)]
    return {
        "threads": sum(p.num_threads() for p in processes),
        "fds": sum(p.num_fds() for p in processes),
        "shm_regions": len(os.listdir("/dev/shm")),
        "processes": len(processes),
    }


async def wait_settled(
    metrics_url: str, model: str, before: dict[str, float], expected: int
) -> dict[str, float]:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        now = outcomes(metrics_url, model)
        delta = {k: now[k] - before[k] for k in now}
        unfinished = metric_value(metrics_url, "embeds_engine_unfinished_requests", model=model)
        if (sum(delta.values()) >= expected and unfinished == 0) or time.monotonic() > deadline:
            return delta
        await asyncio.sleep(0.25)


# -- the run -------------------------------------------------------------------------
def assign_fates(plan: LoadPlan) -> tuple[list[tuple[str, str]], int]:
    """(kind, fate) for the streams this process runs, and how many streams
    the killed clients hold."""
    rng = random.Random(plan.seed)
    killed = round(plan.streams * plan.kill_share)
    cancelled = round(plan.streams * plan.cancel_share)
    invalid = round(plan.streams * plan.invalid_share)
    fates = ["cancel"] * cancelled + ["invalid"] * invalid
    fates += ["complete"] * (plan.streams - killed - len(fates))
    rng.shuffle(fates)
    return [(KINDS[i % len(KINDS)], fate) for i, fate in enumerate(fates)], killed


async def run_wave(grpc_url: str, model: str, hidden: int, plan: LoadPlan, tally: Tally) -> int:
    rng = np.random.default_rng(plan.seed)
    assignments, killed_target = assign_fates(plan)
    children = start_doomed_clients(grpc_url, model, hidden, killed_target, plan)
    pool = ClientPool(grpc_url, per_transport=max(1, len(assignments) // STREAMS_PER_CONNECTION))
    jobs = []
    for kind, fate in assignments:
        tally.sent[fate] += 1
        args = request_args(kind, hidden, rng, fate, plan)
        jobs.append(run_one(pool, model, fate, args, plan, tally))
    killer = asyncio.get_running_loop().run_in_executor(None, kill_when_streaming, children)
    await asyncio.gather(*jobs)
    killed = await killer
    await pool.close()
    tally.sent["killed"] += killed
    return killed


async def run_load_fault(
    grpc_url: str, metrics_url: str, server_pid: int, model: str, hidden: int, plan: LoadPlan
) -> dict:
    warmup = LoadPlan(
        streams=24, max_tokens=4, long_tokens=plan.long_tokens, kill_processes=1, seed=plan.seed + 99
    )
    warm_tally, warm_before = Tally(), outcomes(metrics_url, model)
    warm_killed = await run_wave(grpc_url, model, hidden, warmup, warm_tally)
    await wait_settled(metrics_url, model, warm_before, sum(warm_tally.sent.values()))
    before_outcomes, before_resources = outcomes(metrics_url, model), resources(server_pid)
    tally = Tally()
    began = time.monotonic()
    killed = await run_wave(grpc_url, model, hidden, plan, tally)
    seconds = time.monotonic() - began
    expected = sum(tally.sent.values())
    server = await wait_settled(metrics_url, model, before_outcomes, expected)
    after_resources = resources(server_pid)
    return report(
        plan,
        tally,
        killed,
        server,
        before_resources,
        after_resources,
        seconds,
        metric_value(metrics_url, "embeds_engine_unfinished_requests", model=model),
        warm_tally.unexpected + ([] if warm_killed else ["warm-up killed nothing"]),
    )


def report(
    plan: LoadPlan,
    tally: Tally,
    killed: int,
    server: dict[str, float],
    before: dict,
    after: dict,
    seconds: float,
    unfinished: float,
    warm_problems: list[str],
) -> dict:
    lost = (
        (tally.sent["complete"] - tally.completed_ok)
        + (tally.sent["cancel"] - tally.cancelled)
        + (tally.sent["invalid"] - tally.rejected_ok)
    )
    problems = list(warm_problems) + tally.unexpected
    ended_early = tally.sent["cancel"] + killed
    checks = {
        "one final response per request": sum(server.values()) == sum(tally.sent.values()),
        # A cancel that reaches the server after the last token finds nothing
        # to abort: such a stream is counted as completed, never lost.
        "cancelled/killed streams each ended once": server["completed"] + server["cancelled"]
        == tally.sent["complete"] + ended_early
        and server["completed"] >= tally.sent["complete"],
        "some cancellations aborted generation": server["cancelled"] > 0 or ended_early == 0,
        "server rejected == invalid": server["rejected"] == tally.sent["invalid"],
        "no unavailable or failed": server["unavailable"] == 0 and server["failed"] == 0,
        "zero unfinished engine requests": unfinished == 0,
        "no requests lost": lost == 0 and not problems,
        f"threads within +{THREAD_TOLERANCE}": after["threads"] - before["threads"] <= THREAD_TOLERANCE,
        f"fds within +{FD_TOLERANCE}": after["fds"] - before["fds"] <= FD_TOLERANCE,
        "shared-memory regions unchanged": after["shm_regions"] == before["shm_regions"],
        "same number of server processes": after["processes"] == before["processes"],
    }
    return {
        "plan": asdict(plan),
        "seconds": round(seconds, 1),
        "sent": dict(tally.sent),
        "client": {
            "completed_with_right_tokens": tally.completed_ok,
            "wrong_token_count": tally.wrong_token_count,
            "cancelled": tally.cancelled,
            "rejected": tally.rejected_ok,
            "killed": killed,
            "peak_open_streams": tally.peak_open_streams + killed,
        },
        "server_final_responses": server,
        "resources_before": before,
        "resources_after": after,
        "unfinished_engine_requests": unfinished,
        "lost": lost,
        "problems": problems[:20],
        "checks": checks,
        "ok": all(checks.values()),
    }


def print_report(result: dict) -> None:
    print(json.dumps({k: v for k, v in result.items() if k != "checks"}, indent=2))
    for name, ok in result["checks"].items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    print("PASS" if result["ok"] else "FAIL")


# -- entry point ---------------------------------------------------------------------
def own_server() -> tuple[TritonServer, int]:
    repository = Path(tempfile.mkdtemp(prefix="load-fault-"))
    write_model(repository, "tiny", tiny_engine_args(context=LONG_CONTEXT))
    return start_ready_server(repository, repository / "tritonserver.log"), TINY_HIDDEN


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.load_fault",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--grpc-url", help="a running server (default: start one with the tiny model)")
    parser.add_argument("--metrics-url")
    parser.add_argument("--server-pid", type=int, help="tritonserver's pid, for the leak checks")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--hidden", type=int, default=TINY_HIDDEN)
    parser.add_argument("--streams", type=int, default=LoadPlan.streams)
    parser.add_argument("--cancel-share", type=float, default=LoadPlan.cancel_share)
    parser.add_argument("--invalid-share", type=float, default=LoadPlan.invalid_share)
    parser.add_argument("--kill-share", type=float, default=LoadPlan.kill_share)
    parser.add_argument("--max-tokens", type=int, default=LoadPlan.max_tokens)
    parser.add_argument("--long-tokens", type=int, default=LoadPlan.long_tokens)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--doomed-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.doomed_child:
        asyncio.run(
            doomed_child(args.grpc_url, args.model, args.hidden, args.streams, args.seed, args.long_tokens)
        )
        return 0
    plan = LoadPlan(
        streams=args.streams,
        cancel_share=args.cancel_share,
        invalid_share=args.invalid_share,
        kill_share=args.kill_share,
        max_tokens=args.max_tokens,
        long_tokens=args.long_tokens,
        seed=args.seed,
    )
    server = None
    if args.grpc_url:
        grpc_url, metrics_url, pid, hidden = args.grpc_url, args.metrics_url, args.server_pid, args.hidden
        if pid is None:
            pid = next(p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "tritonserver")
    else:
        server, hidden = own_server()
        grpc_url, metrics_url, pid = server.grpc_url, server.metrics_url, server.process.pid
    try:
        result = asyncio.run(run_load_fault(grpc_url, metrics_url, pid, args.model, hidden, plan))
    finally:
        if server is not None:
            server.stop()
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
