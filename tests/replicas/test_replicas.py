"""Two replicas behind HAProxy, through the real servers: each replica is
`python -m triton_embeds_replica` running its own tritonserver and vLLM
engine (the tiny model), HAProxy balances gRPC calls over them and takes a
replica out of rotation by its /ready endpoint.

What is measured: how one client's calls spread (per call through HAProxy
in mode http, per connection in mode tcp, per call by the client's own round
robin), streaming and cancellation through the proxy, and what clients see
when one replica's engine is killed, when a whole replica is killed, and
when one drains. The destructive tests come last; each test first brings
back any replica an earlier one took down, so any of them can run alone
(a replica takes 30-80 s to start on the 2-core host).

    ./scripts/test.sh replicas            # or: .venv/bin/python -m pytest tests/replicas -s
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tools.metrics import metric_value
from tools.models import ensure_models
from tools.server.haproxy import HAProxy, ReplicaAddress
from tools.server.launcher import free_port, kill_group, own_process_group
from tools.server.replica_launcher import ReplicaPorts, ReplicaServer
from tools.server.repository import tiny_engine_args, write_model
from triton_embeds import APIError, AsyncClient

MODEL = "tiny"
# One client's burst: short streams, several in flight at once.
BURST = 40
BURST_CONCURRENCY = 8
# A replica that gets more than this share of a burst was not balanced to.
MOST = 0.75
PROMETHEUS = "/usr/bin/prometheus"
# A replica starts in 30-70 s on the 2-core host; one that takes this long has hung.
START_TIMEOUT_S = 300
START_ATTEMPTS = 2


# --- the deployment ---------------------------------------------------------------------------


@dataclass
class Deployment:
    """Two replicas and HAProxy (mode http) in front of them."""

    repository: Path
    logs: Path
    replicas: list[ReplicaServer] = field(default_factory=list)
    proxy: HAProxy | None = None
    starts: int = 0

    def new_replica(self, ports: ReplicaPorts | None = None) -> ReplicaServer:
        self.starts += 1
        return ReplicaServer(
            self.repository,
            self.logs / f"replica{self.starts}.log",
            ports=ports or ReplicaPorts(),
            drain_timeout_s=60,
        )

    def start(self) -> None:
        began = time.monotonic()
        for _ in range(2):
            self.replicas.append(self.start_replica())  # kept as they come, for stop()
        print(f"\n[replicas] two replicas ready in {time.monotonic() - began:.1f} s")
        for number, replica in enumerate(self.replicas, start=1):
            print(f"[replicas] r{number} memory: {tree_rss_mib(replica):.0f} MiB (RSS, whole process tree)")
        addresses = [ReplicaAddress("127.0.0.1", r.ports.grpc, r.ports.health) for r in self.replicas]
        (self.logs / "haproxy").mkdir()
        self.proxy = HAProxy(addresses, workdir=self.logs / "haproxy")
        self.proxy.start()
        self.proxy.wait_ready(timeout_s=30)

    def start_replica(self, ports: ReplicaPorts | None = None) -> ReplicaServer:
        """A replica serving, started alone: two tritonservers loading their
        engines at once on a busy 2-core host have left one hung for good in
        Triton 2.51's python backend (the stub initialized, tritonserver
        waiting for it to exit). A start that hangs anyway is tried once more."""
        for attempt in range(1, START_ATTEMPTS + 1):
            replica = self.new_replica(ports)
            replica.start()
            try:
                replica.wait_ready(timeout_s=START_TIMEOUT_S)
                return replica
            except (RuntimeError, TimeoutError) as error:
                print(f"\n[replicas] start {attempt} failed: {error}")
                print(replica.log_path.read_text(errors="replace")[-3000:])
                replica.stop()
                remove_leftovers(replica)
                if attempt == START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    @property
    def haproxy(self) -> HAProxy:
        assert self.proxy is not None
        return self.proxy

    def ensure_serving(self) -> None:
        """Both replicas serving and in HAProxy's rotation: a replica an
        earlier test killed or drained is replaced on the same ports; one
        whose engine is being rebuilt is waited for."""
        for index, replica in enumerate(self.replicas):
            if replica.process is None or replica.process.poll() is not None:
                self.replace(index)
        for replica in self.replicas:
            _wait_ready(replica)
        self.haproxy.wait_ready(timeout_s=30)

    def replace(self, index: int) -> None:
        old = self.replicas[index]
        old.stop()
        remove_leftovers(old)
        began = time.monotonic()
        self.replicas[index] = self.start_replica(old.ports)
        print(f"\n[replicas] r{index + 1} replaced: ready in {time.monotonic() - began:.1f} s")

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        # Each stop may wait out tritonserver's unload; both at once.
        threads = [threading.Thread(target=replica.stop) for replica in self.replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for replica in self.replicas:
            remove_leftovers(replica)


def _wait_ready(replica: ReplicaServer) -> None:
    try:
        replica.wait_ready(timeout_s=600)
    except (RuntimeError, TimeoutError):
        print(replica.log_path.read_text(errors="replace")[-5000:])
        raise


def remove_leftovers(replica: ReplicaServer) -> None:
    """What a replica killed with SIGKILL leaves behind: its python-backend
    shared-memory regions and its drain file (a drained one removes both)."""
    prefix = f"triton_embeds_{replica.ports.grpc}_"
    for region in Path("/dev/shm").glob(f"{prefix}*"):
        region.unlink(missing_ok=True)
    Path(tempfile.gettempdir(), f"{prefix}drain.json").unlink(missing_ok=True)


def tree_rss_mib(replica: ReplicaServer) -> float:
    """Resident memory of the supervisor, tritonserver, the model's stub and
    vLLM's engine processes together."""
    assert replica.process is not None
    root = psutil.Process(replica.process.pid)
    total = 0
    for process in (root, *root.children(recursive=True)):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    ensure_models(smollm2=False)
    root = tmp_path_factory.mktemp("replicas")
    write_model(root / "repository", MODEL, tiny_engine_args(context=4096))
    deployment = Deployment(root / "repository", root)
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
def pair(deployment: Deployment) -> Deployment:
    deployment.ensure_serving()
    return deployment


