"""Build a tiny random-weight Llama model with a locally trained byte-level BPE
tokenizer: a real model directory vLLM serves in seconds, for fast tests.

Usage: python -m tools.models.tiny [--out models/tiny-llama]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..paths import TINY_MODEL_DIR

HIDDEN_SIZE = 128
VOCAB_SIZE = 1024
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Enough varied English for a byte-level BPE to learn useful merges.
_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Prompt embeddings let applications keep raw text away from the server.",
    "Triton Inference Server streams responses from a decoupled Python model.",
    "vLLM schedules requests with paged attention and continuous batching.",
    "The quick brown fox jumps over the lazy dog while numbers count 0123456789.",
    "Hello world! How are you today? I am fine, thank you very much.",
]


def train_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_CORPUS * 50, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


# Long enough for load tests whose cancelled streams must outlast the client.
MAX_POSITIONS = 4096


def build_model(out: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.models.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TINY_MODEL_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = {"seed": args.seed, "max_position_embeddings": MAX_POSITIONS}
    marker = args.out / "BUILD_INFO.json"
    if marker.exists() and json.loads(marker.read_text()) == info:
        print(f"tiny model already at {args.out}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(args.out)
    build_model(args.out, args.seed)
    marker.write_text(json.dumps(info))
    print(f"tiny model written to {args.out}")


if __name__ == "__main__":
    main()
