"""The model's Triton configuration: the contract's inputs and outputs,
filled into a minimal config.pbtxt by auto-complete (as Triton's vLLM
backend does)."""

from __future__ import annotations

from typing import Any

from .contract import INPUTS, OUTPUTS


def complete(config: Any) -> Any:
    """Fill in what a minimal config.pbtxt leaves out; keep what it states."""
    config.set_max_batch_size(0)
    config.set_model_transaction_policy({"decoupled": True})
    current = config.as_dict()
    have_inputs = {entry["name"] for entry in current.get("input", [])}
    have_outputs = {entry["name"] for entry in current.get("output", [])}
    for spec in INPUTS:
        if spec.name not in have_inputs:
            config.add_input(spec.as_config())
    for spec in OUTPUTS:
        if spec.name not in have_outputs:
            config.add_output(spec.as_config())
    return config
