"""Decoding and validation of prompt embeddings.

vLLM trusts what it is given: a wrong hidden size kills its engine, NaN rows
poison reused KV blocks, and densifying an unchecked sparse tensor is a memory
corruption bug (CVE-2025-62164). Everything here runs before the engine sees a
request, cheapest check first, and never allocates more than the payload
itself justifies.
"""

from __future__ import annotations

import base64
import binascii
import io
import pickletools
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .contract import Rule
from .errors import RequestRejected

MIN_EMBEDS_BYTES = 100
DEFAULT_MAX_EMBEDS_BYTES = 10 * 1024 * 1024
ACCEPTED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _fastest_b64decode() -> Callable[..., bytes]:
    """pybase64 is vLLM's own (SIMD) decoder; fall back to the stdlib."""
    try:
        import pybase64

        return pybase64.b64decode
    except ImportError:  # pragma: no cover - pybase64 ships with vLLM
        return base64.b64decode


_b64decode = _fastest_b64decode()

# Sparse payloads are refused before torch.load by scanning the pickle (see
# _rebuilds_sparse): torch validates loaded sparse tensors through a
# module-global list that concurrent loads clear for each other, so its own
# check is not reliable under load. The invariant switch stays on as a second
# line; it is process-global, so it is turned on once and never off.
torch.sparse.check_sparse_tensor_invariants.enable()
# The _rebuild_sparse_* functions, and the legacy sparse tensor classes
# (torch.sparse.FloatTensor, ...) that NEWOBJ builds without them; pickletools
# spells a GLOBAL's argument "module name".
_SPARSE_MARKERS = ("_rebuild_sparse", "torch.sparse ")
# Encrypted, compressed-patched and strongly encrypted members: torch.save
# never writes them and zipfile refuses to read them.
_UNREADABLE_ZIP_FLAGS = 0x01 | 0x20 | 0x40
# MS-DOS directory attribute in a member's external attributes.
_DIRECTORY_ATTRIBUTE = 0x10


@dataclass(frozen=True)
class EmbedsLimits:
    """What the serving engine accepts."""

    hidden_size: int
    dtype: torch.dtype
    max_bytes: int = DEFAULT_MAX_EMBEDS_BYTES
    min_bytes: int = MIN_EMBEDS_BYTES


def decoded_size(encoded: bytes | str) -> int:
    """Bytes that base64 `encoded` decodes to, computed without decoding."""
    length = len(encoded)
    padding = encoded[-2:].count("=") if isinstance(encoded, str) else encoded[-2:].count(b"=")
    return length // 4 * 3 + {0: 0, 2: 1, 3: 2}.get(length % 4, 0) - padding


def check_encoded_size(encoded: bytes | str, limits: EmbedsLimits) -> None:
    size = decoded_size(encoded)
    if size < limits.min_bytes:
        raise RequestRejected(
            Rule.EMBEDS_TOO_SMALL,
            f"prompt_embeds_base64 decodes to {size} bytes, below the minimum of "
            f"{limits.min_bytes} bytes: no torch.save payload is that small",
        )
    if size > limits.max_bytes:
        raise RequestRejected(
            Rule.EMBEDS_TOO_LARGE,
            f"prompt_embeds_base64 decodes to {size} bytes, above this model's limit "
            f"of {limits.max_bytes} bytes (max_embeds_bytes)",
        )


def strict_b64decode(encoded: bytes | str) -> bytes:
    """Standard alphabet, correct padding, no whitespace: as vLLM requires."""
    try:
        return _b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestRejected(
            Rule.BAD_BASE64,
            f"prompt_embeds_base64 is not valid base64 (standard alphabet, padded, no whitespace): {exc}",
        ) from None


