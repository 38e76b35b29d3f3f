"""The model's Triton configuration: the inputs and outputs it speaks, filled
into a minimal config.pbtxt by auto-complete (as Triton's vLLM backend does),
plus the engine facts clients read from the config's parameters."""

from __future__ import annotations

from typing import Any

INPUTS: list[dict[str, Any]] = [
    {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "prompt_embeds", "data_type": "TYPE_FP32", "dims": [-1, -1], "optional": True},
    {"name": "prompt_embeds_fp16", "data_type": "TYPE_FP16", "dims": [-1, -1], "optional": True},
    {"name": "prompt_embeds_bf16", "data_type": "TYPE_BF16", "dims": [-1, -1], "optional": True},
    {"name": "prompt_embeds_base64", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    {"name": "exclude_input_in_output", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
]
OUTPUTS: list[dict[str, Any]] = [
    {"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "finish_reason", "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": "num_input_tokens", "data_type": "TYPE_UINT32", "dims": [-1]},
    {"name": "num_output_tokens", "data_type": "TYPE_UINT32", "dims": [-1]},
]


def complete(config: Any) -> Any:
    """Fill in what a minimal config.pbtxt leaves out; keep what it states."""
    config.set_max_batch_size(0)
    config.set_model_transaction_policy({"decoupled": True})
    current = config.as_dict()
    have_inputs = {entry["name"] for entry in current.get("input", [])}
    have_outputs = {entry["name"] for entry in current.get("output", [])}
    for entry in INPUTS:
        if entry["name"] not in have_inputs:
            config.add_input(entry)
    for entry in OUTPUTS:
        if entry["name"] not in have_outputs:
            config.add_output(entry)
    return config

