"""Run configuration: presets, command-line overrides and the one set of
vLLM engine arguments every path shares."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..paths import RESULTS, ROOT, TINY_MODEL_DIR
from .paths import PATHS, default_paths

CONFIGS_DIR = ROOT / "benchmarks" / "configs"
TINY_MODEL = TINY_MODEL_DIR
SERVED_NAME = "bench"  # the model name on Triton and on `vllm serve`


@dataclass(frozen=True)
class Workload:
    """What every path is given: N requests of S-token prompts, M output
    tokens each (ignore_eos, greedy), C in flight at all times."""

    requests: int
    seq_len: int
    max_tokens: int
    concurrency: int
    stream: bool = True
    seed: int = 0

    def sampling(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "temperature": 0, "ignore_eos": True}


@dataclass(frozen=True)
class Preset:
    workload: Workload
    dtype: str
    enforce_eager: bool
    model: Path | None = None
    model_config: str | None = None


PRESETS: dict[str, Preset] = {
    # BENCHMARKS.md's CPU reference workload on the tiny random model.
    "cpu": Preset(Workload(200, 16, 16, 16), "float32", True, model=TINY_MODEL),
    # A few minutes end to end: three engine starts dominate.
    "smoke": Preset(Workload(8, 16, 4, 2), "float32", True, model=TINY_MODEL),
    # BENCHMARKS.md's GPU reference workload on the Llama-3.1-8B shape, dummy weights.
    "gpu": Preset(Workload(256, 512, 128, 64), "bfloat16", False, model_config="llama-3.1-8b"),
}


@dataclass
class BenchConfig:
    preset: str
    workload: Workload
    model: Path | None
    model_config: str | None
    dtype: str
    load_format: str | None
    enforce_eager: bool
    max_model_len: int | None
    max_num_seqs: int | None
    paths: list[str]
    client_processes: int
    out_dir: Path
    extra_engine_args: dict[str, Any] = field(default_factory=dict)

    def engine_args(self, model_dir: Path) -> dict[str, Any]:
        """Identical for the in-process engine, Triton's model.json and `vllm serve`."""
        args: dict[str, Any] = {
            "model": str(model_dir),
            "tokenizer": str(model_dir),
            "enable_prompt_embeds": True,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len or default_max_model_len(self.workload),
            "enforce_eager": self.enforce_eager,
            "disable_log_stats": True,  # Triton's model turns it off; so do the others
            "seed": 0,
        }
        if self.max_num_seqs:
            args["max_num_seqs"] = self.max_num_seqs
        if self.load_format:
            args["load_format"] = self.load_format
        args.update(self.extra_engine_args)
        return args

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = str(self.model) if self.model else None
        data["out_dir"] = str(self.out_dir)
        return data


def default_max_model_len(workload: Workload) -> int:
    """Room for the prompt (plus a BOS token on text paths) and the output,
    rounded up so the KV cache is not sized for the model's full context."""
    needed = workload.seq_len + workload.max_tokens + 64
    return max(512, -(-needed // 256) * 256)


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def auto_client_processes(concurrency: int) -> int:
    """About one client process per four cores: enough that the generator
    keeps up on a GPU host, while a small CPU host keeps its cores for the server."""
    return max(1, min(concurrency, (os.cpu_count() or 1) // 4))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Side-by-side serving benchmark: vLLM engine, Triton model, vllm serve.",
    )
    parser.add_argument(
        "--preset",
        choices=["auto", *PRESETS],
        default="auto",
        help="workload defaults; auto = gpu when CUDA is available, else cpu",
    )
    parser.add_argument("--smoke", action="store_true", help="same as --preset smoke")
    parser.add_argument("--model", type=Path, help="model directory (default: the preset's)")
    parser.add_argument(
        "--model-config", help="a config.json (or a name under benchmarks/configs/) served with dummy weights"
    )
    parser.add_argument("--load-format", help="vLLM load_format, e.g. dummy")
    parser.add_argument("--dtype", help="engine dtype (float32, bfloat16, float16)")
    parser.add_argument("-n", "--requests", type=int)
    parser.add_argument("-s", "--seq-len", type=int, help="prompt length in tokens / embeds rows")
    parser.add_argument("-m", "--max-tokens", type=int)
    parser.add_argument("-c", "--concurrency", type=int)
    parser.add_argument("--paths", help=f"comma-separated subset of: {', '.join(PATHS)}")
    parser.add_argument("--client-processes", type=int, help="load generator processes (default: cores/4)")
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="streamed responses (needed for TTFT)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more vLLM engine argument for every path, e.g. stream_interval=4 "
        "(VALUE is read as JSON when it parses, else kept as a string); repeatable",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    preset_name = "smoke" if args.smoke else args.preset
    if preset_name == "auto":
        preset_name = "gpu" if cuda_available() else "cpu"
    preset = PRESETS[preset_name]
    workload = _workload(preset.workload, args)
    model, model_config = _model_choice(preset, args)
    dtype = args.dtype or preset.dtype
    paths = _paths(args.paths, dtype)
    return BenchConfig(
        preset=preset_name,
        workload=workload,
        model=model,
        model_config=model_config,
        dtype=dtype,
        # A config.json alone has no weights: dummy is the only format that loads it.
        load_format=args.load_format or ("dummy" if model_config else None),
        enforce_eager=preset.enforce_eager if args.enforce_eager is None else args.enforce_eager,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        paths=paths,
        client_processes=args.client_processes or auto_client_processes(workload.concurrency),
        out_dir=args.out,
        extra_engine_args=parse_engine_args(args.engine_arg),
    )


def parse_engine_args(pairs: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--engine-arg takes KEY=VALUE, got {pair!r}")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def _workload(base: Workload, args: argparse.Namespace) -> Workload:
    overrides = {
        "requests": args.requests,
        "seq_len": args.seq_len,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
    }
    workload = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    return replace(workload, stream=args.stream, seed=args.seed)


def _model_choice(preset: Preset, args: argparse.Namespace) -> tuple[Path | None, str | None]:
    if args.model and args.model_config:
        raise SystemExit("--model and --model-config are exclusive")
    if args.model:
        return args.model.resolve(), None
    if args.model_config:
        return None, args.model_config
    return preset.model, preset.model_config


def _paths(selection: str | None, dtype: str) -> list[str]:
    if not selection:
        return default_paths(dtype)
    chosen = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in PATHS]
    if unknown:
        raise SystemExit(f"unknown path(s) {unknown}; choose from {list(PATHS)}")
    return [name for name in PATHS if name in chosen]  # keep the canonical order
