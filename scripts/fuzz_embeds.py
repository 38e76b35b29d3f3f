#!/usr/bin/env python3
"""Long-run fuzzer for the prompt-embeds decoder and validator.

Every input must end one of two ways: `validate_embeds` returns a plain,
dense, finite (seq_len, hidden) tensor in the engine dtype, or a
`RequestRejected` names the rule it broke. Anything else is a finding:

- crash: another exception escaped, or a contract check failed (a tensor
  that is not dense, finite, right-sized and plain was accepted; a sparse
  payload got past the pre-load pickle scan; pickled code ran);
- hang: one execution used more than --hang-seconds of CPU time, or a
  worker was stuck in one execution for 10 times that (30 s at least) of
  wall time and was killed;
- allocation: a worker's peak RSS grew by more than --rss-bound-mib, or an
  allocation hit the per-worker memory cap (a payload of a few KiB must
  never cost gigabytes).

Inputs are one control byte (engine dtype; whether the body is the base64
text itself) and a body. The seed corpus is generated here from torch.save
payloads of many shapes, dtypes, values and memory layouts, sparse tensors,
pickled non-tensors and numpy files; the mutators know the layers a payload
goes through (base64 text, zip container, pickle opcodes, bytes).

Engines: `mutation` (default) spreads a seeded mutation loop over --workers
processes and keeps inputs with new outcomes as further seeds; `atheris`
(optional, `pip install atheris`) runs libFuzzer's coverage-guided loop in one
process with the same mutators, and prints libFuzzer's own statistics.

Findings are saved under --findings-dir (git-ignored) as the input (.bin)
and a report (.txt); `--replay FILE.bin` runs one saved input again. The
exit status is 1 when there are findings.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copyreg
import hashlib
import inspect
import io
import multiprocessing as mp
import os
import pickle
import pickletools
import random
import re
import resource
import signal
import struct
import sys
import time
import traceback
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from embeds_backend.embeds import (
    EmbedsLimits,
    decode_base64_embeds,
    decoded_size,
    validate_embeds,
)
from embeds_backend.errors import RequestRejected

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FINDINGS_DIR = ROOT / "benchmark-results" / "fuzz-findings"
# A small hidden size keeps valid payloads (and so executions) small.
HIDDEN = 16
# Small enough that mutated inputs stay cheap, large enough for every seed.
MAX_BYTES = 256 * 1024
MAX_INPUT = 64 * 1024
MAX_CORPUS = 4000
DEFAULT_EXECUTIONS = 100_000
UNLIMITED = 2**62  # executions when only --seconds bounds the run
MAX_RESTARTS = 5  # per worker: an input that kills every worker still ends the run
# Picked by the control byte's two low bits; float32, the common case, twice.
ENGINE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float32)
TEXT_MODE = 0x04  # the body is the base64 text itself, not the payload
STR_MODE = 0x08  # in text mode: pass a str (as the tests do) instead of bytes
DECODE_RULES = frozenset({
    "embeds_too_small", "embeds_too_large", "bad_base64", "not_a_tensor",
    "not_dense", "bad_dtype", "bad_shape", "hidden_size", "not_finite",
})
SMALLEST_ACCEPTED_ITEMSIZE = 2  # fp16 / bf16


class ContractViolation(AssertionError):
    """An input was handled in a way the contract does not allow."""


# -- instrumentation ---------------------------------------------------------
class SparseLoadProbe:
    """Counts sparse tensors that torch.load builds.

    embeds.py refuses sparse payloads by scanning the pickle before
    torch.load, because torch's own invariant check is not safe under
    concurrency; a sparse tensor built by torch.load means the scan was
    bypassed. torch queues every sparse tensor it builds in
    `_sparse_tensors_to_validate` and empties it in
    `_validate_loaded_sparse_tensors` (only reached when unpickling
    succeeds), so both are watched."""

    def __init__(self) -> None:
        self.count = 0
        self._validate = torch._utils._validate_loaded_sparse_tensors
        torch._utils._validate_loaded_sparse_tensors = self._count_then_validate

    def _count_then_validate(self) -> None:
        self.count += len(torch._utils._sparse_tensors_to_validate)
        self._validate()

    def take(self) -> int:
        """Sparse tensors built since the last call."""
        pending = torch._utils._sparse_tensors_to_validate
        count, self.count = self.count + len(pending), 0
        pending.clear()
        return count


_PROBE: SparseLoadProbe | None = None
CANARY_CALLS: list[str] = []


def sparse_probe() -> SparseLoadProbe:
    global _PROBE
    if _PROBE is None:
        _PROBE = SparseLoadProbe()
    return _PROBE


def canary() -> str:
    """Called only if a pickle managed to run code: the weights_only
    unpickler must never import and call this."""
    CANARY_CALLS.append("called")
    return "canary"


class _CallsCanary:
    def __reduce__(self) -> tuple:
        return (canary, ())


# -- the contract --------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """How an input ended: "accepted" with the tensor, or the rule and message."""

    rule: str
    message: str = ""
    tensor: torch.Tensor | None = None


def limits_for(dtype: torch.dtype) -> EmbedsLimits:
    return EmbedsLimits(hidden_size=HIDDEN, dtype=dtype, max_bytes=MAX_BYTES)


def check_base64_contract(encoded: bytes | str, limits: EmbedsLimits) -> Outcome:
    """Decode and validate as the model does. Contract breaches raise
    ContractViolation; an unexpected exception escapes as it is (also a
    finding)."""
    probe, canary_calls = sparse_probe(), len(CANARY_CALLS)
    probe.take()
    try:
        outcome = _decode_and_validate(encoded, limits)
    finally:
        if len(CANARY_CALLS) != canary_calls:
            raise ContractViolation("a pickle in the payload ran code")
    if probe.take():
        raise ContractViolation(f"a sparse payload reached torch.load ({outcome.rule}: {outcome.message})")
    return outcome


def _decode_and_validate(encoded: bytes | str, limits: EmbedsLimits) -> Outcome:
    try:
        tensor = validate_embeds(decode_base64_embeds(encoded, limits), limits)
    except RequestRejected as exc:
        return checked_rejection(exc)
    check_accepted(tensor, limits, payload_bytes=decoded_size(encoded))
    return Outcome("accepted", tensor=tensor)


def check_tensor_contract(tensor: torch.Tensor, limits: EmbedsLimits) -> Outcome:
    """The raw-tensor input path: validate_embeds alone."""
    try:
        out = validate_embeds(tensor, limits)
    except RequestRejected as exc:
        return checked_rejection(exc)
    check_accepted(out, limits, payload_bytes=None)
    return Outcome("accepted", tensor=out)


def checked_rejection(exc: RequestRejected) -> Outcome:
    if exc.rule not in DECODE_RULES:
        raise ContractViolation(f"unknown rule {exc.rule!r}: {exc.message}")
    if not exc.message.strip():
        raise ContractViolation(f"rule {exc.rule} came with an empty message")
    return Outcome(exc.rule, exc.message)


def check_accepted(tensor: torch.Tensor, limits: EmbedsLimits, payload_bytes: int | None) -> None:
    """What the engine may be handed: a plain CPU tensor, dense and
    contiguous, (S >= 1, hidden) in the engine dtype, every value finite."""
    if type(tensor) is not torch.Tensor:
        raise ContractViolation(f"accepted a {type(tensor).__name__}, not a plain tensor")
    problems = [text for bad, text in (
        (tensor.layout != torch.strided or tensor.is_nested, f"layout {tensor.layout}"),
        (tensor.device.type != "cpu", f"device {tensor.device}"),
        (tensor.dtype != limits.dtype, f"dtype {tensor.dtype}"),
        (tensor.dim() != 2 or tensor.shape[0] < 1 or tensor.shape[-1] != limits.hidden_size,
         f"shape {list(tensor.shape)}"),
        (not tensor.is_contiguous(), f"strides {tensor.stride()}"),
        (tensor.requires_grad, "requires_grad"),
        (tensor.is_neg() or tensor.is_conj(), "a lazy negation/conjugation bit"),
    ) if bad]
    if not problems and not bool(torch.isfinite(tensor).all()):
        problems.append("non-finite values")
    # Each accepted element needs at least two payload bytes: more elements
    # than that means a small payload was expanded into a large tensor.
    if payload_bytes is not None and tensor.numel() * SMALLEST_ACCEPTED_ITEMSIZE > payload_bytes:
        problems.append(f"{tensor.numel()} elements from a {payload_bytes}-byte payload")
    if problems:
        raise ContractViolation("accepted a tensor with " + ", ".join(problems))


# -- inputs ----------------------------------------------------------------------
def make_input(control: int, body: bytes) -> bytes:
    return bytes([control & 0xFF]) + body


def split_input(data: bytes) -> tuple[EmbedsLimits, bytes | str]:
    """Control byte + body -> (limits, what the model receives)."""
    control, body = (data[0], data[1:]) if data else (0, b"")
    limits = limits_for(ENGINE_DTYPES[control & 0x03])
    if not control & TEXT_MODE:
        return limits, base64.b64encode(body)
    return limits, body.decode("latin-1") if control & STR_MODE else body


def execute(data: bytes) -> Outcome:
    limits, encoded = split_input(data)
    return check_base64_contract(encoded, limits)


# -- seeds: tensors ----------------------------------------------------------------
SPECIAL_VALUES = (float("nan"), float("inf"), float("-inf"), 1e6, 65504.0, 65520.0, -0.0, 1e-45, 1e39)
VIEWS = (
    "plain", "transposed", "every_other_row", "expanded", "overlapping", "negated",
    "parameter", "requires_grad", "meta", "nested", "sparse_coo", "sparse_csr",
    "sparse_csc", "sparse_bsr", "quantized",
)
SAVE_DTYPES = (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8,
    torch.uint8, torch.bool, torch.complex64, torch.float8_e4m3fn,
)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to build: values from `seed`, `special` values planted at the
    start, then laid out in memory as `view` says."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    special: tuple[float, ...] = ()
    view: str = "plain"
    seed: int = 0


def make_values(spec: TensorSpec) -> torch.Tensor:
    generator = torch.Generator().manual_seed(spec.seed)
    values = torch.randn(spec.shape, generator=generator, dtype=torch.float64) * 3
    flat = values.view(-1)
    for index, value in enumerate(spec.special[: flat.numel()]):
        flat[index] = value
    if spec.dtype == torch.bool:
        return values > 0
    if not (spec.dtype.is_floating_point or spec.dtype.is_complex):
        return values.nan_to_num(0.0, 0.0, 0.0).clamp(-100, 100).to(spec.dtype)
    return values.to(spec.dtype)


def make_tensor(spec: TensorSpec) -> torch.Tensor:
    """The tensor `spec` describes; views that do not apply to its shape or
    dtype fall back to the plain tensor."""
    base = make_values(spec)
    build = _VIEW_BUILDERS.get(spec.view, lambda t: t)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nested and quantized tensors warn on creation
            return build(base)
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError):
        return base


def _every_other_row(base: torch.Tensor) -> torch.Tensor:
    doubled = torch.zeros((base.shape[0] * 2, *base.shape[1:]), dtype=base.dtype)
    doubled[::2] = base
    return doubled[::2]


def _overlapping(base: torch.Tensor) -> torch.Tensor:
    """Rows that share memory: row i starts one element after row i-1."""
    rows, cols = base.shape
    flat = base.reshape(-1)[: rows + cols - 1].clone()
    return torch.as_strided(flat, (rows, cols), (1, 1))


_VIEW_BUILDERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "transposed": lambda t: t.mT.contiguous().mT,
    "every_other_row": _every_other_row,
    "expanded": lambda t: t[:1].clone().expand(t.shape),  # one stored row, stride 0
    "overlapping": _overlapping,
    "negated": lambda t: torch._neg_view(t),
    "parameter": lambda t: torch.nn.Parameter(t, requires_grad=t.is_floating_point()),
    "requires_grad": lambda t: t.clone().requires_grad_(),
    "meta": lambda t: torch.empty(t.shape, dtype=t.dtype, device="meta"),
    "nested": lambda t: torch.nested.nested_tensor([t, t]),
    "sparse_coo": lambda t: t.to_sparse(),
    "sparse_csr": lambda t: t.to_sparse_csr(),
    "sparse_csc": lambda t: t.to_sparse_csc(),
    "sparse_bsr": lambda t: t.to_sparse_bsr((1, 1)),
    "quantized": lambda t: torch.quantize_per_tensor(t.float(), 0.1, 0, torch.qint8),
}


def saved(obj: object, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


# -- seeds: other payloads -------------------------------------------------------------
class LegacySparse:
    """Pickles as NEWOBJ of a legacy sparse tensor class (torch.sparse.FloatTensor):
    a sparse tensor built without any `_rebuild_sparse_*` function."""

    def __init__(self, indices: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> None:
        self.args = (indices, values, torch.Size(size))

    @property  # the pickler checks that obj.__class__ is the class NEWOBJ builds
    def __class__(self) -> type:
        return torch.sparse.FloatTensor

    def __reduce_ex__(self, protocol: int) -> tuple:
        return (copyreg.__newobj__, (torch.sparse.FloatTensor, *self.args))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def plain_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def other_payloads() -> list[bytes]:
    good = make_tensor(TensorSpec((4, HIDDEN), torch.float32))
    out_of_range = torch.tensor([[0, 50_000], [0, 7]])
    return [
        saved({"embeds": good}), saved([good, good]), saved((good,)), saved(42), saved("x" * 120),
        saved(None), saved(b"\x00" * 120), saved({1, 2, 3}), saved(complex(1, 2)),
        saved(collections.OrderedDict(a=good)), saved(torch.Size([4, HIDDEN])),
        saved(torch.device("cpu")), saved(_CallsCanary()), saved(torch.nn.Linear(2, 2)),
        saved(LegacySparse(out_of_range, torch.tensor([1.0, 2.0]), (4, HIDDEN))),
        saved(good, pickle_protocol=4), saved(good, _use_new_zipfile_serialization=False),
        saved(torch.sparse_coo_tensor(out_of_range, torch.tensor([1.0, 2.0]), (4, HIDDEN),
                                      check_invariants=False)),
        npy_bytes(good.numpy()), npz_bytes(embeds=good.numpy()),
        plain_zip({"archive/data.pkl": pickle.dumps(good.tolist()), "archive/version": b"3\n"}),
        bytes(random.Random(1).randbytes(512)),
    ]


def tensor_specs() -> list[TensorSpec]:
    shapes = [(4, HIDDEN), (1, HIDDEN), (1, 4, HIDDEN), (64, HIDDEN), (0, HIDDEN), (4, 0),
              (4, HIDDEN + 1), (HIDDEN,), (), (2, 4, HIDDEN), (1, 1, 4, HIDDEN)]
    specs = [TensorSpec(shape, torch.float32, seed=i) for i, shape in enumerate(shapes)]
    specs += [TensorSpec((4, HIDDEN), dtype) for dtype in SAVE_DTYPES]
    specs += [TensorSpec((3, HIDDEN), dtype, (value,)) for value in SPECIAL_VALUES
              for dtype in (torch.float32, torch.float64, torch.float16)]
    specs += [TensorSpec((4, HIDDEN), dtype, view=view) for view in VIEWS
              for dtype in (torch.float32, torch.float16)]
    return specs


def seed_inputs() -> list[bytes]:
    """The starting corpus, made in code: every payload once, the engine
    dtypes taking turns, and every fifth one's base64 text as a text-mode
    input."""
    payloads = [saved(make_tensor(spec)) for spec in tensor_specs()] + other_payloads()
    inputs = [make_input(index % 3, payload) for index, payload in enumerate(payloads)]
    inputs += [make_input(TEXT_MODE | (index % 2) * STR_MODE, base64.b64encode(payload))
               for index, payload in enumerate(payloads[::5])]
    return inputs


# -- mutators: bytes ---------------------------------------------------------------------
INTERESTING_INTS = (0, 1, 2, 3, -1, HIDDEN - 1, HIDDEN, HIDDEN + 1, 64, 127, 128, 255, 256,
                    4096, 65535, 65536, 2**24, 2**31 - 1, -(2**31), 2**32 - 1, 2**32,
                    2**40, 2**62, 2**63 - 1, -(2**63), 2**64)


def flip_bit(body: bytes, rng: random.Random) -> bytes:
    if not body:
        return bytes([rng.randrange(256)])
    index = rng.randrange(len(body))
    return body[:index] + bytes([body[index] ^ (1 << rng.randrange(8))]) + body[index + 1:]


def set_byte(body: bytes, rng: random.Random) -> bytes:
    index = rng.randrange(len(body) + 1)
    value = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    return body[:index] + bytes([value]) + body[index + 1:]


def set_int_field(body: bytes, rng: random.Random) -> bytes:
    """An interesting little-endian integer over 2, 4 or 8 bytes: zip sizes
    and offsets, pickle integer arguments."""
    width = rng.choice((2, 4, 8))
    value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
    index = rng.randrange(max(1, len(body) - width + 1))
    return body[:index] + value.to_bytes(width, "little") + body[index + width:]


def insert_bytes(body: bytes, rng: random.Random) -> bytes:
    index = rng.randrange(len(body) + 1)
    chunk = rng.choice((rng.randbytes(rng.randint(1, 16)), body[index:index + rng.randint(1, 64)]))
    return body[:index] + chunk + body[index:]


def delete_range(body: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(body) + 1)
    return body[:start] + body[start + rng.randint(1, 64):]


def truncate(body: bytes, rng: random.Random) -> bytes:
    return body[: rng.randrange(len(body) + 1)]


BYTE_MUTATORS = (flip_bit, set_byte, set_int_field, insert_bytes, delete_range, truncate)


# -- mutators: zip container ----------------------------------------------------------------
_CENTRAL = (b"PK\x01\x02", {6: 2, 8: 2, 10: 2, 16: 4, 20: 4, 24: 4, 28: 2, 30: 2, 42: 4})
_LOCAL = (b"PK\x03\x04", {4: 2, 6: 2, 8: 2, 14: 4, 18: 4, 22: 4, 26: 2, 28: 2})
_END = (b"PK\x05\x06", {8: 2, 10: 2, 12: 4, 16: 4, 20: 2})
FLAG_VALUES = (0x01, 0x08, 0x20, 0x40, 0x800, 0x2000, 0xFFFF)


def tamper_header(body: bytes, rng: random.Random) -> bytes:
    """Rewrite one field of a zip record (version, flags, method, CRC,
    sizes, name/extra lengths, offsets) without touching the rest."""
    signature, fields = rng.choice((_CENTRAL, _LOCAL, _END))
    positions = [m.start() for m in re.finditer(re.escape(signature), body)]
    if not positions:
        return flip_bit(body, rng)
    start = rng.choice(positions)
    offset, width = rng.choice(list(fields.items()))
    is_flags = (signature, offset) in ((_CENTRAL[0], 8), (_LOCAL[0], 6))
    value = rng.choice(FLAG_VALUES if is_flags else INTERESTING_INTS) % (1 << (8 * width))
    at = start + offset
    return body[:at] + value.to_bytes(width, "little") + body[at + width:]


def read_members(body: bytes) -> list[tuple[str, bytes]] | None:
    """(name, content) of every member, or None when zipfile cannot read them."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            return [(info.filename, archive.read(info)) for info in archive.infolist()]
    except Exception:  # noqa: BLE001 - any unreadable archive just is not rezipped
        return None


