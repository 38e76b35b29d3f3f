"""Write model repositories that serve this project's model under other
names and engine settings (tests, benchmarks and load runs use them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..models.tiny import CHAT_TEMPLATE as TINY_TOKENIZER_TEMPLATE
from ..models.tiny import HIDDEN_SIZE as TINY_HIDDEN
from ..paths import SHIPPED_MODEL, TINY_MODEL_DIR

__all__ = [
    "TINY_CHAT_TEMPLATE",
    "TINY_CONTEXT",
    "TINY_HIDDEN",
    "set_parameter",
    "tiny_engine_args",
    "tokenizer_without_chat_template",
    "write_model",
]
TINY_CONTEXT = 512


def write_model(
    repository: Path,
    name: str,
    engine_args: dict[str, Any],
    parameters: dict[str, Any] | None = None,
    lora_adapters: dict[str, Path] | None = None,
) -> Path:
    """Copy the shipped model (config.pbtxt + 1/) under `name` with its own
    model.json, replacing any model of that name; `parameters` override
    config.pbtxt parameter values; `lora_adapters` become its multi_lora.json."""
    target = repository / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(SHIPPED_MODEL, target, ignore=shutil.ignore_patterns("__pycache__", "model.json"))
    (target / "1" / "model.json").write_text(json.dumps(engine_args, indent=2))
    if lora_adapters:
        declared = {adapter: str(path) for adapter, path in lora_adapters.items()}
        (target / "1" / "multi_lora.json").write_text(json.dumps(declared, indent=2))
    config = target / "config.pbtxt"
    for key, value in (parameters or {}).items():
        config.write_text(set_parameter(config.read_text(), key, str(value)))
    return target


def set_parameter(config_text: str, key: str, value: str) -> str:
    """config.pbtxt with one `parameters` entry's string_value replaced."""
    marker = f'{{ key: "{key}", value: {{ string_value: "'
    start = config_text.index(marker) + len(marker)
    end = config_text.index('"', start)
    return config_text[:start] + value + config_text[end:]


# The LoRA adapter the tests' tiny model serves (tools.models.lora builds it).
TINY_ADAPTER = "tiny-adapter"
TINY_LORA_RANK = 8

# A chat template for the tiny model's model.json: its tokenizer's own, with a
# fixed preamble, so a test can tell which of the two rendered a prompt.
TINY_CHAT_TEMPLATE = "<|im_start|>system\nYou are tiny.<|im_end|>\n" + TINY_TOKENIZER_TEMPLATE


def tiny_engine_args(context: int = TINY_CONTEXT, **extra: Any) -> dict[str, Any]:
    """The random-weight test model: fast to load, meaningless output."""
    return {
        "model": str(TINY_MODEL_DIR),
        "enable_prompt_embeds": True,
        "dtype": "float32",
        "max_model_len": context,
        "enforce_eager": True,  # skips a ~30 s compile warm-up per engine
        **extra,
    }


def tokenizer_without_chat_template(model_dir: Path, out: Path) -> Path:
    """A copy of a model's tokenizer with its chat template removed: the
    `tokenizer` engine argument of a model that must have none."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "special_tokens_map.json"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, out / name)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out