def _describe_zip(raw: bytes) -> str | None:
    """Reject archives torch.load would inflate or that are not torch.save's.

    torch.save writes uncompressed members; a compressed member could inflate a
    10 MiB payload into gigabytes, so only stored members are accepted, and
    their declared sizes must fit inside the payload."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as exc:
        return f"a corrupt zip archive ({exc})"
    names = [m.filename for m in members]
    if any(name.endswith(".npy") for name in names):
        return "a numpy .npz archive, not torch.save bytes"
    if not any(name.endswith("data.pkl") for name in names):
        return "a zip archive without torch.save's data.pkl"
    # Of two same-named members zipfile reads the last and torch's reader the
    # first: the pickle scanned and the pickle loaded would differ.
    if len(set(names)) != len(names):
        return "a zip archive with duplicate member names"
    for member in members:
        # torch's zip reader returns success for a member marked as a
        # directory without filling the buffer it allocated: the tensor
        # would hold whatever was in the server's memory. torch.save writes
        # no attributes at all.
        # (Not ZipInfo.is_dir(): it raises IndexError on an empty member name.)
        if member.filename.endswith("/") or member.external_attr & _DIRECTORY_ATTRIBUTE:
            return f"a zip archive whose member {member.filename} is marked as a directory"
        if member.compress_type != zipfile.ZIP_STORED:
            return f"a zip archive with a compressed member ({member.filename})"
        if member.flag_bits & _UNREADABLE_ZIP_FLAGS:
            return f"a zip archive with an encrypted member ({member.filename})"
        if member.file_size > len(raw):
            return f"a zip archive whose member {member.filename} claims {member.file_size} bytes"
        if not 0 <= member.header_offset < len(raw):  # zipfile would seek there to read it
            return (
                f"a zip archive whose member {member.filename} starts at byte "
                f"{member.header_offset}, outside the payload"
            )
    return None


def _rebuilds_sparse(raw: bytes) -> bool:
    """Whether a pickle in the archive names a sparse-tensor rebuild function
    or class.

    Every member named data.pkl is scanned, not only the first: torch picks
    its pickle by the archive's folder name, so a decoy data.pkl listed
    first must not hide the one torch loads."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            pickles = [archive.read(m) for m in archive.infolist() if m.filename.endswith("data.pkl")]
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise RequestRejected(
            Rule.NOT_A_TENSOR, f"prompt_embeds_base64 holds a corrupt zip archive ({exc})"
        ) from None
    return any(_names_sparse(pickled) for pickled in pickles)


def _names_sparse(pickled: bytes) -> bool:
    """Every global a pickle calls is spelled out as a string in some opcode
    argument (GLOBAL, or the strings STACK_GLOBAL consumes), so scanning the
    opcode arguments finds it without unpickling anything. A pickle too broken
    to scan is left to torch.load, which reads the same opcodes in the same
    order and so fails at the same point, before any later global."""
    try:
        for _opcode, arg, _pos in pickletools.genops(pickled):
            if isinstance(arg, str) and any(marker in arg for marker in _SPARSE_MARKERS):
                return True
    except (ValueError, EOFError, UnicodeDecodeError):
        return False
    return False


def deserialize(raw: bytes) -> torch.Tensor:
    """torch.load with weights_only on the CPU; anything but a dense tensor is
    rejected without materializing it."""
    if raw.startswith(_NPY_MAGIC):
        raise RequestRejected(
            Rule.NOT_A_TENSOR,
            "prompt_embeds_base64 holds a numpy .npy payload; send the bytes of "
            "torch.save(tensor), or the raw prompt_embeds tensor input",
        )
    if not raw.startswith(_ZIP_MAGIC):
        raise RequestRejected(
            Rule.NOT_A_TENSOR,
            "prompt_embeds_base64 is not a torch.save payload (no zip archive); "
            "legacy and non-torch formats are not accepted",
        )
    problem = _describe_zip(raw)
    if problem:
        raise RequestRejected(Rule.NOT_A_TENSOR, f"prompt_embeds_base64 holds {problem}")
    if _rebuilds_sparse(raw):
        raise RequestRejected(
            Rule.NOT_DENSE,
            "prompt_embeds must be a dense tensor, got a sparse tensor payload "
            "(sparse tensors are never loaded or densified)",
        )
    try:
        loaded = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    # weights_only keeps hostile pickles from running code, not from tripping
    # torch's internals: they raise AssertionError, struct.error and more
    # besides the usual errors, and every one of them means "not a tensor".
    except Exception as exc:  # noqa: BLE001
        raise RequestRejected(
            Rule.NOT_A_TENSOR,
            f"prompt_embeds_base64 could not be loaded as a tensor with "
            f"weights_only=True: {_first_line(exc)}",
        ) from None
    return _require_dense(loaded)


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """The gist of a torch error for the client, without the terminal colour
    codes torch puts in its weights_only messages."""
    text = _TERMINAL_CODES.sub("", str(exc)).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _require_dense(loaded: object) -> torch.Tensor:
    if not isinstance(loaded, torch.Tensor):
        raise RequestRejected(
            Rule.NOT_A_TENSOR,
            f"prompt_embeds_base64 holds a pickled {type(loaded).__name__}, not a tensor",
        )
    if loaded.layout != torch.strided:
        raise RequestRejected(
            Rule.NOT_DENSE,
            f"prompt_embeds must be a dense tensor, got layout {loaded.layout} "
            f"(sparse tensors are never densified)",
        )
    if loaded.is_nested:
        raise RequestRejected(Rule.NOT_DENSE, "prompt_embeds must be a dense tensor, got a nested tensor")
    if loaded.device.type != "cpu":  # map_location moved every storage: no data was saved
        raise RequestRejected(
            Rule.NOT_A_TENSOR,
            f"prompt_embeds_base64 holds a {loaded.device.type} tensor, which has no values",
        )
    if loaded.is_quantized:
        raise RequestRejected(
            Rule.BAD_DTYPE, f"prompt_embeds must be floating point, got quantized {loaded.dtype}"
        )
    _require_stored(loaded)
    return loaded