# --- counting ---------------------------------------------------------------------------------


def completed(replica: ReplicaServer) -> float:
    """Requests the replica's tritonserver counts as served successfully."""
    return metric_value(replica.metrics_url, "nv_inference_request_success", model=MODEL, version="1")


def served(deployment: Deployment, before: list[float], expected: int, timeout_s: float = 10) -> list[int]:
    """Each replica's completed requests since `before`, once they add up to
    `expected` (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        deltas = [int(completed(r) - b) for r, b in zip(deployment.replicas, before, strict=True)]
        if sum(deltas) >= expected or time.monotonic() > deadline:
            return deltas
        time.sleep(0.05)


def frontend_connections(proxy: HAProxy) -> int:
    """Client connections HAProxy's gRPC frontend has accepted so far."""
    rows = proxy.stats()
    return sum(int(row["conn_tot"] or 0) for row in rows if row["svname"] == "FRONTEND")


async def burst(url: str | list[str], requests: int = BURST, concurrency: int = BURST_CONCURRENCY) -> None:
    """Short streamed requests from one client (one gRPC channel), each
    checked to have produced every token."""
    client = AsyncClient(url, max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            stream = await client.completions.create(
                model=MODEL, prompt=f"spread {index}", max_tokens=16, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
            )  # fmt: skip
            usage = None
            async for chunk in stream:
                usage = chunk.usage or usage
            assert usage is not None and usage.completion_tokens == 16, usage

    try:
        await asyncio.gather(*(one(index) for index in range(requests)))
    finally:
        await client.close()


def assert_spread(deltas: list[int], requests: int = BURST) -> None:
    assert sum(deltas) == requests, deltas
    assert all(delta > 0 for delta in deltas), f"a replica got nothing: {deltas}"
    assert max(deltas) <= MOST * requests, f"one replica got most: {deltas}"


# --- load under faults ------------------------------------------------------------------------


@dataclass
class Outcome:
    """One request of a load, as its client saw it (monotonic clock)."""

    started: float
    ended: float
    error: str | None = None  # the exception's class and message
    chunks: int = 0  # streamed chunks received before the end

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class Load:
    """`workers` clients' worth of back-to-back requests through one
    AsyncClient, until told to stop; each request's outcome is kept.
    Completion means every token arrived (ignore_eos, usage checked)."""

    def __init__(self, client: AsyncClient, *, stream: bool, max_tokens: int, workers: int) -> None:
        self.client = client
        self.stream = stream
        self.max_tokens = max_tokens
        self.workers = workers
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self._sent = 0

    async def run(self, stop: asyncio.Event) -> list[Outcome]:
        async def worker() -> None:
            while not stop.is_set():
                await self.one()

        await asyncio.gather(*(worker() for _ in range(self.workers)))
        return self.outcomes

    async def one(self) -> None:
        self._sent += 1
        outcome = Outcome(started=time.monotonic(), ended=0.0)
        self.in_flight += 1
        try:
            tokens = await (self._streamed(outcome) if self.stream else self._whole())
            if tokens != self.max_tokens:
                outcome.error = f"cut short: {tokens} of {self.max_tokens} tokens"
        except APIError as error:
            outcome.error = f"{type(error).__name__}: {error}"
        finally:
            self.in_flight -= 1
            outcome.ended = time.monotonic()
            self.outcomes.append(outcome)

    async def _whole(self) -> int:
        completion = await self.client.completions.create(
            model=MODEL, prompt=f"load {self._sent}", max_tokens=self.max_tokens,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        return completion.usage.completion_tokens if completion.usage is not None else 0

    async def _streamed(self, outcome: Outcome) -> int:
        stream = await self.client.completions.create(
            model=MODEL, prompt=f"load {self._sent}", max_tokens=self.max_tokens, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )  # fmt: skip
        usage = None
        async for chunk in stream:
            outcome.chunks += 1
            usage = chunk.usage or usage
        return usage.completion_tokens if usage is not None else 0


class RetryLog(logging.Handler):
    """The client's "retrying in ... after: ..." lines (one per retry)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.retries: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("retrying"):
            self.retries.append(message)


@contextmanager
def counting_retries() -> Iterator[RetryLog]:
    logger = logging.getLogger("triton_embeds")
    handler, level = RetryLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def summary(outcomes: list[Outcome], retries: RetryLog) -> str:
    errors = Counter((o.error or "").split(":")[0] for o in outcomes if o.error)
    worst = max((o.seconds for o in outcomes), default=0.0)
    return (
        f"{len(outcomes)} requests, {sum(o.error is None for o in outcomes)} completed, "
        f"errors {dict(errors)}, {len(retries.retries)} retries, longest {worst:.2f} s"
    )


def engine_core(replica: ReplicaServer) -> psutil.Process:
    assert replica.process is not None
    for process in psutil.Process(replica.process.pid).children(recursive=True):
        try:
            if "EngineCore" in process.name() or "EngineCore" in " ".join(process.cmdline()):
                return process
        except psutil.NoSuchProcess:
            pass
    raise AssertionError("no vLLM engine-core process under the replica")


def kill_replica(replica: ReplicaServer) -> float:
    """SIGKILL to tritonserver's process group (the model's stub and vLLM's
    processes with it) and to the supervisor: a node lost, an OOM kill.
    Returns the moment of the kill."""
    assert replica.process is not None
    supervisor = psutil.Process(replica.process.pid)
    servers = [child for child in supervisor.children() if child.name() == "tritonserver"]
    assert servers, "no tritonserver under the replica's supervisor"
    killed_at = time.monotonic()
    for server in servers:
        os.killpg(server.pid, signal.SIGKILL)
    supervisor.kill()
    replica.process.wait(timeout=30)
    return killed_at


# --- balancing --------------------------------------------------------------------------------


def test_one_client_connection_spreads_over_both_replicas(pair: Deployment) -> None:
    """HAProxy in mode http balances each call (HTTP/2 stream) of one client
    connection on its own."""
    before, connections = [completed(r) for r in pair.replicas], frontend_connections(pair.haproxy)
    asyncio.run(burst(pair.haproxy.url))
    deltas = served(pair, before, BURST)
    opened = frontend_connections(pair.haproxy) - connections
    print(
        f"\n[replicas] mode http: {BURST} streams over {opened} client connection(s) -> per replica {deltas}"
    )
    assert opened == 1
    assert_spread(deltas)


def test_tcp_mode_pins_one_client_connection_to_one_replica(pair: Deployment, tmp_path: Path) -> None:
    """The control: HAProxy in mode tcp (as a Kubernetes Service) balances
    connections, so one client's calls all land on one replica."""
    addresses = [ReplicaAddress("127.0.0.1", r.ports.grpc, r.ports.health) for r in pair.replicas]
    with HAProxy(addresses, mode="tcp", workdir=tmp_path) as tcp_proxy:
        before = [completed(r) for r in pair.replicas]
        asyncio.run(burst(tcp_proxy.url))
        deltas = served(pair, before, BURST)
    print(f"\n[replicas] mode tcp: {BURST} streams over one client connection -> per replica {deltas}")
    assert sorted(deltas) == [0, BURST]


@pytest.mark.parametrize("addressing", ["ip", "hostname"])
def test_client_round_robin_over_replica_addresses(pair: Deployment, addressing: str) -> None:
    """No proxy: the client given both replicas' addresses spreads its calls
    itself (IP addresses: one gRPC channel with gRPC's round_robin policy;
    host names: a channel each, taken in turn)."""
    host = "127.0.0.1" if addressing == "ip" else "localhost"
    urls = [f"{host}:{replica.ports.grpc}" for replica in pair.replicas]
    client = AsyncClient(urls)
    print(f"\n[replicas] client targets {client.targets}, {client.load_balancing}")
    before = [completed(r) for r in pair.replicas]
    asyncio.run(burst(urls))
    deltas = served(pair, before, BURST)
    print(f"[replicas] client round robin ({addressing}): {BURST} streams -> per replica {deltas}")
    assert_spread(deltas)


# --- streaming through the proxy --------------------------------------------------------------


def test_streams_through_the_proxy_equal_whole_completions(pair: Deployment) -> None:
    """Greedy text streamed through HAProxy equals the non-streamed text
    (whichever replica served each: they load the same weights), and every
    stream carries exactly one finish."""
    prompts = [f"the proxy carries prompt {index}" for index in range(8)]

    async def scenario() -> list[tuple[str, str, int, int | None]]:
        client = AsyncClient(pair.haproxy.url, max_retries=0)
        greedy = {"ignore_eos": True}

        async def both(prompt: str) -> tuple[str, str, int, int | None]:
            whole = await client.completions.create(
                model=MODEL, prompt=prompt, max_tokens=24, temperature=0, extra_body=greedy
            )
            stream = await client.completions.create(
                model=MODEL, prompt=prompt, max_tokens=24, temperature=0, extra_body=greedy,
                stream=True, stream_options={"include_usage": True},
            )  # fmt: skip
            pieces: list[str] = []
            finishes, usage = 0, None
            async for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    pieces.append(choice.text)
                    finishes += choice.finish_reason is not None
            tokens = usage.completion_tokens if usage is not None else None
            return whole.choices[0].text, "".join(pieces), finishes, tokens

        try:
            return await asyncio.gather(*(both(prompt) for prompt in prompts))
        finally:
            await client.close()

    before = [completed(r) for r in pair.replicas]
    results = asyncio.run(scenario())
    deltas = served(pair, before, 2 * len(prompts))
    print(f"\n[replicas] {2 * len(prompts)} greedy requests through the proxy -> per replica {deltas}")
    for prompt, (whole, streamed, finishes, tokens) in zip(prompts, results, strict=True):
        assert streamed == whole, prompt
        assert finishes == 1, f"{prompt!r}: {finishes} finishes"
        assert tokens == 24
    assert all(delta > 0 for delta in deltas), deltas


def test_cancellation_reaches_the_replica_through_the_proxy(pair: Deployment) -> None:
    """A client closing a stream after its first chunk: HAProxy passes the
    cancellation on, the replica's model counts it and its engine lets go."""
    streams = 4

    def cancelled() -> list[float]:
        return [
            metric_value(r.metrics_url, "embeds_requests_finished_total", model=MODEL, outcome="cancelled")
            for r in pair.replicas
        ]

    def unfinished() -> list[float]:
        return [
            metric_value(r.metrics_url, "embeds_engine_unfinished_requests", model=MODEL)
            for r in pair.replicas
        ]

    async def scenario() -> None:
        client = AsyncClient(pair.haproxy.url, max_retries=0)

        async def first_chunk_then_close(index: int) -> None:
            stream = await client.completions.create(
                model=MODEL, prompt=f"cancel {index}", max_tokens=3000, stream=True,
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            async for _chunk in stream:
                break
            await stream.close()

        try:
            await asyncio.gather(*(first_chunk_then_close(index) for index in range(streams)))
        finally:
            await client.close()

    before = cancelled()
    began = time.monotonic()
    asyncio.run(scenario())
    closed = time.monotonic()
    deadline = closed + 20
    while sum(cancelled()) - sum(before) < streams and time.monotonic() < deadline:
        time.sleep(0.05)
    counted = time.monotonic()
    while sum(unfinished()) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    let_go = time.monotonic()
    deltas = [int(after - b) for after, b in zip(cancelled(), before, strict=True)]
    print(
        f"\n[replicas] {streams} streams closed after their first chunk ({closed - began:.2f} s): "
        f"cancelled per replica {deltas}, counted {counted - closed:.2f} s and the engines empty "
        f"{let_go - closed:.2f} s after the last close"
    )
    assert sum(deltas) == streams, deltas
    assert unfinished() == [0, 0]


# --- Prometheus -------------------------------------------------------------------------------


def test_prometheus_scrapes_both_replicas(pair: Deployment, tmp_path: Path) -> None:
    """A Prometheus server scraping both replicas' metrics ports sums what
    each replica reports."""
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"{PROMETHEUS} is not installed (scripts/install-system-tools.sh)")
    replicas_mib = [tree_rss_mib(r) for r in pair.replicas]
    available_mib = psutil.virtual_memory().available / 2**20
    print(
        f"\n[replicas] replicas' memory {[round(m) for m in replicas_mib]} MiB; {available_mib:.0f} MiB free"
    )
    if available_mib < 1024:
        pytest.skip(f"only {available_mib:.0f} MiB free: Prometheus does not fit beside two replicas")
    targets = [f"127.0.0.1:{r.ports.metrics}" for r in pair.replicas]
    config = tmp_path / "prometheus.yml"
    settings = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "triton", "static_configs": [{"targets": targets}]}],
    }
    config.write_text(json.dumps(settings))  # JSON is YAML
    port = free_port()
    with open(tmp_path / "prometheus.log", "ab") as log:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT, **own_process_group(),
        )  # fmt: skip
    try:
        asyncio.run(burst(pair.haproxy.url, requests=16))
        queries = {
            'sum(embeds_requests_finished_total{outcome="completed"})': (
                "embeds_requests_finished_total",
                {"outcome": "completed"},
            ),
            'sum(nv_inference_request_success{model="tiny"})': ("nv_inference_request_success", {}),
        }
        began = time.monotonic()
        seen: dict[str, tuple[float | None, float]] = {}
        while time.monotonic() - began < 60:
            seen = {
                query: (
                    _prometheus_value(port, query),
                    sum(metric_value(r.metrics_url, name, model=MODEL, **labels) for r in pair.replicas),
                )
                for query, (name, labels) in queries.items()
            }
            up = _prometheus_value(port, "count(up == 1)")
            if up == 2 and all(from_prometheus == direct for from_prometheus, direct in seen.values()):
                break
            time.sleep(0.5)
        prometheus_mib = psutil.Process(process.pid).memory_info().rss / 2**20
        print(
            f"[replicas] Prometheus ({prometheus_mib:.0f} MiB) after {time.monotonic() - began:.1f} s: {seen}"
        )
        assert _prometheus_value(port, "count(up == 1)") == 2
        for query, (from_prometheus, direct) in seen.items():
            assert from_prometheus == direct, f"{query}: Prometheus {from_prometheus}, the replicas {direct}"
        assert all(direct > 0 for _, direct in seen.values()), seen
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        kill_group(process.pid)
        shutil.rmtree(tmp_path / "data", ignore_errors=True)


