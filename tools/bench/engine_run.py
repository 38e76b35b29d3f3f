"""The in-process paths: vLLM's AsyncLLM driven on its own event loop with
the same closed loop the clients use, i.e. what the engine itself sustains.

Runs as a child process (`python -m tools.bench.engine_run spec.json
result.json`) so the engine's memory and processes are gone before the next
server starts.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .closed_loop import run_closed_loop
from .cpu import cpu_delta, process_tree_cpu
from .settings import Workload
from .stats import RequestRecord
from .workload import embeds


async def run_engine_paths(spec: dict[str, Any]) -> dict[str, Any]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    started = time.monotonic()
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**spec["engine_args"]))
    results: dict[str, Any] = {"startup_s": round(time.monotonic() - started, 1), "paths": {}}
    try:
        for name, kind in spec["paths"].items():
            results["paths"][name] = await _run_path(engine, kind, spec)
    finally:
        engine.shutdown()
        # Collected now, while modules are alive: AsyncLLM.__del__ at interpreter exit raises.
        del engine
        gc.collect()
    return results


async def _run_path(engine: Any, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    workload = Workload(**spec["workload"])
    texts = {int(i): text for i, text in spec["texts"].items()}
    prompts = await _prompts(engine, kind, workload, spec["hidden"], texts)
    measured, warmup = prompts[: workload.requests], prompts[workload.requests :]
    send = _sender(engine, workload)
    await run_closed_loop(send, warmup, workload.concurrency)
    cpu_before = process_tree_cpu(os.getpid())
    records = await run_closed_loop(send, measured, workload.concurrency)
    return {
        "records": [asdict(r) for r in records],
        "server_cpu_by_process": cpu_delta(cpu_before, process_tree_cpu(os.getpid())),
    }


async def _prompts(
    engine: Any, kind: str, workload: Workload, hidden: int, texts: dict[int, str]
) -> list[dict[str, Any]]:
    """Measured prompts, then one warm-up prompt per slot; all built up front
    (embeds already in the engine's dtype: the engine's own limit)."""
    indices = range(workload.requests + workload.concurrency)
    if kind == "embeds":
        import torch

        dtype = engine.model_config.dtype
        return [
            {"prompt_embeds": torch.from_numpy(embeds(i, workload.seq_len, hidden, workload.seed)).to(dtype)}
            for i in indices
        ]
    if kind == "tokens":
        tokenizer = engine.get_tokenizer()
        if inspect.isawaitable(tokenizer):  # older vLLM releases
            tokenizer = await tokenizer
        return [{"prompt_token_ids": tokenizer.encode(texts[i])} for i in indices]
    return [{"prompt": texts[i]} for i in indices]


def _sender(engine: Any, workload: Workload):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kind = RequestOutputKind.DELTA if workload.stream else RequestOutputKind.FINAL_ONLY
    params = SamplingParams(**workload.sampling(), output_kind=kind)

    async def send(prompt: dict[str, Any]) -> RequestRecord:
        record = RequestRecord(time.monotonic(), 0.0)
        async for output in engine.generate(prompt, params, uuid.uuid4().hex):
            completion = output.outputs[0]
            if workload.stream and record.first_token is None and completion.token_ids:
                record.first_token = time.monotonic()
            record.output_tokens += len(completion.token_ids)
            if output.prompt_token_ids:  # DELTA outputs may carry it only once
                record.prompt_tokens = len(output.prompt_token_ids)
        record.end = time.monotonic()
        return record

    return send


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[1]).read_text())
    result = asyncio.run(run_engine_paths(spec))
    Path(argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
