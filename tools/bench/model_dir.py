"""The model directory every path serves: a real one, or a shipped
config.json served with dummy weights and a generated word-level tokenizer.

A real tokenizer for a 128k-152k vocabulary is megabytes; any tokenizer whose
ids cover the vocabulary serves a dummy-weight benchmark as well, so one is
generated next to the config instead of being shipped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..models import ensure_models
from .settings import CONFIGS_DIR, TINY_MODEL

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    label: str
    hidden_size: int
    vocab_size: int
    dummy_config: bool


def prepare_model(model: Path | None, model_config: str | None, work_dir: Path) -> ModelInfo:
    if model_config:
        config = resolve_config(model_config)
        target = work_dir / "models" / config.parent.name
        build_config_only_model(config, target)
        return _info(target, config.parent.name, dummy_config=True)
    assert model is not None
    if model == TINY_MODEL:
        ensure_models(smollm2=False)
    return _info(model, model.name, dummy_config=False)


def resolve_config(name_or_path: str) -> Path:
    """A path to config.json (or its folder), or a folder name under benchmarks/configs/."""
    for candidate in (Path(name_or_path), CONFIGS_DIR / name_or_path):
        if candidate.is_dir() and (candidate / "config.json").exists():
            return (candidate / "config.json").resolve()
        if candidate.is_file():
            return candidate.resolve()
    raise SystemExit(
        f"no config.json at {name_or_path} (shipped: {sorted(p.name for p in CONFIGS_DIR.iterdir())})"
    )


def read_config(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    return config.get("text_config") or config


def _info(path: Path, label: str, dummy_config: bool) -> ModelInfo:
    config = read_config(path)
    return ModelInfo(path, label, int(config["hidden_size"]), int(config["vocab_size"]), dummy_config)


def build_config_only_model(config: Path, target: Path) -> None:
    """config.json plus a tokenizer covering every id; rebuilt when the config changes."""
    target.mkdir(parents=True, exist_ok=True)
    copied = target / "config.json"
    if (
        copied.exists()
        and copied.read_bytes() == config.read_bytes()
        and (target / "tokenizer.json").exists()
    ):
        return
    shutil.copyfile(config, copied)
    settings = json.loads(config.read_text())
    write_word_tokenizer(target, int(settings["vocab_size"]), _first_id(settings.get("eos_token_id")))


def _first_id(value: int | list[int] | None) -> int:
    if isinstance(value, list):
        return int(value[0]) if value else 0
    return int(value or 0)


def word(index: int) -> str:
    """A distinct lowercase word per id (base 26), so a text of N words is N tokens."""
    letters = ""
    index += 26  # at least two letters: single letters read too much like punctuation to a reader
    while index:
        index, rest = divmod(index, 26)
        letters = _LETTERS[rest] + letters
    return letters


def write_word_tokenizer(target: Path, vocab_size: int, eos_id: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {word(i): i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=word(0)))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Word-level ids decode to words joined by spaces, as WordPiece does without "##" pieces.
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer.save(str(target / "tokenizer.json"))
    eos = word(eos_id if 0 <= eos_id < vocab_size else 0)
    (target / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": eos,
                "bos_token": eos,
                "unk_token": word(0),
                "pad_token": eos,
                "model_max_length": 1 << 20,
            },
            indent=2,
        )
    )