def _prometheus_value(port: int, query: str) -> float | None:
    """A scalar result of Prometheus' query API; None before it answers."""
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(query)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.loads(response.read())["data"]["result"]
    except (OSError, ValueError, KeyError):
        return None
    return float(result[0]["value"][1]) if result else None


# --- faults (destructive: last) ---------------------------------------------------------------


def test_engine_killed_on_one_replica_costs_no_request(pair: Deployment) -> None:
    """SIGKILL to one replica's vLLM engine core under a steady load through
    HAProxy: its /ready turns 503, HAProxy takes it out of rotation, the
    model rebuilds the engine, HAProxy takes it back. The client
    (max_retries=2) sees no error: refusals before any output are retried."""
    victim, name = pair.replicas[0], "r1"
    restarts = metric_value(victim.metrics_url, "embeds_engine_restarts_total", model=MODEL)

    async def scenario() -> tuple[list[Outcome], dict[str, float]]:
        client = AsyncClient(pair.haproxy.url, max_retries=2)
        load = Load(client, stream=False, max_tokens=8, workers=4)
        stop = asyncio.Event()
        task = asyncio.create_task(load.run(stop))
        await asyncio.sleep(2)
        times: dict[str, float] = {}
        killed_at = time.monotonic()
        engine_core(victim).kill()
        await asyncio.to_thread(pair.haproxy.wait_for_state, name, "DOWN", 10)
        times["down"] = time.monotonic() - killed_at
        await asyncio.to_thread(pair.haproxy.wait_for_state, name, "UP", 600)
        times["up"] = time.monotonic() - killed_at
        served_when_back = completed(victim)
        await asyncio.sleep(3)  # the recovered replica takes its share again
        stop.set()
        outcomes = await asyncio.wait_for(task, 120)
        times["served_after"] = completed(victim) - served_when_back
        await client.close()
        return outcomes, times

    with counting_retries() as retries:
        outcomes, times = asyncio.run(scenario())
    print(
        f"\n[replicas] engine killed on r1: out of rotation {times['down']:.2f} s after the kill, back after "
        f"{times['up']:.1f} s, then served {times['served_after']:.0f}; {summary(outcomes, retries)}"
    )
    assert [o.error for o in outcomes if o.error] == []
    assert len(outcomes) > 20
    assert times["down"] < 3
    assert times["served_after"] > 0
    assert metric_value(victim.metrics_url, "embeds_engine_restarts_total", model=MODEL) == restarts + 1


