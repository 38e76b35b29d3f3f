"""Write model repositories that serve this project's model under other
names and engine settings (tests, benchmarks and load runs use them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = ROOT / "model_repository" / "vllm_model"
TINY_MODEL_DIR = ROOT / "models" / "tiny-llama"
TINY_HIDDEN = 128


def write_model(
    repository: Path, name: str, engine_args: dict[str, Any], parameters: dict[str, Any] | None = None
) -> Path:
    """Copy the shipped model (config.pbtxt + 1/) under `name` with its own
    model.json; `parameters` override config.pbtxt parameter values."""
    target = repository / name
    shutil.copytree(SHIPPED_MODEL, target, ignore=shutil.ignore_patterns("__pycache__", "model.json"))
    (target / "1" / "model.json").write_text(json.dumps(engine_args))
    config = target / "config.pbtxt"
    for key, value in (parameters or {}).items():
        text = config.read_text()
        marker = f'{{ key: "{key}", value: {{ string_value: "'
        start = text.index(marker) + len(marker)
        end = text.index('"', start)
        config.write_text(text[:start] + str(value) + text[end:])
    return target


def tiny_engine_args(context: int = 512, **extra: Any) -> dict[str, Any]:
    """The random-weight test model: fast to load, meaningless output."""
    return {
        "model": str(TINY_MODEL_DIR),
        "enable_prompt_embeds": True,
        "dtype": "float32",
        "max_model_len": context,
        "enforce_eager": True,  # skips a ~30 s compile warm-up per engine
        **extra,
    }
