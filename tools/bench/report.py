"""The run's outputs: ratios, a JSON file, markdown tables and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .paths import PATHS, RATIOS

RESULT_STEM = "serving"
RATIO_HEADER = "| ratio (requests/s) | value | target | compares |"
_SYSTEM_COLORS = {"engine": "#4c72b0", "triton": "#55a868", "vllm-serve": "#c44e52"}


def compute_ratios(paths: dict[str, Any]) -> list[dict[str, Any]]:
    """Same-run throughput ratios; only pairs whose both paths ran without errors."""
    ratios = []
    for spec in RATIOS:
        top, bottom = paths.get(spec.numerator), paths.get(spec.denominator)
        if not (top and bottom and not top["errors"] and not bottom["errors"] and bottom["requests_per_s"]):
            continue
        value = top["requests_per_s"] / bottom["requests_per_s"]
        ratios.append(
            {
                "name": spec.name,
                "numerator": spec.numerator,
                "denominator": spec.denominator,
                "value": round(value, 3),
                "target": spec.target,
                "meets_target": None if spec.target is None else value >= spec.target,
                "meaning": spec.meaning,
            }
        )
    return ratios


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def headline(report: dict[str, Any]) -> str:
    c, m = report["config"], report["model"]
    w = c["workload"]
    mode = "streaming" if w["stream"] else "non-streaming"
    return (
        f"{m['label']} (hidden {m['hidden_size']}, {c['dtype']}"
        f"{', dummy weights' if c['load_format'] == 'dummy' else ''}): "
        f"{w['requests']} requests x {w['seq_len']}-token prompts, {w['max_tokens']} output tokens "
        f"(ignore_eos, greedy), concurrency {w['concurrency']}, {mode}, "
        f"{c['client_processes']} client process(es), host {report['host']['cpus']} CPUs"
        f"{', ' + report['host']['gpu'] if report['host'].get('gpu') else ''}"
    )


def path_table(report: dict[str, Any]) -> str:
    lines = [
        "| path | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | E2E p50 ms | E2E p99 ms "
        "| errors | prompt tok | client CPU cores (max/proc) | server CPU cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["paths"].items():
        client = (
            "in-process"
            if PATHS[name].system == "engine"
            else f"{_cell(r['client_cpu_cores'])} ({_cell(r['client_cpu_cores_max_process'])})"
        )
        lines.append(
            f"| {name} | {_cell(r['requests_per_s'])} | {_cell(r['output_tokens_per_s'])} "
            f"| {_cell(r['ttft_ms_p50'])} | {_cell(r['ttft_ms_p99'])} | {_cell(r['e2e_ms_p50'])} "
            f"| {_cell(r['e2e_ms_p99'])} | {r['errors']} | {_cell(r['prompt_tokens_mean'])} "
            f"| {client} | {_cell(r['server_cpu_cores'])} |"
        )
    return "\n".join(lines)


def cpu_table(report: dict[str, Any]) -> str:
    """Server CPU cores per process name: which part of a server is busy."""
    rows = {name: r.get("server_cpu_cores_by_process") or {} for name, r in report["paths"].items()}
    columns = sorted({process for row in rows.values() for process in row})
    lines = [
        "| path (server CPU cores by process) | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def ratio_table(report: dict[str, Any]) -> str:
    lines = [RATIO_HEADER, "|---|---:|---:|---|"]
    for ratio in report["ratios"]:
        target = (
            "-"
            if ratio["target"] is None
            else f">= {ratio['target']:g} {'(met)' if ratio['meets_target'] else '(missed)'}"
        )
        lines.append(
            f"| {ratio['name']} | {ratio['value']:.2f} | {target} "
            f"| {ratio['numerator']} / {ratio['denominator']} |"
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    systems = ", ".join(f"{name} {info.get('startup_s', '-')} s" for name, info in report["systems"].items())
    return (
        "\n\n".join(
            [
                f"**Workload:** {headline(report)}",
                path_table(report),
                ratio_table(report),
                cpu_table(report),
                f"Startup: {systems}. Whole run: {report['duration_s']} s. Host 1-minute load average "
                f"{report['load_average_1m']['start']} at the start, "
                f"{report['load_average_1m']['end']} at the end.",
            ]
        )
        + "\n"
    )


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / f"{RESULT_STEM}.json", "markdown": out_dir / f"{RESULT_STEM}.md"}
    files["json"].write_text(json.dumps(report, indent=2))
    files["markdown"].write_text(markdown(report))
    chart = out_dir / f"{RESULT_STEM}.png"
    if write_chart(report, chart):
        files["chart"] = chart
    return files


def write_chart(report: dict[str, Any], path: Path) -> bool:
    """Throughput and latency per path; skipped (False) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] matplotlib is not installed (pip install -e '.[bench]'): no chart written")
        return False
    names = list(report["paths"])
    rows = [report["paths"][n] for n in names]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 0.5 * len(names) + 2.5))
    _throughput_panel(left, names, rows)
    _latency_panel(right, names, rows)
    figure.suptitle(headline(report), fontsize=8, wrap=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _throughput_panel(axis: Any, names: list[str], rows: list[dict[str, Any]]) -> None:
    colors = [_SYSTEM_COLORS[PATHS[name].system] for name in names]
    values = [row["requests_per_s"] for row in rows]
    axis.barh(names, values, color=colors)
    for y, value in enumerate(values):
        axis.text(value, y, f" {value:g}", va="center", fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("requests / s (higher is better)")
    axis.set_title("throughput")


def _latency_panel(axis: Any, names: list[str], rows: list[dict[str, Any]]) -> None:
    series = [("TTFT p50", "ttft_ms_p50"), ("E2E p50", "e2e_ms_p50"), ("E2E p99", "e2e_ms_p99")]
    height = 0.8 / len(series)
    for offset, (label, key) in enumerate(series):
        ys = [i + (offset - 1) * height for i in range(len(names))]
        axis.barh(ys, [row[key] or 0 for row in rows], height=height, label=label)
    axis.set_yticks(range(len(names)), names)
    axis.invert_yaxis()
    axis.set_xlabel("milliseconds (lower is better)")
    axis.set_title("latency")
    axis.legend(fontsize=8)
