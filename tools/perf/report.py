"""Run perf_analyzer against the decoupled model and summarise the result.

perf_analyzer's own figures (requests/s, latency percentiles) come from its
CSV (`-f`). For a decoupled model its latency is the whole request, first
request sent to final response; time to first token and output tokens/s come
from its profile export, which records every response's timestamp and outputs.
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triton_embeds.protocol import OUTPUT_TOKENS_OUTPUT

NS_PER_MS = 1e6


@dataclass
class PerfRun:
    """One perf_analyzer invocation over gRPC streaming."""

    url: str
    model: str
    input_data: Path
    out_dir: Path
    concurrency: str = "1"  # perf_analyzer's start[:end[:step]]
    request_count: int = 20  # requests per measurement window (count_windows)
    stability_percentage: float = 10.0
    max_trials: int = 10
    extra_args: list[str] = field(default_factory=list)

    @property
    def csv_path(self) -> Path:
        return self.out_dir / "perf_analyzer.csv"

    @property
    def export_path(self) -> Path:
        return self.out_dir / "profile_export.json"


@dataclass
class Figures:
    """What one concurrency level measured."""

    concurrency: int
    requests: int
    throughput_rps: float  # perf_analyzer's "Inferences/Second"
    p50_latency_ms: float
    p99_latency_ms: float
    ttft_p50_ms: float
    output_tokens_per_s: float


@dataclass
class PerfResult:
    returncode: int
    output: str
    figures: list[Figures]

    @property
    def problems(self) -> list[str]:
        """perf_analyzer's lines about failed requests or unstable levels; it
        ends a sweep at the first level that never stabilises, exiting 0."""
        return [
            line.strip()
            for line in self.output.splitlines()
            if "error" in line.lower() or line.startswith("Failed")
        ]


def command(run: PerfRun, executable: Path) -> list[str]:
    return [
        str(executable),
        "-m",
        run.model,
        "-u",
        run.url,
        "-i",
        "grpc",
        "--streaming",
        "--input-data",
        str(run.input_data),
        "--concurrency-range",
        run.concurrency,
        # Fixed request counts per window end in seconds on a small model, where
        # time windows would wait out their whole interval.
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        str(run.request_count),
        "--stability-percentage",
        str(run.stability_percentage),
        "--max-trials",
        str(run.max_trials),
        "-f",
        str(run.csv_path),
        "--profile-export-file",
        str(run.export_path),
        *run.extra_args,
    ]


def run_perf_analyzer(run: PerfRun, executable: Path, timeout_s: float = 600) -> PerfResult:
    run.out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (run.csv_path, run.export_path):
        stale.unlink(missing_ok=True)
    done = subprocess.run(command(run, executable), capture_output=True, text=True, timeout=timeout_s)
    output = done.stdout + done.stderr
    figures = collect_figures(run) if run.csv_path.exists() and run.export_path.exists() else []
    return PerfResult(done.returncode, output, figures)


def read_csv(path: Path) -> dict[int, dict[str, str]]:
    with path.open() as handle:
        return {int(row["Concurrency"]): row for row in csv.DictReader(handle)}


def output_tokens(request: dict[str, Any]) -> int:
    """Tokens generated: the model reports the count in its last response."""
    counts = [int(r.get(OUTPUT_TOKENS_OUTPUT) or 0) for r in request.get("response_outputs", [])]
    return max(counts, default=0)


def stream_figures(requests: list[dict[str, Any]]) -> tuple[float, float]:
    """(p50 time to first response in ms, output tokens per second)."""
    answered = [r for r in requests if r.get("response_timestamps")]
    if not answered:
        return 0.0, 0.0
    ttft = [(r["response_timestamps"][0] - r["timestamp"]) / NS_PER_MS for r in answered]
    span_s = (
        max(r["response_timestamps"][-1] for r in answered) - min(r["timestamp"] for r in answered)
    ) / 1e9
    tokens = sum(output_tokens(r) for r in answered)
    return statistics.median(ttft), tokens / span_s if span_s > 0 else 0.0


def collect_figures(run: PerfRun) -> list[Figures]:
    rows = read_csv(run.csv_path)
    experiments = json.loads(run.export_path.read_text())["experiments"]
    figures = []
    for experiment in experiments:
        level = int(experiment["experiment"]["value"])
        if level not in rows:  # a level that never stabilised has no CSV row
            continue
        row = rows[level]
        ttft, tokens_per_s = stream_figures(experiment["requests"])
        figures.append(
            Figures(
                concurrency=level,
                requests=len(experiment["requests"]),
                throughput_rps=float(row["Inferences/Second"]),
                p50_latency_ms=float(row["p50 latency"]) / 1000,
                p99_latency_ms=float(row["p99 latency"]) / 1000,
                ttft_p50_ms=ttft,
                output_tokens_per_s=tokens_per_s,
            )
        )
    return figures


def format_table(figures: list[Figures]) -> str:
    lines = [
        "| concurrency | requests/s | p50 latency ms | p99 latency ms | p50 TTFT ms | output tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {f.concurrency} | {f.throughput_rps:.2f} | {f.p50_latency_ms:.1f} | {f.p99_latency_ms:.1f} "
        f"| {f.ttft_p50_ms:.1f} | {f.output_tokens_per_s:.1f} |"
        for f in figures
    ]
    return "\n".join(lines)


def final_outputs(export_path: Path) -> list[dict[str, Any]]:
    """The last response of every request perf_analyzer sent (all levels)."""
    experiments = json.loads(export_path.read_text())["experiments"]
    return [
        request["response_outputs"][-1] if request.get("response_outputs") else {}
        for experiment in experiments
        for request in experiment["requests"]
    ]
