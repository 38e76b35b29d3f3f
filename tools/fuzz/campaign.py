"""Running a fuzz campaign: the mutation engine over worker processes, the
optional atheris engine, findings and their replay."""

from __future__ import annotations

import collections
import hashlib
import inspect
import multiprocessing as mp
import random
import re
import resource
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..paths import RESULTS
from .targets import DEFAULT_TARGET, Target, get_target

DEFAULT_FINDINGS_DIR = RESULTS / "fuzz-findings"
MAX_CORPUS = 4000
DEFAULT_EXECUTIONS = 100_000
UNLIMITED = 2**62  # executions when only --seconds bounds the run
MAX_RESTARTS = 5  # per worker: an input that kills every worker still ends the run


# -- findings ---------------------------------------------------------------------------------
@dataclass
class Finding:
    kind: str  # crash, hang or allocation
    key: str  # what makes two findings the same bug
    data: bytes
    report: str


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, dedup key) of an exception an execution raised."""
    text = f"{type(exc).__name__}: {exc}"
    kind = "allocation" if isinstance(exc, MemoryError) or "can't allocate memory" in text else "crash"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    summary = re.sub(r"\d+", "N", text.splitlines()[0] if text else "")[:120]
    return kind, f"{kind} {where} {summary}"


def run_one(data: bytes, target: Target | None = None) -> tuple[str, Finding | None, float]:
    """Execute one input: (signature of its outcome, finding or None, CPU
    seconds). The signature is the rule and the shape of its message, as
    the target reads it: a new one is new behaviour worth mutating further.
    CPU time, not wall time, so that a loaded machine does not fake hangs."""
    target = target or get_target(DEFAULT_TARGET)
    started = time.process_time()
    try:
        outcome = target.execute(data)
        signature, finding = target.signature(outcome), None
    except Exception as exc:  # noqa: BLE001 - every escape is what we are looking for
        kind, key = classify(exc)
        signature, finding = kind, Finding(kind, key, data, "".join(traceback.format_exception(exc)))
    return signature, finding, time.process_time() - started


def save_finding(finding: Finding, directory: Path, target: Target | None = None) -> Path:
    """The input as FILE.bin (the name starts with the target's prefix, which
    replay reads back) and a report beside it as FILE.txt."""
    target = target or get_target(DEFAULT_TARGET)
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{target.file_prefix()}{finding.kind}-{hashlib.sha1(finding.data).hexdigest()[:12]}"
    stem.with_suffix(".bin").write_bytes(finding.data)
    stem.with_suffix(".txt").write_text(
        f"{finding.key}\n\ntarget: {target.name}\n{finding.report}\ninput: {finding.data[:200]!r}\n"
    )
    return stem.with_suffix(".bin")


# -- the mutation engine ----------------------------------------------------------------------
@dataclass
class Shared:
    """What workers and the parent share, without locks (one writer each)."""

    executions: Any  # RawArray('q'): executions per worker
    peak_rss_kib: Any  # RawArray('q'): ru_maxrss per worker
    busy_since: Any  # RawArray('d'): time.monotonic() at the start of the current execution, 0 when idle
    inputs: list[Any]  # RawArray('B') per worker: 4-byte length + the current input
    findings: Any  # Queue of Finding
    summaries: Any  # Queue of (worker, Counter of outcomes, slowest seconds)
    stop: Any  # Event


@dataclass(frozen=True)
class Options:
    executions: int
    seconds: float
    seed: int
    workers: int
    hang_seconds: float
    rss_bound_mib: int
    memory_cap_mib: int
    findings_dir: Path
    target: str = DEFAULT_TARGET


def _publish_input(buffer: Any, data: bytes) -> None:
    view = memoryview(buffer).cast("B")
    view[:4] = len(data).to_bytes(4, "little")
    view[4 : 4 + len(data)] = data


def _published_input(buffer: Any) -> bytes:
    view = memoryview(buffer).cast("B")
    return bytes(view[4 : 4 + int.from_bytes(view[:4], "little")])


def _cap_memory(cap_mib: int) -> None:
    """Make an oversized allocation fail (and be reported) instead of
    exhausting the machine: RLIMIT_DATA bounds heap and anonymous mmaps."""
    status = Path("/proc/self/status").read_text()
    used_kib = int(re.search(r"VmData:\s+(\d+)", status).group(1))
    limit = used_kib * 1024 + cap_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))


def worker_main(
    index: int, generation: int, quota: int, deadline: float, options: Options, shared: Shared
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops workers through `stop`
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    target = get_target(options.target)
    rng = random.Random(f"{options.seed}/{index}/{generation}")
    corpus = target.seed_inputs()
    signatures = {run_one(data, target)[0] for data in corpus}
    _cap_memory(options.memory_cap_mib)
    FuzzLoop(index, quota, deadline, options, shared, rng, corpus, signatures, target).run()


class FuzzLoop:
    """One worker's loop: mutate, execute, classify, keep what is new."""

    def __init__(
        self,
        index: int,
        quota: int,
        deadline: float,
        options: Options,
        shared: Shared,
        rng: random.Random,
        corpus: list[bytes],
        signatures: set[str],
        target: Target,
    ) -> None:
        self.index, self.quota, self.deadline, self.options, self.shared = (
            index,
            quota,
            deadline,
            options,
            shared,
        )
        self.rng, self.corpus, self.signatures, self.target = rng, corpus, signatures, target
        self.seeds = list(corpus)
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.reported: set[str] = set()
        self.slowest = 0.0
        self.rss_baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run(self) -> None:
        done = 0
        while done < self.quota and time.monotonic() < self.deadline:
            if done % 256 == 0 and self.shared.stop.is_set():
                break
            self.step()
            done += 1
            self.shared.executions[self.index] += 1
        self.shared.peak_rss_kib[self.index] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.shared.summaries.put((self.index, self.outcomes, self.slowest))

    def step(self) -> None:
        # Half from the seeds: most new signatures are new ways to fail early,
        # and mutating only those would leave the deep checks unexercised.
        parents = self.seeds if self.rng.random() < 0.5 else self.corpus
        data = self.target.mutate(self.rng.choice(parents), self.rng, self.corpus)
        _publish_input(self.shared.inputs[self.index], data)
        self.shared.busy_since[self.index] = time.monotonic()
        signature, finding, seconds = run_one(data, self.target)
        self.shared.busy_since[self.index] = 0.0
        self.outcomes[signature.split(" ")[0]] += 1
        self.slowest = max(self.slowest, seconds)
        if finding is None and seconds > self.options.hang_seconds:
            finding = Finding("hang", f"hang {signature}", data, f"one execution took {seconds:.2f} s of CPU")
        self.check_rss(data)
        if finding is not None:
            self.report(finding)
        elif signature not in self.signatures and len(self.corpus) < MAX_CORPUS:
            self.signatures.add(signature)
            self.corpus.append(data)

    def check_rss(self, data: bytes) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.shared.peak_rss_kib[self.index] = peak
        grown = peak - self.rss_baseline
        if grown > self.options.rss_bound_mib * 1024:
            self.rss_baseline = peak  # report each further jump once
            self.report(
                Finding(
                    "allocation",
                    f"allocation {len(data)}",
                    data,
                    f"peak RSS grew by {grown // 1024} MiB during one execution",
                )
            )

    def report(self, finding: Finding) -> None:
        if finding.key not in self.reported:
            self.reported.add(finding.key)
            self.shared.findings.put(finding)