def write_members(members: Sequence[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are intended
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, content in members:
                archive.writestr(name, content)
    return buffer.getvalue()


def _pick_member(members: list[tuple[str, bytes]], rng: random.Random) -> int:
    """Mostly data.pkl, where most of the logic is."""
    pickles = [i for i, (name, _) in enumerate(members) if name.endswith("data.pkl")]
    return rng.choice(pickles) if pickles and rng.random() < 0.6 else rng.randrange(len(members))


def mutate_member(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]]:
    """Change one member's content; the archive is rewritten with the right
    CRC, so the change reaches the pickle reader and torch.load."""
    index = _pick_member(members, rng)
    name, content = members[index]
    mutator = mutate_pickle if name.endswith(".pkl") and rng.random() < 0.7 else rng.choice(BYTE_MUTATORS)
    members[index] = (name, mutator(content, rng))
    return members


def reshape_members(members: list[tuple[str, bytes]], rng: random.Random) -> list[tuple[str, bytes]]:
    """Drop, duplicate, rename or reorder members."""
    index = _pick_member(members, rng)
    name, content = members[index]
    action = rng.randrange(5)
    if action == 0:
        del members[index]
    elif action == 1:
        members.insert(rng.randrange(len(members) + 1), (name, content))
    elif action == 2:
        members.insert(rng.randrange(len(members) + 1), (_variant_name(name, rng), content))
    elif action == 3:
        members[index] = (_variant_name(name, rng), content)
    else:
        rng.shuffle(members)
    return members


def _variant_name(name: str, rng: random.Random) -> str:
    folder, _, base = name.rpartition("/")
    return rng.choice((
        f"{folder}/x{base}", f"other/{base}", base, f"{folder}/{folder}/{base}",
        f"{name}.npy", f"{folder}/data.pkl", f"../{name}", f"{folder}/data/{rng.randrange(3)}",
    ))


def mutate_zip(body: bytes, rng: random.Random) -> bytes:
    """Rewrite the archive with one member's content, the member list or the
    compression changed; unreadable archives get a header field changed."""
    members = read_members(body)
    if not members:
        return tamper_header(body, rng)
    action = rng.random()
    if action < 0.6:
        return write_members(mutate_member(members, rng))
    if action < 0.9:
        return write_members(reshape_members(members, rng))
    return write_members(members, rng.choice((zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2)))


# -- mutators: pickle ------------------------------------------------------------------
GLOBALS = (
    "torch._utils\n_rebuild_tensor_v2", "torch._utils\n_rebuild_tensor_v3",
    "torch._utils\n_rebuild_tensor", "torch._utils\n_rebuild_parameter",
    "torch._utils\n_rebuild_parameter_with_state", "torch._utils\n_rebuild_qtensor",
    "torch._utils\n_rebuild_sparse_tensor", "torch._utils\n_rebuild_meta_tensor_no_storage",
    "torch._utils\n_rebuild_nested_tensor", "torch._utils\n_rebuild_wrapper_subclass",
    "torch._utils\n_rebuild_device_tensor_from_cpu_tensor", "torch._tensor\n_rebuild_from_type_v2",
    "torch\nFloatStorage", "torch\nHalfStorage", "torch\nBFloat16Storage", "torch\nDoubleStorage",
    "torch\nLongStorage", "torch\nBoolStorage", "torch\nComplexFloatStorage", "torch\nQInt8Storage",
    "torch.sparse\nFloatTensor", "torch\nFloatTensor", "torch\nTensor", "torch\nSize",
    "torch\ndevice", "torch\nfloat32", "torch\nint64", "torch.serialization\n_get_layout",
    "collections\nOrderedDict", "builtins\nset", "builtins\nbytearray", "builtins\ncomplex",
    "_codecs\nencode", "torch.nn.parameter\nParameter", f"{__name__}\ncanary",
)
STRINGS = ("storage", "cpu", "meta", "cuda:0", "0", "1", "2", "torch.sparse_coo", "torch.strided",
           "torch.sparse_csr", "latin1", "", "x" * 300, "\udcff")


def pickle_ops(pickled: bytes) -> list[tuple[str, Any, int, int]]:
    """(opcode name, argument, start, end) of each opcode pickletools can read."""
    ops: list[tuple[str, Any, int, int]] = []
    try:
        for opcode, arg, pos in pickletools.genops(pickled):
            if ops:
                ops[-1] = (*ops[-1][:3], pos)
            ops.append((opcode.name, arg, pos, len(pickled)))
    except Exception:  # noqa: BLE001 - a broken tail still leaves the ops before it
        pass
    return ops


def encode_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = pickle.encode_long(value)
    return b"\x8a" + bytes([len(data)]) + data


def encode_str(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def _replacement(name: str, arg: Any, rng: random.Random) -> bytes:
    if name == "GLOBAL":
        return b"c" + rng.choice(GLOBALS).encode() + b"\n"
    if isinstance(arg, int) and rng.random() < 0.8:
        return encode_int(rng.choice(INTERESTING_INTS + (arg + 1, arg - 1, arg * 2)))
    return encode_str(rng.choice(STRINGS))


def mutate_pickle(pickled: bytes, rng: random.Random) -> bytes:
    """Replace, delete, duplicate or move one opcode, keeping the rest
    readable: integers become boundary values, strings and globals come from
    dictionaries of what torch's unpickler knows."""
    ops = pickle_ops(pickled)
    if not ops:
        return rng.choice(BYTE_MUTATORS)(pickled, rng)
    name, arg, start, end = rng.choice(ops)
    action = rng.randrange(4)
    if action == 0:
        return pickled[:start] + _replacement(name, arg, rng) + pickled[end:]
    if action == 1:
        return pickled[:start] + pickled[end:]
    if action == 2:
        return pickled[:start] + pickled[start:end] * 2 + pickled[end:]
    _, _, other_start, _ = rng.choice(ops)
    moved = pickled[:start] + pickled[end:]
    at = min(other_start, len(moved))
    return moved[:at] + pickled[start:end] + moved[at:]


# -- mutators: base64 text ------------------------------------------------------------------
BAD_BASE64 = (b"-", b"_", b" ", b"\n", b"\r\n", b"\t", b"=", b"==", b"*", b"\x00", b"\xe9", b"\xff")


def corrupt_base64(text: bytes, rng: random.Random) -> bytes:
    """What clients get wrong: URL-safe alphabet, whitespace and line breaks,
    missing or extra padding, stray characters, truncation."""
    action = rng.randrange(6)
    if action == 0:
        return text.replace(b"+", b"-").replace(b"/", b"_")
    if action == 1:
        return text.rstrip(b"=")
    if action == 2:
        return text + rng.choice((b"=", b"==", b"A", b"AAAA", b"\n"))
    if action == 3:
        return text[: rng.randrange(len(text) + 1)]
    if action == 4:
        return b"".join(text[i:i + 76] + b"\n" for i in range(0, len(text), 76))
    index = rng.randrange(len(text) + 1)
    return text[:index] + rng.choice(BAD_BASE64) + text[index:]


# -- whole inputs -----------------------------------------------------------------------------
def mutate(data: bytes, rng: random.Random, donors: Sequence[bytes] = ()) -> bytes:
    """One to three stacked mutations of an input, capped at MAX_INPUT bytes."""
    control, body = (data[0], data[1:]) if data else (0, b"")
    for _ in range(rng.randint(1, 3)):
        control, body = _mutate_once(control, body, rng, donors)
    return make_input(control, body[:MAX_INPUT])


def _mutate_once(control: int, body: bytes, rng: random.Random,
                 donors: Sequence[bytes]) -> tuple[int, bytes]:
    roll = rng.random()
    if roll < 0.05:
        return control ^ (1 << rng.randrange(4)), body
    if control & TEXT_MODE:
        return control, corrupt_base64(body, rng) if roll < 0.6 else rng.choice(BYTE_MUTATORS)(body, rng)
    if roll < 0.12:
        return control | TEXT_MODE, corrupt_base64(base64.b64encode(body), rng)
    if roll < 0.17 and donors:
        donor = rng.choice(donors)[1:]
        cut = rng.randrange(len(body) + 1)
        return control, body[:cut] + donor[rng.randrange(len(donor) + 1):]
    if roll < 0.6:
        return control, mutate_zip(body, rng)
    if roll < 0.75:
        return control, tamper_header(body, rng)
    return control, rng.choice(BYTE_MUTATORS)(body, rng)


# -- findings ---------------------------------------------------------------------------------
@dataclass
class Finding:
    kind: str  # crash, hang or allocation
    key: str  # what makes two findings the same bug
    data: bytes
    report: str


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, dedup key) of an exception an execution raised."""
    text = f"{type(exc).__name__}: {exc}"
    kind = "allocation" if isinstance(exc, MemoryError) or "can't allocate memory" in text else "crash"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    summary = re.sub(r"\d+", "N", text.splitlines()[0] if text else "")[:120]
    return kind, f"{kind} {where} {summary}"


def run_one(data: bytes) -> tuple[str, Finding | None, float]:
    """Execute one input: (signature of its outcome, finding or None, CPU
    seconds). The signature is the rule and the shape of its message
    (numbers stripped): a new one is new behaviour worth mutating further.
    CPU time, not wall time, so that a loaded machine does not fake hangs."""
    started = time.process_time()
    try:
        outcome = execute(data)
        signature, finding = f"{outcome.rule} {re.sub(r'[0-9]+', 'N', outcome.message)[:90]}", None
    except Exception as exc:  # noqa: BLE001 - every escape is what we are looking for
        kind, key = classify(exc)
        signature, finding = kind, Finding(kind, key, data, "".join(traceback.format_exception(exc)))
    return signature, finding, time.process_time() - started


def save_finding(finding: Finding, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{finding.kind}-{hashlib.sha1(finding.data).hexdigest()[:12]}"
    stem.with_suffix(".bin").write_bytes(finding.data)
    stem.with_suffix(".txt").write_text(f"{finding.key}\n\n{finding.report}\ninput: {finding.data[:200]!r}\n")
    return stem.with_suffix(".bin")


# -- the mutation engine ----------------------------------------------------------------------
@dataclass
class Shared:
    """What workers and the parent share, without locks (one writer each)."""

    executions: Any  # RawArray('q'): executions per worker
    peak_rss_kib: Any  # RawArray('q'): ru_maxrss per worker
    busy_since: Any  # RawArray('d'): time.monotonic() at the start of the current execution, 0 when idle
    inputs: list[Any]  # RawArray('B') per worker: 4-byte length + the current input
    findings: Any  # Queue of Finding
    summaries: Any  # Queue of (worker, Counter of outcomes, slowest seconds)
    stop: Any  # Event


@dataclass(frozen=True)
class Options:
    executions: int
    seconds: float
    seed: int
    workers: int
    hang_seconds: float
    rss_bound_mib: int
    memory_cap_mib: int
    findings_dir: Path


def _publish_input(buffer: Any, data: bytes) -> None:
    view = memoryview(buffer).cast("B")
    view[:4] = len(data).to_bytes(4, "little")
    view[4:4 + len(data)] = data


def _published_input(buffer: Any) -> bytes:
    view = memoryview(buffer).cast("B")
    return bytes(view[4:4 + int.from_bytes(view[:4], "little")])


def _cap_memory(cap_mib: int) -> None:
    """Make an oversized allocation fail (and be reported) instead of
    exhausting the machine: RLIMIT_DATA bounds heap and anonymous mmaps."""
    status = Path("/proc/self/status").read_text()
    used_kib = int(re.search(r"VmData:\s+(\d+)", status).group(1))
    limit = used_kib * 1024 + cap_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))


def worker_main(index: int, generation: int, quota: int, deadline: float, options: Options,
                shared: Shared) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops workers through `stop`
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    rng = random.Random(f"{options.seed}/{index}/{generation}")
    corpus = seed_inputs()
    signatures = {run_one(data)[0] for data in corpus}
    _cap_memory(options.memory_cap_mib)
    FuzzLoop(index, quota, deadline, options, shared, rng, corpus, signatures).run()


class FuzzLoop:
    """One worker's loop: mutate, execute, classify, keep what is new."""

    def __init__(self, index: int, quota: int, deadline: float, options: Options, shared: Shared,
                 rng: random.Random, corpus: list[bytes], signatures: set[str]) -> None:
        self.index, self.quota, self.deadline, self.options, self.shared = index, quota, deadline, options, shared
        self.rng, self.corpus, self.signatures = rng, corpus, signatures
        self.seeds = list(corpus)
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.reported: set[str] = set()
        self.slowest = 0.0
        self.rss_baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run(self) -> None:
        done = 0
        while done < self.quota and time.monotonic() < self.deadline:
            if done % 256 == 0 and self.shared.stop.is_set():
                break
            self.step()
            done += 1
            self.shared.executions[self.index] += 1
        self.shared.peak_rss_kib[self.index] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.shared.summaries.put((self.index, self.outcomes, self.slowest))

    def step(self) -> None:
        # Half from the seeds: most new signatures are new ways to fail early,
        # and mutating only those would leave the deep checks unexercised.
        parents = self.seeds if self.rng.random() < 0.5 else self.corpus
        data = mutate(self.rng.choice(parents), self.rng, self.corpus)
        _publish_input(self.shared.inputs[self.index], data)
        self.shared.busy_since[self.index] = time.monotonic()
        signature, finding, seconds = run_one(data)
        self.shared.busy_since[self.index] = 0.0
        self.outcomes[signature.split(" ")[0]] += 1
        self.slowest = max(self.slowest, seconds)
        if finding is None and seconds > self.options.hang_seconds:
            finding = Finding("hang", f"hang {signature}", data, f"one execution took {seconds:.2f} s of CPU")
        self.check_rss(data)
        if finding is not None:
            self.report(finding)
        elif signature not in self.signatures and len(self.corpus) < MAX_CORPUS:
            self.signatures.add(signature)
            self.corpus.append(data)

    def check_rss(self, data: bytes) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.shared.peak_rss_kib[self.index] = peak
        grown = peak - self.rss_baseline
        if grown > self.options.rss_bound_mib * 1024:
            self.rss_baseline = peak  # report each further jump once
            self.report(Finding("allocation", f"allocation {len(data)}", data,
                                f"peak RSS grew by {grown // 1024} MiB during one execution"))

    def report(self, finding: Finding) -> None:
        if finding.key not in self.reported:
            self.reported.add(finding.key)
            self.shared.findings.put(finding)


class Campaign:
    """The parent: starts workers, restarts dead ones, watches for stuck
    executions, collects findings and prints progress."""

    def __init__(self, options: Options) -> None:
        self.options = options
        context = mp.get_context("fork")
        self.context = context
        count = options.workers
        self.shared = Shared(
            executions=context.RawArray("q", count), peak_rss_kib=context.RawArray("q", count),
            busy_since=context.RawArray("d", count),
            inputs=[context.RawArray("B", MAX_INPUT + 8) for _ in range(count)],
            findings=context.Queue(), summaries=context.Queue(), stop=context.Event(),
        )
        self.quotas = [options.executions // count + (i < options.executions % count) for i in range(count)]
        self.deadline = time.monotonic() + (options.seconds or float("inf"))
        self.generations = [0] * count
        self.processes: list[Any] = [None] * count
        self.findings: dict[str, Finding] = {}
        self.finding_count = collections.Counter[str]()
        self.summaries: dict[int, tuple[collections.Counter[str], float]] = {}
        self.retired: set[int] = set()

    def start(self, index: int) -> None:
        remaining = self.quotas[index] - self.shared.executions[index]
        self.processes[index] = self.context.Process(
            target=worker_main, daemon=True,
            args=(index, self.generations[index], remaining, self.deadline, self.options, self.shared))
        self.processes[index].start()

    def run(self, report_every: float) -> float:
        started = last_report = time.monotonic()
        for index in range(self.options.workers):
            self.start(index)
        while True:
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: let workers finish their execution
                print("stopping: waiting for workers", flush=True)
                self.shared.stop.set()
            alive = any(p.is_alive() for p in self.processes)
            self.drain_queues()
            self.watch_workers()  # after `alive`: a worker that died just now is still seen
            if not alive and not any(p.is_alive() for p in self.processes):
                break
            if time.monotonic() - last_report >= report_every:
                last_report = time.monotonic()
                self.print_progress(last_report - started)
        for process in self.processes:
            process.join()
        self.drain_queues()
        return time.monotonic() - started

    def watch_workers(self) -> None:
        """Save the input a worker was running when it died or got stuck
        (published in shared memory before each execution), then restart it."""
        now = time.monotonic()
        for index, process in enumerate(self.processes):
            busy = self.shared.busy_since[index]
            if process.is_alive() and busy and now - busy > max(10 * self.options.hang_seconds, 30):
                process.kill()
                process.join()
                self.restart(index, "hang", f"killed after {now - busy:.0f} s in one execution")
            elif process.exitcode not in (None, 0) and index not in self.retired:
                self.restart(index, "crash", f"worker died with exit code {process.exitcode}")

    def restart(self, index: int, kind: str, report: str) -> None:
        data = _published_input(self.shared.inputs[index])
        self.record(Finding(kind, f"{kind} worker {report.split(' ')[0]}", data, report))
        self.shared.busy_since[index] = 0.0
        self.generations[index] += 1
        if self.generations[index] <= MAX_RESTARTS and time.monotonic() < self.deadline \
                and not self.shared.stop.is_set():
            self.start(index)
        else:
            self.retired.add(index)

    def drain_queues(self) -> None:
        while not self.shared.findings.empty():
            self.record(self.shared.findings.get())
        while not self.shared.summaries.empty():
            index, outcomes, slowest = self.shared.summaries.get()
            previous, previous_slowest = self.summaries.get(index, (collections.Counter(), 0.0))
            self.summaries[index] = (previous + outcomes, max(slowest, previous_slowest))

    def record(self, finding: Finding) -> None:
        self.finding_count[finding.kind] += 1
        if finding.key not in self.findings:
            self.findings[finding.key] = finding
            path = save_finding(finding, self.options.findings_dir)
            print(f"FINDING {finding.key}\n  saved {path}", flush=True)

    @property
    def executions(self) -> int:
        return sum(self.shared.executions)

    def peak_rss_mib(self) -> float:
        return max(self.shared.peak_rss_kib) / 1024

    def print_progress(self, elapsed: float) -> None:
        print(f"[{elapsed:7.0f}s] executions {self.executions:,}  exec/s {self.executions / elapsed:,.0f}  "
              f"findings {len(self.findings)}  peak RSS {self.peak_rss_mib():.0f} MiB", flush=True)

    def print_summary(self, elapsed: float) -> None:
        outcomes = sum((counter for counter, _ in self.summaries.values()), collections.Counter())
        slowest = max((slow for _, slow in self.summaries.values()), default=0.0)
        total = max(1, sum(outcomes.values()))
        print(f"executions: {self.executions:,} in {elapsed:.1f} s")
        print(f"exec/s: {self.executions / elapsed:,.1f}")
        print("outcomes: " + ", ".join(f"{rule} {count / total:.1%}" for rule, count in outcomes.most_common()))
        print(f"findings: {len(self.findings)} unique "
              f"(crashes {self.finding_count['crash']}, hangs {self.finding_count['hang']}, "
              f"allocations {self.finding_count['allocation']})")
        print(f"slowest execution: {slowest:.3f} s of CPU")
        print(f"peak RSS: {self.peak_rss_mib():.0f} MiB (largest worker)")


# -- the atheris engine ----------------------------------------------------------------------
def run_atheris(options: Options) -> int:
    """libFuzzer's loop with coverage of embeds_backend, zipfile, pickletools
    and torch's loader; stops at the first finding (saved as crash-*/timeout-*
    under the findings directory) and prints its own statistics."""
    import atheris

    corpus_dir = options.findings_dir.parent / "fuzz-corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for data in seed_inputs():
        (corpus_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    _cap_memory(options.memory_cap_mib)
    for function in _functions_to_instrument():
        atheris.instrument_func(function)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        return mutate(data, random.Random(seed))[:max_size]

    argv = [sys.argv[0], str(corpus_dir), f"-seed={options.seed or 1}", f"-max_len={MAX_INPUT}",
            f"-timeout={max(1, int(options.hang_seconds))}", f"-rss_limit_mb={options.memory_cap_mib}",
            f"-artifact_prefix={options.findings_dir}/", "-print_final_stats=1",
            f"-runs={options.executions if options.executions < UNLIMITED else -1}"]
    if options.seconds:
        argv.append(f"-max_total_time={int(options.seconds)}")
    options.findings_dir.mkdir(parents=True, exist_ok=True)
    atheris.Setup(argv, execute, custom_mutator=mutator)
    atheris.Fuzz()
    return 0


def _functions_to_instrument() -> list[Callable[..., Any]]:
    """Functions and methods of the modules an input travels through.
    atheris.instrument_all() would take minutes on everything torch loads."""
    modules = (sys.modules[decode_base64_embeds.__module__], zipfile, pickletools,
               torch.serialization, torch._weights_only_unpickler, torch._utils)
    functions = []
    for module in modules:
        for value in vars(module).values():
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                functions.append(value)
            elif inspect.isclass(value) and value.__module__ == module.__name__:
                functions += [f for f in vars(value).values() if inspect.isfunction(f)]
    return functions


# -- command line ----------------------------------------------------------------------------
def replay(path: Path) -> int:
    data = path.read_bytes()
    started = time.perf_counter()
    try:
        outcome = execute(data)
    except Exception:  # noqa: BLE001 - the finding is what replay is for
        traceback.print_exc()
        return 1
    print(f"{outcome.rule} in {time.perf_counter() - started:.3f} s: {outcome.message}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=0,
                        help="total executions (0: no limit; 100000 when --seconds is not given either)")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: no limit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--engine", choices=("mutation", "atheris"), default="mutation")
    parser.add_argument("--hang-seconds", type=float, default=2.0)
    parser.add_argument("--rss-bound-mib", type=int, default=256,
                        help="peak RSS growth of a worker that counts as an unbounded allocation")
    parser.add_argument("--memory-cap-mib", type=int, default=2048,
                        help="allocations past this (per worker) fail and are reported")
    parser.add_argument("--report-every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--findings-dir", type=Path, default=DEFAULT_FINDINGS_DIR)
    parser.add_argument("--replay", type=Path, help="run one saved input and print what happened")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    if args.replay:
        return replay(args.replay)
    executions = args.executions or (0 if args.seconds else DEFAULT_EXECUTIONS)
    options = Options(executions or UNLIMITED, args.seconds, args.seed, max(1, args.workers), args.hang_seconds,
                      args.rss_bound_mib, args.memory_cap_mib, args.findings_dir)
    if args.engine == "atheris":
        return run_atheris(options)
    print(f"engine: mutation  workers: {options.workers}  seed: {options.seed}  "
          f"executions: {executions or 'unlimited'}  seconds: {options.seconds or 'unlimited'}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    campaign = Campaign(options)
    elapsed = campaign.run(args.report_every)
    campaign.print_summary(elapsed)
    return 1 if campaign.findings else 0


if __name__ == "__main__":
    sys.exit(main())
