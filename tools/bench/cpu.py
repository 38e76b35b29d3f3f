"""CPU time of a process and everything it started (engine cores, stubs),
by process name, so a report can say which part of a server is busy."""

from __future__ import annotations

from collections import Counter

import psutil


def process_tree_cpu(pid: int) -> dict[str, float]:
    """User + system seconds of `pid` and its live descendants, summed per process name."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    by_name: Counter[str] = Counter()
    for process in processes:
        try:
            times = process.cpu_times()
            by_name[_label(process)] += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return dict(by_name)


def _label(process: psutil.Process) -> str:
    """argv[0]'s file name: untruncated (unlike the kernel's 15-character name),
    and vLLM writes its process titles (VLLM::EngineCore, ...) there."""
    try:
        argv = process.cmdline()
    except (psutil.AccessDenied, psutil.ZombieProcess):
        argv = []
    return argv[0].rsplit("/", 1)[-1] if argv and argv[0] else process.name()


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}