def test_replica_killed_under_load(pair: Deployment) -> None:
    """SIGKILL to a whole replica (its tritonserver's process group and its
    supervisor) under streamed load through HAProxy: every request ends;
    streams in flight on the killed replica fail at once with an error,
    everything sent after it left the rotation completes on the other."""
    victim, name = pair.replicas[1], "r2"

    async def scenario() -> tuple[list[Outcome], float, float]:
        client = AsyncClient(pair.haproxy.url, max_retries=2)
        load = Load(client, stream=True, max_tokens=200, workers=8)
        stop = asyncio.Event()
        task = asyncio.create_task(load.run(stop))
        await asyncio.sleep(3)  # streams in flight on both replicas
        killed_at = await asyncio.to_thread(kill_replica, victim)
        await asyncio.to_thread(pair.haproxy.wait_for_state, name, "DOWN", 10)
        down = time.monotonic() - killed_at
        await asyncio.sleep(6)  # new requests meanwhile: all to r1
        stop.set()
        outcomes = await asyncio.wait_for(task, 120)  # every request ends: none hangs
        await client.close()
        return outcomes, killed_at, down

    try:
        with counting_retries() as retries:
            outcomes, killed_at, down = asyncio.run(scenario())
    finally:
        remove_leftovers(victim)
    failed = [o for o in outcomes if o.error]
    waits = [o.ended - killed_at for o in failed]
    after = [o for o in outcomes if o.started > killed_at + down]
    print(
        f"\n[replicas] replica r2 killed: out of rotation {down:.2f} s after the kill; "
        f"{summary(outcomes, retries)}; failed streams waited "
        f"{', '.join(f'{w:.3f}' for w in waits) or '-'} s from the kill to their error "
        f"(after {[o.chunks for o in failed]} chunks); {len(after)} sent after it left the rotation"
    )
    for outcome in failed:
        print(f"[replicas]   {outcome.error}")
    assert all(o.started < killed_at for o in failed), "a request sent after the kill failed"
    assert all(wait < 10 for wait in waits), waits
    assert len(failed) <= 8  # at most the streams in flight
    assert after and all(o.error is None for o in after)
    assert down < 3


