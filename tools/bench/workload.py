"""Deterministic prompts and their wire encodings.

Request i's embeddings depend only on (seed, i), so each client process can
make its own share without shipping megabytes between processes, and every
path sees the same tensors. Encoding happens before the timed window.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from triton_embeds import encode_prompt_embeds

# Warm-up requests use indices past this, so they never repeat a measured prompt.
WARMUP_OFFSET = 1_000_000


def embeds(index: int, seq_len: int, hidden: int, seed: int) -> np.ndarray:
    """A distinct random (S, H) float32 tensor per request, as in the GPU reference."""
    rng = np.random.default_rng((seed, index))
    return rng.standard_normal((seq_len, hidden), dtype=np.float32)


def fp16_bytes(array: np.ndarray) -> bytes:
    return array.astype(np.float16).tobytes()


def bf16_bytes(array: np.ndarray) -> bytes:
    """bfloat16 is the top half of float32; numpy has no bf16 type, and
    truncation instead of rounding does not matter for random data."""
    return (array.view(np.uint32) >> 16).astype(np.uint16).tobytes()


def encode_prompt(
    kind: str, index: int, seq_len: int, hidden: int, seed: int, texts: dict[int, str]
) -> str | bytes | np.ndarray:
    """The prompt of request `index` in the form a path sends."""
    if kind == "text":
        return texts[index]
    array = embeds(index, seq_len, hidden, seed)
    if kind == "embeds":
        return array
    if kind == "embeds_fp16":
        return fp16_bytes(array)
    if kind == "embeds_bf16":
        return bf16_bytes(array)
    if kind == "embeds_base64":
        return encode_prompt_embeds(array)
    raise ValueError(f"no wire form for prompt kind {kind!r}")


def text_prompts(model_dir: Path, indices: list[int], seq_len: int, seed: int) -> dict[int, str]:
    """Texts of about `seq_len` tokens (before any BOS), distinct per request,
    made of whole-word tokens so lengths are stable across tokenizers."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    words = _word_tokens(tokenizer)
    return {
        index: _text_of_length(tokenizer, words, seq_len, random.Random(seed * 7919 + index))
        for index in indices
    }


def _word_tokens(tokenizer) -> list[str]:
    """Vocabulary entries that decode to a plain ASCII word."""
    found = []
    for token_id in range(min(tokenizer.get_vocab_size(), 50_000)):
        text = tokenizer.decode([token_id]).strip()
        if 2 <= len(text) <= 12 and text.isascii() and text.isalpha():
            found.append(text)
    if len(found) < 20:
        raise RuntimeError("the tokenizer has too few word tokens to build text prompts")
    return found


def _text_of_length(tokenizer, words: list[str], seq_len: int, rng: random.Random) -> str:
    """Random words, then trimmed or extended until the text is seq_len tokens."""
    chosen = [rng.choice(words) for _ in range(seq_len)]
    for _ in range(4 * seq_len):
        count = len(tokenizer.encode(" ".join(chosen), add_special_tokens=False).ids)
        if count == seq_len:
            break
        if count > seq_len and len(chosen) > 1:
            chosen.pop()
        else:
            chosen.append(rng.choice(words))
    return " ".join(chosen)