def _require_stored(tensor: torch.Tensor) -> None:
    """Refuse views that claim more elements than their storage holds
    (stride 0, overlapping rows): a few bytes could otherwise declare a
    tensor of gigabytes that the cast and the finiteness check materialize."""
    needed = tensor.numel() * tensor.element_size()
    stored = tensor.untyped_storage().nbytes()
    if needed > stored:
        raise RequestRejected(
            Rule.NOT_DENSE,
            f"prompt_embeds must be a dense tensor, got a view of {stored} stored bytes "
            f"spanning {needed} bytes (shape {list(tensor.shape)}, strides {list(tensor.stride())})",
        )


def decode_base64_embeds(encoded: bytes | str, limits: EmbedsLimits) -> torch.Tensor:
    """Rules 2-4: size gate before decoding, strict base64, safe load."""
    check_encoded_size(encoded, limits)
    return deserialize(strict_b64decode(encoded))


def validate_embeds(tensor: torch.Tensor, limits: EmbedsLimits) -> torch.Tensor:
    """Rules 5-7: shape, dtype, finiteness. Returns a contiguous (S, H) tensor
    in the engine's dtype."""
    tensor = _check_shape(tensor, limits.hidden_size)
    if tensor.dtype not in ACCEPTED_DTYPES:
        raise RequestRejected(
            Rule.BAD_DTYPE,
            f"prompt_embeds dtype {_dtype_name(tensor.dtype)} is not accepted; use "
            f"float32, float16, bfloat16 or float64",
        )
    # A plain tensor for the engine: detach drops the autograd state of a saved
    # Parameter or requires_grad tensor, resolve_neg the lazy negation bit of a
    # saved torch._neg_view, which vLLM's tensor serialization refuses.
    tensor = tensor.detach().resolve_neg().to(limits.dtype).contiguous()
    # Checked after the cast, so values that overflow the engine dtype count too.
    if not all_finite(tensor):
        raise RequestRejected(Rule.NOT_FINITE, _non_finite_message(tensor, limits.dtype))
    return tensor


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite, in one reduction pass for valid input.

    NaN and infinity propagate through addition, so a finite sum proves every
    term finite: about 30x cheaper than an elementwise mask on a 512x4096
    tensor. A non-finite sum is either bad input or finite values whose sum
    overflowed; the elementwise check tells them apart. float16 values are
    summed in float32, where their sums cannot overflow; bfloat16 has
    float32's range and is summed in float32 too."""
    accumulate = torch.float32 if tensor.dtype in (torch.float16, torch.bfloat16) else None
    if bool(torch.isfinite(tensor.sum(dtype=accumulate))):
        return True
    return bool(torch.isfinite(tensor).all())


def _check_shape(tensor: torch.Tensor, hidden_size: int) -> torch.Tensor:
    shape = tuple(tensor.shape)
    if tensor.dim() == 3 and shape[0] == 1:
        tensor = tensor.squeeze(0)
    elif tensor.dim() != 2:
        raise RequestRejected(
            Rule.BAD_SHAPE,
            f"prompt_embeds must have shape (seq_len, hidden) or (1, seq_len, hidden), got {list(shape)}",
        )
    seq_len, hidden = tensor.shape
    if seq_len < 1:
        raise RequestRejected(Rule.BAD_SHAPE, f"prompt_embeds has no rows: shape {list(shape)}")
    if hidden != hidden_size:
        raise RequestRejected(
            Rule.HIDDEN_SIZE,
            f"prompt_embeds hidden size {hidden} does not match the model's hidden "
            f"size {hidden_size} (shape {list(shape)})",
        )
    return tensor


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _non_finite_message(tensor: torch.Tensor, dtype: torch.dtype) -> str:
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    return (
        f"prompt_embeds must be finite: {nan} NaN and {inf} infinite values "
        f"(after conversion to the engine dtype {_dtype_name(dtype)})"
    )


def tensor_from_numpy(array: np.ndarray) -> torch.Tensor:
    """Wrap a Triton input array without copying; integer and bool arrays are
    wrapped too so the dtype rule reports them."""
    if array.dtype == np.object_:
        raise RequestRejected(Rule.BAD_DTYPE, "prompt_embeds must be a numeric tensor, got BYTES")
    return torch.from_numpy(array)
