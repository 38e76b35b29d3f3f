"""Prompt embeddings in, Triton payloads out.

Two wire forms exist: a raw tensor input (no serialization, the fastest over
gRPC) and `prompt_embeds_base64`, the base64 of `torch.save` bytes that vLLM
and NVIDIA Dynamo accept. torch is only needed for the second form, and only
imported when a caller's value requires it.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Collection
from typing import Any

import numpy as np

from ._types import TensorPayload
from .protocol import EMBEDS_BF16_INPUT, EMBEDS_FP16_INPUT, EMBEDS_FP32_INPUT, EMBEDS_TENSOR_DATATYPES

# One prompt's embeddings before encoding: an (S, H) tensor or array, or an
# already encoded base64 string.
EmbedsItem = Any  # np.ndarray | torch.Tensor | str; torch is optional


def encode_prompt_embeds(tensor: Any) -> str:
    """Base64 of `torch.save(tensor)`: the `prompt_embeds` field of vLLM's and
    Dynamo's completions API, and this model's `prompt_embeds_base64`.

    Views are copied first: torch.save writes a view's whole storage, which
    would inflate the payload past the server's size limit for no gain.
    """
    torch = _require_torch("encode_prompt_embeds")
    if isinstance(tensor, np.ndarray):
        tensor = torch.from_numpy(tensor)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(
            f"encode_prompt_embeds takes a torch.Tensor or numpy array, got {type(tensor).__name__}"
        )
    buffer = io.BytesIO()
    torch.save(_compact(tensor.detach().cpu()), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def split_prompt_embeds(value: Any) -> list[EmbedsItem]:
    """One item per prompt: (S, H) and (1, S, H) are one prompt, (B, S, H)
    and lists are B prompts. Bytes are torch.save output and get base64
    encoded; strings are taken as base64 already."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [base64.b64encode(bytes(value)).decode("ascii")]
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("prompt_embeds is an empty list")
        return [item for element in value for item in split_prompt_embeds(element)]
    if isinstance(value, np.ndarray) or _is_torch_tensor(value):
        return _split_array(value)
    raise TypeError(
        "prompt_embeds must be a torch.Tensor, numpy array, base64 string, torch.save "
        f"bytes, or a list of these; got {type(value).__name__}"
    )


def _split_array(array: Any) -> list[EmbedsItem]:
    shape = tuple(array.shape)
    if len(shape) == 2:
        return [array]
    if len(shape) == 3:
        return [array[i] for i in range(shape[0])]
    raise ValueError(f"prompt_embeds must have shape (S, H), (1, S, H) or (B, S, H); got {list(shape)}")


def to_base64(item: EmbedsItem) -> str:
    return item if isinstance(item, str) else encode_prompt_embeds(item)


def to_tensor_payload(item: EmbedsItem, accepted: Collection[str]) -> TensorPayload | None:
    """The raw-tensor form of one prompt, in the narrowest dtype the model
    accepts: fp16/bf16 stay half size when the model has that input, anything
    else goes as fp32. None when the model has no matching tensor input."""
    if _is_torch_tensor(item):
        return _torch_payload(item, accepted)
    return _numpy_payload(np.asarray(item), accepted)


def _torch_payload(tensor: Any, accepted: Collection[str]) -> TensorPayload | None:
    torch = sys.modules["torch"]
    tensor = tensor.detach().cpu()
    _check_floating(str(tensor.dtype).replace("torch.", ""), tensor.is_floating_point())
    if tensor.dtype == torch.bfloat16 and EMBEDS_BF16_INPUT in accepted:
        # numpy has no bfloat16: send the raw 16-bit patterns.
        bits = tensor.contiguous().view(torch.int16).numpy()
        return _payload(EMBEDS_BF16_INPUT, bits.shape, bits.tobytes())
    if tensor.dtype == torch.float16 and EMBEDS_FP16_INPUT in accepted:
        return _numpy_payload(tensor.numpy(), accepted)
    return _numpy_payload(tensor.to(torch.float32).numpy(), accepted)


def _numpy_payload(array: np.ndarray, accepted: Collection[str]) -> TensorPayload | None:
    _check_floating(str(array.dtype), array.dtype.kind == "f")
    if array.dtype == np.float16 and EMBEDS_FP16_INPUT in accepted:
        return _payload(EMBEDS_FP16_INPUT, array.shape, np.ascontiguousarray(array).tobytes())
    if EMBEDS_FP32_INPUT not in accepted:
        return None
    data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
    return _payload(EMBEDS_FP32_INPUT, array.shape, data)


def _payload(input_name: str, shape: tuple[int, ...], data: bytes) -> TensorPayload:
    return TensorPayload(input_name, EMBEDS_TENSOR_DATATYPES[input_name], _shape2(shape), data)


def _check_floating(dtype_name: str, is_floating: bool) -> None:
    """The server rejects integer embeddings; casting them here would hide that mistake."""
    if not is_floating:
        raise ValueError(f"prompt_embeds must be floating point, got {dtype_name}")


def _shape2(shape: tuple[int, ...]) -> tuple[int, int]:
    return (int(shape[0]), int(shape[1]))


def _compact(tensor: Any) -> Any:
    whole_storage = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    if tensor.is_contiguous() and tensor.storage_offset() == 0 and whole_storage:
        return tensor
    return tensor.clone(memory_format=sys.modules["torch"].contiguous_format)


def _is_torch_tensor(value: Any) -> bool:
    """True for a torch.Tensor, without importing torch for callers that never use it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _require_torch(purpose: str) -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{purpose} needs torch (pip install 'triton-embeds-client[torch]'); without it, "
            "send numpy arrays over gRPC or already encoded base64 strings"
        ) from None
    return torch
