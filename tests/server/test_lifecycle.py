"""A replica's life as an orchestrator sees it, through the real supervisor
(`python -m triton_embeds_replica`), tritonserver and vLLM: readiness that
follows the engine, and SIGTERM under a mixed load, repeated, that loses no
request and exits cleanly."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest

from tools.metrics import metric_value
from tools.models import ensure_models
from tools.server.replica_launcher import ReplicaServer
from tools.server.repository import TINY_HIDDEN, tiny_engine_args, write_model
from triton_embeds import AsyncClient, BadRequestError, ServiceUnavailableError

MODEL = "tiny"
# Signs of an unclean stop in the supervisor's and tritonserver's log.
UNCLEAN = (
    "(leaked)", "Exit timeout expired", "Signal (6)", "Signal (11)", "Segfault", "Segmentation fault",
    "malloc_consolidate", "unaligned fastbin", "double free", "Traceback",
)  # fmt: skip
REPETITIONS = 3


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_models()
    repository = tmp_path_factory.mktemp("lifecycle_repository")
    write_model(repository, MODEL, tiny_engine_args(context=4096))
    return repository


@pytest.fixture
def replica_factory(repository: Path, tmp_path: Path) -> Iterator:
    started: list[ReplicaServer] = []

    def start(drain_timeout_s: float) -> ReplicaServer:
        replica = ReplicaServer(
            repository, tmp_path / f"replica{len(started)}.log", drain_timeout_s=drain_timeout_s
        )
        started.append(replica)
        replica.start_ready()
        return replica

    yield start
    for replica in started:
        replica.stop()


@dataclass
class Outcomes:
    """How each request of the load ended, as its client saw it."""

    seen: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def embeds(rows: int, hidden: int = TINY_HIDDEN) -> np.ndarray:
    return np.random.default_rng(rows).standard_normal((rows, hidden), dtype=np.float32)


async def finishing_stream(client: AsyncClient, tokens: int, started: asyncio.Event, out: Outcomes) -> None:
    stream = await client.completions.create(
        model=MODEL, prompt="hello", max_tokens=tokens, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    usage, reason = None, None
    async for chunk in stream:
        started.set()
        usage = chunk.usage or usage
        reason = (chunk.choices[0].finish_reason if chunk.choices else None) or reason
    if usage is not None and usage.completion_tokens == tokens and reason == "length":
        out.seen["completed"] += 1
    else:
        out.problems.append(f"stream ended early: usage={usage}, finish_reason={reason}")


async def whole_completion(client: AsyncClient, tokens: int, out: Outcomes) -> None:
    completion = await client.completions.create(
        model=MODEL, prompt="", max_tokens=tokens, extra_body={"prompt_embeds": embeds(6), "ignore_eos": True}
    )
    if completion.usage.completion_tokens == tokens:
        out.seen["completed"] += 1
    else:
        out.problems.append(f"completion cut short: {completion.usage}")


async def cancelled_stream(client: AsyncClient, out: Outcomes) -> None:
    stream = await client.completions.create(
        model=MODEL, prompt="bye", max_tokens=3000, stream=True, extra_body={"ignore_eos": True}
    )
    async for _chunk in stream:
        break
    await stream.close()
    out.seen["cancelled"] += 1


async def invalid_request(client: AsyncClient, out: Outcomes) -> None:
    try:
        await client.completions.create(
            model=MODEL, prompt="", max_tokens=4, extra_body={"prompt_embeds": embeds(3, TINY_HIDDEN + 1)}
        )
    except BadRequestError as error:
        out.seen[f"rejected:{error.code}"] += 1
    else:
        out.problems.append("an invalid request was served")


async def late_request(client: AsyncClient, out: Outcomes) -> None:
    """Sent after the drain began: refused at once, with a code that says why."""
    try:
        await client.completions.create(model=MODEL, prompt="late", max_tokens=4)
    except ServiceUnavailableError as error:
        out.seen[f"unavailable:{error.code}"] += 1
    else:
        out.problems.append("a request sent during the drain was served")


async def ended_by_deadline(client: AsyncClient, out: Outcomes) -> None:
    stream = await client.completions.create(
        model=MODEL, prompt="long", max_tokens=3500, stream=True, extra_body={"ignore_eos": True}
    )
    received = 0
    try:
        async for _chunk in stream:
            received += 1
    except ServiceUnavailableError as error:
        out.seen[f"unavailable:{error.code}" + (":after_output" if received else "")] += 1
    else:
        out.problems.append("a 3500-token stream finished inside a 3 s drain")


def terminate_in_thread(replica: ReplicaServer) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        result["code"], result["seconds"] = replica.terminate(timeout_s=180)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


async def wait_until_unready(replica: ReplicaServer, timeout_s: float = 10) -> dict:
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        status, body = await asyncio.to_thread(replica.health, "/ready")
        if status == 503:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("/ready still 200 after SIGTERM")


async def wait_until_the_model_drains(replica: ReplicaServer, timeout_s: float = 10) -> None:
    """The model's own gauge: from then on it refuses new requests. (Between
    /ready turning 503 and this, a request that arrives is still served.)"""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if await asyncio.to_thread(metric_value, replica.metrics_url, "embeds_draining", model=MODEL) == 1:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the model never reported draining")


def assert_clean_exit(replica: ReplicaServer, result: dict, limit_s: float) -> None:
    log = replica.log_path.read_text(errors="replace")
    assert result["code"] == 0, log[-3000:]
    log = log[log.index("[replica] draining") :]  # the stop; a test may have killed an engine before
    assert result["seconds"] < limit_s, f"stop took {result['seconds']:.1f} s"
    found = [sign for sign in UNCLEAN if sign in log]
    assert not found, f"unclean stop ({found}):\n{log[-3000:]}"
    prefix = f"triton_embeds_{replica.ports.grpc}_"
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(prefix)]
    assert not _processes_named(str(replica.model_repository))


def _processes_named(fragment: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if fragment in " ".join(process.info["cmdline"] or ()):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.parametrize("repetition", range(REPETITIONS))
def test_sigterm_under_mixed_load_loses_nothing(replica_factory, repetition: int) -> None:
    replica = replica_factory(drain_timeout_s=60)

    async def scenario() -> tuple[Outcomes, dict, dict]:
        out = Outcomes()
        client = AsyncClient(replica.grpc_url, max_retries=0)  # count every refusal
        started = asyncio.Event()
        load = [
            *(finishing_stream(client, 400, started, out) for _ in range(8)),
            *(whole_completion(client, 200, out) for _ in range(4)),
            *(cancelled_stream(client, out) for _ in range(4)),
            *(invalid_request(client, out) for _ in range(4)),
        ]
        tasks = [asyncio.create_task(request) for request in load]
        await asyncio.wait_for(started.wait(), 60)
        thread, result = terminate_in_thread(replica)
        body = await wait_until_unready(replica)
        await wait_until_the_model_drains(replica)
        await asyncio.gather(*(late_request(client, out) for _ in range(3)))
        await asyncio.wait_for(asyncio.gather(*tasks), 120)  # every request ends: none hangs
        await client.close()
        await asyncio.to_thread(thread.join)
        return out, body, result

    out, body, result = asyncio.run(scenario())
    print(f"\nrepetition {repetition}: {dict(out.seen)}; stopped in {result['seconds']:.1f} s")
    assert not out.problems, out.problems
    assert body["draining"] is True and body["reason"].startswith("draining")
    assert out.seen == Counter(
        {"completed": 12, "cancelled": 4, "rejected:hidden_size": 4, "unavailable:draining": 3}
    )
    assert_clean_exit(replica, result, limit_s=60)


def test_readiness_follows_the_engine_then_the_drain_deadline_ends_long_requests(replica_factory) -> None:
    replica = replica_factory(drain_timeout_s=3)
    assert replica.health("/live")[0] == 200

    _engine_core(replica).kill()
    unready = _wait_for_health(replica, 503, timeout_s=30)
    assert "engine" in unready["reason"], unready
    assert replica.health("/live")[0] == 200, "liveness must hold while the engine is rebuilt"
    _wait_for_health(replica, 200, timeout_s=600)

    async def scenario() -> tuple[Outcomes, dict]:
        out = Outcomes()
        client = AsyncClient(replica.grpc_url, max_retries=0)  # count every refusal
        tasks = [asyncio.create_task(ended_by_deadline(client, out)) for _ in range(4)]
        await asyncio.sleep(2)
        thread, result = terminate_in_thread(replica)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await client.close()
        await asyncio.to_thread(thread.join)
        return out, result

    out, result = asyncio.run(scenario())
    assert not out.problems, out.problems
    assert out.seen == Counter({"unavailable:shutdown:after_output": 4})
    assert_clean_exit(replica, result, limit_s=45)


def _engine_core(replica: ReplicaServer) -> psutil.Process:
    assert replica.process is not None
    for process in psutil.Process(replica.process.pid).children(recursive=True):
        if "EngineCore" in process.name() or "EngineCore" in " ".join(process.cmdline()):
            return process
    raise AssertionError("no vLLM engine-core process under the replica")


def _wait_for_health(replica: ReplicaServer, wanted: int, timeout_s: float) -> dict:
    """The /ready body once it answers `wanted`, polled every 0.1 s."""
    began = time.monotonic()
    status, body = 0, {}
    while time.monotonic() - began < timeout_s:
        status, body = replica.health("/ready")
        if status == wanted:
            return body
        time.sleep(0.1)
    raise AssertionError(f"/ready did not answer {wanted} within {timeout_s} s: {status} {body}")
