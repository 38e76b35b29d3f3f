"""Builders of embeddings payloads, valid and hostile, shared by the tests,
the hostile corpus and the fuzzer. All made in code: no binary fixtures."""

from __future__ import annotations

import base64
import io
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def bf16_exact(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Random float32 values that bf16, fp16 and fp64 represent exactly, so
    every wire dtype carries the same numbers to the engine."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator).clamp(-4, 4)
    return values.to(torch.bfloat16).to(torch.float32)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def saved(obj: object, **kwargs: Any) -> bytes:
    """The bytes torch.save writes for `obj` (its warnings about odd objects silenced)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def torch_b64(obj: object) -> str:
    """Base64 of torch.save(obj): vLLM's and this model's wire form."""
    return b64(saved(obj))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_payload(array: np.ndarray) -> str:
    return b64(npy_bytes(array))


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def zip_members(raw: bytes) -> list[tuple[str, bytes]]:
    """(name, content) of every member of a zip archive, in order."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def plain_zip(
    members: Mapping[str, bytes] | Sequence[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED
) -> bytes:
    """A zip archive of `members` (name, content), written by zipfile rather
    than torch; a sequence may repeat a name."""
    pairs = list(members.items()) if isinstance(members, Mapping) else list(members)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are intended
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, content in pairs:
                archive.writestr(name, content)
    return buffer.getvalue()


class _RunsCode:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_pickle_payload(marker: str) -> str:
    return b64(saved(_RunsCode(marker), pickle_protocol=pickle.DEFAULT_PROTOCOL))


def sparse_out_of_range_payload(hidden: int) -> str:
    indices = torch.tensor([[0, 50_000], [0, 7]])
    values = torch.tensor([1.0, 2.0])
    tensor = torch.sparse_coo_tensor(indices, values, (4, hidden), check_invariants=False)
    return torch_b64(tensor)


def sparse_huge_shape_payload() -> str:
    indices = torch.tensor([[0], [0]])
    tensor = torch.sparse_coo_tensor(indices, torch.tensor([1.0]), (2**30, 2**30))
    return torch_b64(tensor)