class Campaign:
    """The parent: starts workers, restarts dead ones, watches for stuck
    executions, collects findings and prints progress."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.target = get_target(options.target)
        self.target.prepare()  # before forking: the workers share what it imports
        context = mp.get_context("fork")
        self.context = context
        count = options.workers
        self.shared = Shared(
            executions=context.RawArray("q", count),
            peak_rss_kib=context.RawArray("q", count),
            busy_since=context.RawArray("d", count),
            inputs=[context.RawArray("B", self.target.max_input + 8) for _ in range(count)],
            findings=context.Queue(),
            summaries=context.Queue(),
            stop=context.Event(),
        )
        self.quotas = [options.executions // count + (i < options.executions % count) for i in range(count)]
        self.deadline = time.monotonic() + (options.seconds or float("inf"))
        self.generations = [0] * count
        self.processes: list[Any] = [None] * count
        self.findings: dict[str, Finding] = {}
        self.finding_count = collections.Counter[str]()
        self.summaries: dict[int, tuple[collections.Counter[str], float]] = {}
        self.retired: set[int] = set()

    def start(self, index: int) -> None:
        remaining = self.quotas[index] - self.shared.executions[index]
        self.processes[index] = self.context.Process(
            target=worker_main,
            daemon=True,
            args=(index, self.generations[index], remaining, self.deadline, self.options, self.shared),
        )
        self.processes[index].start()

    def run(self, report_every: float) -> float:
        started = last_report = time.monotonic()
        for index in range(self.options.workers):
            self.start(index)
        while True:
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: let workers finish their execution
                print("stopping: waiting for workers", flush=True)
                self.shared.stop.set()
            alive = any(p.is_alive() for p in self.processes)
            self.drain_queues()
            self.watch_workers()  # after `alive`: a worker that died just now is still seen
            if not alive and not any(p.is_alive() for p in self.processes):
                break
            if time.monotonic() - last_report >= report_every:
                last_report = time.monotonic()
                self.print_progress(last_report - started)
        for process in self.processes:
            process.join()
        self.drain_queues()
        return time.monotonic() - started

    def watch_workers(self) -> None:
        """Save the input a worker was running when it died or got stuck
        (published in shared memory before each execution), then restart it."""
        now = time.monotonic()
        for index, process in enumerate(self.processes):
            busy = self.shared.busy_since[index]
            if process.is_alive() and busy and now - busy > max(10 * self.options.hang_seconds, 30):
                process.kill()
                process.join()
                self.restart(index, "hang", f"killed after {now - busy:.0f} s in one execution")
            elif process.exitcode not in (None, 0) and index not in self.retired:
                self.restart(index, "crash", f"worker died with exit code {process.exitcode}")

    def restart(self, index: int, kind: str, report: str) -> None:
        data = _published_input(self.shared.inputs[index])
        self.record(Finding(kind, f"{kind} worker {report.split(' ')[0]}", data, report))
        self.shared.busy_since[index] = 0.0
        self.generations[index] += 1
        if (
            self.generations[index] <= MAX_RESTARTS
            and time.monotonic() < self.deadline
            and not self.shared.stop.is_set()
        ):
            self.start(index)
        else:
            self.retired.add(index)

    def drain_queues(self) -> None:
        while not self.shared.findings.empty():
            self.record(self.shared.findings.get())
        while not self.shared.summaries.empty():
            index, outcomes, slowest = self.shared.summaries.get()
            previous, previous_slowest = self.summaries.get(index, (collections.Counter(), 0.0))
            self.summaries[index] = (previous + outcomes, max(slowest, previous_slowest))

    def record(self, finding: Finding) -> None:
        self.finding_count[finding.kind] += 1
        if finding.key not in self.findings:
            self.findings[finding.key] = finding
            path = save_finding(finding, self.options.findings_dir, self.target)
            print(f"FINDING {finding.key}\n  saved {path}", flush=True)

    @property
    def executions(self) -> int:
        return sum(self.shared.executions)

    def peak_rss_mib(self) -> float:
        return max(self.shared.peak_rss_kib) / 1024

    def print_progress(self, elapsed: float) -> None:
        print(
            f"[{elapsed:7.0f}s] executions {self.executions:,}  exec/s {self.executions / elapsed:,.0f}  "
            f"findings {len(self.findings)}  peak RSS {self.peak_rss_mib():.0f} MiB",
            flush=True,
        )

    def print_summary(self, elapsed: float) -> None:
        outcomes = sum((counter for counter, _ in self.summaries.values()), collections.Counter())
        slowest = max((slow for _, slow in self.summaries.values()), default=0.0)
        total = max(1, sum(outcomes.values()))
        print(f"executions: {self.executions:,} in {elapsed:.1f} s")
        print(f"exec/s: {self.executions / elapsed:,.1f}")
        print(
            "outcomes: " + ", ".join(f"{rule} {count / total:.1%}" for rule, count in outcomes.most_common())
        )
        print(
            f"findings: {len(self.findings)} unique "
            f"(crashes {self.finding_count['crash']}, hangs {self.finding_count['hang']}, "
            f"allocations {self.finding_count['allocation']})"
        )
        print(f"slowest execution: {slowest:.3f} s of CPU")
        print(f"peak RSS: {self.peak_rss_mib():.0f} MiB (largest worker)")


# -- the atheris engine ----------------------------------------------------------------------
def run_atheris(options: Options) -> int:
    """libFuzzer's loop with coverage of the target's modules (for embeds:
    embeds_backend.embeds, zipfile, pickletools and torch's loader); stops at
    the first finding (saved as crash-*/timeout-* under the findings
    directory, replayed with --target) and prints its own statistics."""
    import atheris

    target = get_target(options.target)
    corpus_dir = options.findings_dir.parent / f"{target.file_prefix()}fuzz-corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for data in target.seed_inputs():
        (corpus_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    _cap_memory(options.memory_cap_mib)
    for function in _functions_to_instrument(target.modules()):
        atheris.instrument_func(function)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        return target.mutate(data, random.Random(seed), ())[:max_size]

    argv = [
        sys.argv[0],
        str(corpus_dir),
        f"-seed={options.seed or 1}",
        f"-max_len={target.max_input}",
        f"-timeout={max(1, int(options.hang_seconds))}",
        f"-rss_limit_mb={options.memory_cap_mib}",
        f"-artifact_prefix={options.findings_dir}/",
        "-print_final_stats=1",
        f"-runs={options.executions if options.executions < UNLIMITED else -1}",
    ]
    if options.seconds:
        argv.append(f"-max_total_time={int(options.seconds)}")
    options.findings_dir.mkdir(parents=True, exist_ok=True)
    atheris.Setup(argv, target.execute, custom_mutator=mutator)
    atheris.Fuzz()
    return 0


def _functions_to_instrument(modules: list[ModuleType]) -> list[Callable[..., Any]]:
    """Functions and methods of the modules an input travels through.
    atheris.instrument_all() would take minutes on everything torch loads."""
    functions: list[Callable[..., Any]] = []
    for module in modules:
        for value in vars(module).values():
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                functions.append(value)
            elif inspect.isclass(value) and value.__module__ == module.__name__:
                functions += [f for f in vars(value).values() if inspect.isfunction(f)]
    return functions
