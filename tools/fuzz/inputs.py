"""The fuzzer's inputs: a seed corpus made in code (torch.save payloads of
many shapes, dtypes, values and layouts, sparse tensors, pickled
non-tensors, numpy files) and mutators that know the layers a payload goes
through (base64 text, zip container, pickle opcodes, bytes)."""

from __future__ import annotations

import base64
import collections
import copyreg
import pickle
import pickletools
import random
import re
import struct
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..payloads import npy_bytes, npz_bytes, plain_zip, saved, zip_members
from .oracle import HIDDEN, STR_MODE, TEXT_MODE, CallsCanary, make_input

MAX_INPUT = 64 * 1024


# -- seeds: tensors ----------------------------------------------------------------
SPECIAL_VALUES = (float("nan"), float("inf"), float("-inf"), 1e6, 65504.0, 65520.0, -0.0, 1e-45, 1e39)
VIEWS = (
    "plain",
    "transposed",
    "every_other_row",
    "expanded",
    "overlapping",
    "negated",
    "parameter",
    "requires_grad",
    "meta",
    "nested",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "quantized",
)
SAVE_DTYPES = (
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.float8_e4m3fn,
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


def other_payloads() -> list[bytes]:
    good = make_tensor(TensorSpec((4, HIDDEN), torch.float32))
    out_of_range = torch.tensor([[0, 50_000], [0, 7]])
    return [
        saved({"embeds": good}),
        saved([good, good]),
        saved((good,)),
        saved(42),
        saved("x" * 120),
        saved(None),
        saved(b"\x00" * 120),
        saved({1, 2, 3}),
        saved(complex(1, 2)),
        saved(collections.OrderedDict(a=good)),
        saved(torch.Size([4, HIDDEN])),
        saved(torch.device("cpu")),
        saved(CallsCanary()),
        saved(torch.nn.Linear(2, 2)),
        saved(LegacySparse(out_of_range, torch.tensor([1.0, 2.0]), (4, HIDDEN))),
        saved(good, pickle_protocol=4),
        saved(good, _use_new_zipfile_serialization=False),
        saved(
            torch.sparse_coo_tensor(
                out_of_range, torch.tensor([1.0, 2.0]), (4, HIDDEN), check_invariants=False
            )
        ),
        npy_bytes(good.numpy()),
        npz_bytes(embeds=good.numpy()),
        plain_zip({"archive/data.pkl": pickle.dumps(good.tolist()), "archive/version": b"3\n"}),
        bytes(random.Random(1).randbytes(512)),
    ]


def tensor_specs() -> list[TensorSpec]:
    shapes = [
        (4, HIDDEN),
        (1, HIDDEN),
        (1, 4, HIDDEN),
        (64, HIDDEN),
        (0, HIDDEN),
        (4, 0),
        (4, HIDDEN + 1),
        (HIDDEN,),
        (),
        (2, 4, HIDDEN),
        (1, 1, 4, HIDDEN),
    ]
    specs = [TensorSpec(shape, torch.float32, seed=i) for i, shape in enumerate(shapes)]
    specs += [TensorSpec((4, HIDDEN), dtype) for dtype in SAVE_DTYPES]
    specs += [
        TensorSpec((3, HIDDEN), dtype, (value,))
        for value in SPECIAL_VALUES
        for dtype in (torch.float32, torch.float64, torch.float16)
    ]
    specs += [
        TensorSpec((4, HIDDEN), dtype, view=view)
        for view in VIEWS
        for dtype in (torch.float32, torch.float16)
    ]
    return specs


def seed_inputs() -> list[bytes]:
    """The starting corpus, made in code: every payload once, the engine
    dtypes taking turns, and every fifth one's base64 text as a text-mode
    input."""
    payloads = [saved(make_tensor(spec)) for spec in tensor_specs()] + other_payloads()
    inputs = [make_input(index % 3, payload) for index, payload in enumerate(payloads)]
    inputs += [
        make_input(TEXT_MODE | (index % 2) * STR_MODE, base64.b64encode(payload))
        for index, payload in enumerate(payloads[::5])
    ]
    return inputs


# -- mutators: bytes ---------------------------------------------------------------------
INTERESTING_INTS = (
    0,
    1,
    2,
    3,
    -1,
    HIDDEN - 1,
    HIDDEN,
    HIDDEN + 1,
    64,
    127,
    128,
    255,
    256,
    4096,
    65535,
    65536,
    2**24,
    2**31 - 1,
    -(2**31),
    2**32 - 1,
    2**32,
    2**40,
    2**62,
    2**63 - 1,
    -(2**63),
    2**64,
)


def flip_bit(body: bytes, rng: random.Random) -> bytes:
    if not body:
        return bytes([rng.randrange(256)])
    index = rng.randrange(len(body))
    return body[:index] + bytes([body[index] ^ (1 << rng.randrange(8))]) + body[index + 1 :]


def set_byte(body: bytes, rng: random.Random) -> bytes:
    index = rng.randrange(len(body) + 1)
    value = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    return body[:index] + bytes([value]) + body[index + 1 :]


def set_int_field(body: bytes, rng: random.Random) -> bytes:
    """An interesting little-endian integer over 2, 4 or 8 bytes: zip sizes
    and offsets, pickle integer arguments."""
    width = rng.choice((2, 4, 8))
    value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
    index = rng.randrange(max(1, len(body) - width + 1))
    return body[:index] + value.to_bytes(width, "little") + body[index + width :]


def insert_bytes(body: bytes, rng: random.Random) -> bytes:
    index = rng.randrange(len(body) + 1)
    chunk = rng.choice((rng.randbytes(rng.randint(1, 16)), body[index : index + rng.randint(1, 64)]))
    return body[:index] + chunk + body[index:]


def delete_range(body: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(body) + 1)
    return body[:start] + body[start + rng.randint(1, 64) :]


def truncate(body: bytes, rng: random.Random) -> bytes:
    return body[: rng.randrange(len(body) + 1)]


BYTE_MUTATORS = (flip_bit, set_byte, set_int_field, insert_bytes, delete_range, truncate)


# -- mutators: zip container ----------------------------------------------------------------
_CENTRAL = (b"PK\x01\x02", {4: 2, 6: 2, 8: 2, 10: 2, 16: 4, 20: 4, 24: 4, 28: 2, 30: 2, 36: 2, 38: 4, 42: 4})
_LOCAL = (b"PK\x03\x04", {4: 2, 6: 2, 8: 2, 14: 4, 18: 4, 22: 4, 26: 2, 28: 2})
_END = (b"PK\x05\x06", {8: 2, 10: 2, 12: 4, 16: 4, 20: 2})
FLAG_VALUES = (0x01, 0x08, 0x20, 0x40, 0x800, 0x2000, 0xFFFF)
# External attributes: MS-DOS directory, archive, read-only; a Unix directory
# and a symlink in the high half.
ATTRIBUTE_VALUES = (0x10, 0x20, 0x01, 0x41ED_0010, 0xA1FF_0000, 0xFFFF_FFFF)


def tamper_header(body: bytes, rng: random.Random) -> bytes:
    """Rewrite one field of a zip record (versions, flags, method, CRC,
    sizes, name/extra lengths, attributes, offsets) without touching the rest."""
    signature, fields = rng.choice((_CENTRAL, _LOCAL, _END))
    positions = [m.start() for m in re.finditer(re.escape(signature), body)]
    if not positions:
        return flip_bit(body, rng)
    start = rng.choice(positions)
    offset, width = rng.choice(list(fields.items()))
    is_flags = (signature, offset) in ((_CENTRAL[0], 8), (_LOCAL[0], 6))
    is_attributes = (signature, offset) == (_CENTRAL[0], 38)
    values = FLAG_VALUES if is_flags else ATTRIBUTE_VALUES if is_attributes else INTERESTING_INTS
    value = rng.choice(values) % (1 << (8 * width))
    at = start + offset
    return body[:at] + value.to_bytes(width, "little") + body[at + width :]


def read_members(body: bytes) -> list[tuple[str, bytes]] | None:
    """(name, content) of every member, or None when zipfile cannot read them."""
    try:
        return zip_members(body)
    except Exception:  # noqa: BLE001 - any unreadable archive just is not rezipped
        return None


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
    return rng.choice(
        (
            f"{folder}/x{base}",
            f"other/{base}",
            base,
            f"{folder}/{folder}/{base}",
            f"{name}.npy",
            f"{folder}/data.pkl",
            f"../{name}",
            f"{folder}/data/{rng.randrange(3)}",
        )
    )


def mutate_zip(body: bytes, rng: random.Random) -> bytes:
    """Rewrite the archive with one member's content, the member list or the
    compression changed; unreadable archives get a header field changed."""
    members = read_members(body)
    if not members:
        return tamper_header(body, rng)
    action = rng.random()
    if action < 0.6:
        return plain_zip(mutate_member(members, rng))
    if action < 0.9:
        return plain_zip(reshape_members(members, rng))
    return plain_zip(members, rng.choice((zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2)))


# -- mutators: pickle ------------------------------------------------------------------
GLOBALS = (
    "torch._utils\n_rebuild_tensor_v2",
    "torch._utils\n_rebuild_tensor_v3",
    "torch._utils\n_rebuild_tensor",
    "torch._utils\n_rebuild_parameter",
    "torch._utils\n_rebuild_parameter_with_state",
    "torch._utils\n_rebuild_qtensor",
    "torch._utils\n_rebuild_sparse_tensor",
    "torch._utils\n_rebuild_meta_tensor_no_storage",
    "torch._utils\n_rebuild_nested_tensor",
    "torch._utils\n_rebuild_wrapper_subclass",
    "torch._utils\n_rebuild_device_tensor_from_cpu_tensor",
    "torch._tensor\n_rebuild_from_type_v2",
    "torch\nFloatStorage",
    "torch\nHalfStorage",
    "torch\nBFloat16Storage",
    "torch\nDoubleStorage",
    "torch\nLongStorage",
    "torch\nBoolStorage",
    "torch\nComplexFloatStorage",
    "torch\nQInt8Storage",
    "torch.sparse\nFloatTensor",
    "torch\nFloatTensor",
    "torch\nTensor",
    "torch\nSize",
    "torch\ndevice",
    "torch\nfloat32",
    "torch\nint64",
    "torch.serialization\n_get_layout",
    "collections\nOrderedDict",
    "builtins\nset",
    "builtins\nbytearray",
    "builtins\ncomplex",
    "_codecs\nencode",
    "torch.nn.parameter\nParameter",
    f"{__name__}\ncanary",
)
STRINGS = (
    "storage",
    "cpu",
    "meta",
    "cuda:0",
    "0",
    "1",
    "2",
    "torch.sparse_coo",
    "torch.strided",
    "torch.sparse_csr",
    "latin1",
    "",
    "x" * 300,
    "\udcff",
)


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
        return encode_int(rng.choice((*INTERESTING_INTS, arg + 1, arg - 1, arg * 2)))
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
        return b"".join(text[i : i + 76] + b"\n" for i in range(0, len(text), 76))
    index = rng.randrange(len(text) + 1)
    return text[:index] + rng.choice(BAD_BASE64) + text[index:]


# -- whole inputs -----------------------------------------------------------------------------
def mutate(data: bytes, rng: random.Random, donors: Sequence[bytes] = ()) -> bytes:
    """One to three stacked mutations of an input, capped at MAX_INPUT bytes."""
    control, body = (data[0], data[1:]) if data else (0, b"")
    for _ in range(rng.randint(1, 3)):
        control, body = _mutate_once(control, body, rng, donors)
    return make_input(control, body[:MAX_INPUT])


def _mutate_once(control: int, body: bytes, rng: random.Random, donors: Sequence[bytes]) -> tuple[int, bytes]:
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
        return control, body[:cut] + donor[rng.randrange(len(donor) + 1) :]
    if roll < 0.6:
        return control, mutate_zip(body, rng)
    if roll < 0.75:
        return control, tamper_header(body, rng)
    return control, rng.choice(BYTE_MUTATORS)(body, rng)
