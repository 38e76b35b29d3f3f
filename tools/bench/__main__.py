"""Serving benchmark: one model, one workload, every path side by side in one run.

Paths: vLLM's AsyncLLM in-process (prompt embeds, token ids, text); this
project's Triton model over gRPC (binary FP32 embeds, FP16/BF16 embeds when the
engine runs in half precision, base64 embeds, text) and over HTTP (base64
embeds); `vllm serve --enable-prompt-embeds` /v1/completions (base64 embeds,
text). Servers run one at a time with identical engine arguments; results go
to --out as serving.json, serving.md and serving.png.

Usage:
  python -m tools.bench                               # CPU preset: tiny model, N=200 S=16 M=16 C=16
  python -m tools.bench --smoke                       # all paths, tiny sizes, a few minutes
  python -m tools.bench --preset gpu          # Llama-3.1-8B shape, dummy weights, N=256 S=512 M=128 C=64
  python -m tools.bench --model-config qwen3-0.6b --paths engine-embeds,triton-grpc-embeds
"""

from __future__ import annotations

import signal
import sys

from . import report as reporting
from .runner import log, run
from .settings import build_parser, config_from_args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds the server context managers; a bare SIGTERM would orphan the servers.
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    config = config_from_args(build_parser().parse_args(argv))
    log(f"preset {config.preset}; paths: {', '.join(config.paths)}; output: {config.out_dir}")
    result = run(config)
    result["ratios"] = reporting.compute_ratios(result["paths"])
    files = reporting.write_outputs(result, config.out_dir)
    print()
    print(reporting.markdown(result))
    print("written: " + ", ".join(str(path) for path in files.values()))
    errors = sum(path["errors"] for path in result["paths"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
