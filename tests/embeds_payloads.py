"""Builders of embeddings payloads, valid and hostile, for the tests. All made
in code: no binary fixtures."""

from __future__ import annotations

import base64
import io
import os
import pickle

import numpy as np
import torch

from triton_helpers import torch_b64


def bf16_exact(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Random float32 values that bf16, fp16 and fp64 represent exactly, so
    every wire dtype carries the same numbers to the engine."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator).clamp(-4, 4)
    return values.to(torch.bfloat16).to(torch.float32)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def npy_payload(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return b64(buffer.getvalue())


class _RunsCode:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_pickle_payload(marker: str) -> str:
    buffer = io.BytesIO()
    torch.save(_RunsCode(marker), buffer, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    return b64(buffer.getvalue())


def sparse_out_of_range_payload(hidden: int) -> str:
    indices = torch.tensor([[0, 50_000], [0, 7]])
    values = torch.tensor([1.0, 2.0])
    tensor = torch.sparse_coo_tensor(indices, values, (4, hidden), check_invariants=False)
    return torch_b64(tensor)


def sparse_huge_shape_payload() -> str:
    indices = torch.tensor([[0], [0]])
    tensor = torch.sparse_coo_tensor(indices, torch.tensor([1.0]), (2**30, 2**30))
    return torch_b64(tensor)