def test_drain_under_load_loses_nothing(pair: Deployment) -> None:
    """SIGTERM to one replica under streamed load through HAProxy: /ready
    turns 503 at once and HAProxy stops sending it new calls, the streams
    it holds finish there, calls it refuses meanwhile are retried by the
    client on the other replica. Nothing is lost."""
    victim, name = pair.replicas[0], "r1"

    async def scenario() -> tuple[list[Outcome], dict]:
        client = AsyncClient(pair.haproxy.url, max_retries=2)
        load = Load(client, stream=True, max_tokens=150, workers=8)
        stop = asyncio.Event()
        task = asyncio.create_task(load.run(stop))
        await asyncio.sleep(3)
        result: dict = {}
        began = time.monotonic()
        thread = threading.Thread(
            target=lambda: result.update(zip(("code", "seconds"), victim.terminate(180), strict=True))
        )
        thread.start()
        await asyncio.to_thread(pair.haproxy.wait_for_state, name, "DOWN", 10)
        result["down"] = time.monotonic() - began
        await asyncio.to_thread(thread.join)
        await asyncio.sleep(2)
        stop.set()
        outcomes = await asyncio.wait_for(task, 120)
        await client.close()
        return outcomes, result

    with counting_retries() as retries:
        outcomes, result = asyncio.run(scenario())
    log = victim.log_path.read_text(errors="replace")
    drain = re.search(r"draining: (\d+) requests in flight", log)
    drained = re.search(r"drained in ([\d.]+) s \((\d+) left\)", log)
    print(
        f"\n[replicas] r1 drained: out of rotation {result['down']:.2f} s after SIGTERM, "
        f"{drain and drain[1]} requests in flight then, drained in {drained and drained[1]} s "
        f"({drained and drained[2]} left), exit {result['code']} after {result['seconds']:.1f} s; "
        f"{summary(outcomes, retries)}"
    )
    assert [o.error for o in outcomes if o.error] == []
    assert drain is not None and int(drain[1]) > 0, "no stream was in flight on the drained replica"
    assert drained is not None and drained[2] == "0"
    assert result["down"] < 3
