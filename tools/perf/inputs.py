"""perf_analyzer `--input-data` JSON for the three prompt forms of the model.

perf_analyzer sends one `data` entry per request, cycling through them, and
only the inputs an entry names (all of the model's inputs are optional).
Rules it imposes: BYTES and BOOL inputs are lists of values; an input with
variable dims ([-1, -1] for `prompt_embeds`) needs an explicit `shape`; FP32
values must be JSON floats (it rejects an integer literal such as `0`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from triton_embeds import encode_prompt_embeds
from triton_embeds.protocol import (
    EMBEDS_BASE64_INPUT,
    EMBEDS_FP32_INPUT,
    EXCLUDE_INPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_INPUT,
)

Kind = Literal["text", "embeds", "base64"]
KINDS: tuple[Kind, ...] = ("text", "embeds", "base64")

# Plain English words: a byte-level BPE tokenizer makes roughly one token of
# each (with its leading space), so `seq_len` words give about that many tokens.
WORDS = (
    "the of and to in is was for on that with as by at from his her an were are "
    "which this be or had not but first one their its new after who they have two "
    "she been other all during time into school more may years over only year most "
    "would world city some where between later three state such then national used"
).split()


@dataclass(frozen=True)
class InputSpec:
    """What every request of a benchmark carries."""

    kind: Kind = "text"
    entries: int = 8  # distinct requests perf_analyzer cycles through
    seq_len: int = 16  # prompt tokens (embeddings rows; words for text)
    hidden: int = 128  # the model's hidden size (embeddings only)
    max_tokens: int = 16
    ignore_eos: bool = True  # every request then generates exactly max_tokens
    stream: bool = True  # a response per generated token
    seed: int = 0
    scale: float = 0.02  # std of the random embeddings, near real embedding tables
    tokenizer: str | None = None  # a local tokenizer dir: text prompts then get exactly seq_len tokens


def sampling_json(spec: InputSpec) -> str:
    return json.dumps({"max_tokens": spec.max_tokens, "ignore_eos": spec.ignore_eos, "temperature": 0})


def text_prompt(rng: np.random.Generator, index: int, seq_len: int) -> str:
    # The index leads so entries differ from their first token (no shared prefix cache hits).
    words = rng.choice(WORDS, size=max(seq_len - 1, 0))
    return " ".join([f"Story {index}:", *words])


def fit_to_tokens(texts: list[str], tokenizer_dir: str, seq_len: int) -> list[str]:
    """Cut each prompt to `seq_len` tokens of the model's own tokenizer, so text
    and embeddings runs compare equal prompt lengths."""
    from transformers import AutoTokenizer  # only needed for exact lengths

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(row[:seq_len]) for row in ids]


def random_embeds(rng: np.random.Generator, spec: InputSpec) -> np.ndarray:
    return (rng.standard_normal((spec.seq_len, spec.hidden)) * spec.scale).astype(np.float32)


def prompt_input(spec: InputSpec, rng: np.random.Generator, index: int) -> dict[str, Any]:
    if spec.kind == "text":
        return {TEXT_INPUT: [text_prompt(rng, index, spec.seq_len)], EXCLUDE_INPUT: [True]}
    embeds = random_embeds(rng, spec)
    if spec.kind == "embeds":
        # Rounding keeps the file small; float() keeps 0 as 0.0 (perf_analyzer refuses ints for FP32).
        content = [round(float(v), 6) for v in embeds.ravel()]
        return {EMBEDS_FP32_INPUT: {"content": content, "shape": list(embeds.shape)}}
    return {EMBEDS_BASE64_INPUT: [encode_prompt_embeds(embeds)]}


def build_input_data(spec: InputSpec) -> dict[str, list[dict[str, Any]]]:
    if spec.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {spec.kind!r}")
    rng = np.random.default_rng(spec.seed)
    common = {STREAM_INPUT: [spec.stream], SAMPLING_INPUT: [sampling_json(spec)]}
    entries = [{**prompt_input(spec, rng, i), **common} for i in range(spec.entries)]
    if spec.kind == "text" and spec.tokenizer:
        texts = fit_to_tokens([e[TEXT_INPUT][0] for e in entries], spec.tokenizer, spec.seq_len)
        for entry, text in zip(entries, texts, strict=True):
            entry[TEXT_INPUT] = [text]
    return {"data": entries}


def write_input_data(spec: InputSpec, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_input_data(spec)))
    return path
