"""Prompt embeddings from text with the model's own embedding table.

This is what an application does on its side before sending embeddings
instead of text; it needs transformers and torch, which the client alone
does not.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


def text_to_embeddings(model_dir_or_id: str, text: str, *, add_special_tokens: bool = True) -> Any:
    """(S, H) float32 tensor: the input embeddings of `text`'s tokens, as the
    model's embedding layer computes them. Tokenization matches what vLLM does
    with a text prompt (special tokens added the same way by default), so the
    server generates the same as from the text itself."""
    import torch

    tokenizer, embedding = _load(model_dir_or_id)
    ids = tokenizer(text, add_special_tokens=add_special_tokens, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return embedding(ids)[0].to(torch.float32).clone()


@lru_cache(maxsize=4)
def _load(model_dir_or_id: str) -> tuple[Any, Any]:
    """Tokenizer and embedding layer, loaded once per model."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ImportError("text_to_embeddings needs transformers and torch installed") from None
    tokenizer = AutoTokenizer.from_pretrained(model_dir_or_id)
    model = AutoModelForCausalLM.from_pretrained(model_dir_or_id, dtype="float32")
    return tokenizer, model.get_input_embeddings().eval()
