"""What every fuzz input must end as, and the instruments that catch a
breach: a sparse tensor built by torch.load, pickled code that ran. Inputs
are one control byte (engine dtype; whether the body is the base64 text
itself) and a body."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import torch

from embeds_backend.contract import Rule
from embeds_backend.embeds import (
    EmbedsLimits,
    decode_base64_embeds,
    decoded_size,
    validate_embeds,
)
from embeds_backend.errors import RequestRejected

# A small hidden size keeps valid payloads (and so executions) small.
HIDDEN = 16
# Small enough that mutated inputs stay cheap, large enough for every seed.
MAX_BYTES = 256 * 1024
# Picked by the control byte's two low bits; float32, the common case, twice.
ENGINE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float32)
TEXT_MODE = 0x04  # the body is the base64 text itself, not the payload
STR_MODE = 0x08  # in text mode: pass a str (as the tests do) instead of bytes
# The rules decoding and validating a payload can end with.
DECODE_RULES = frozenset(
    {
        Rule.EMBEDS_TOO_SMALL,
        Rule.EMBEDS_TOO_LARGE,
        Rule.BAD_BASE64,
        Rule.NOT_A_TENSOR,
        Rule.NOT_DENSE,
        Rule.BAD_DTYPE,
        Rule.BAD_SHAPE,
        Rule.HIDDEN_SIZE,
        Rule.NOT_FINITE,
    }
)
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


class CallsCanary:
    """Pickles as a call to `canary`: a payload that would run code."""

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


def instrumented(run: Callable[[], Outcome]) -> Outcome:
    """`run()` watched by the instruments: a pickle that ran code or a sparse
    tensor built by torch.load during it is a ContractViolation. Not
    reentrant: the sparse count restarts at each call."""
    probe, canary_calls = sparse_probe(), len(CANARY_CALLS)
    probe.take()
    try:
        outcome = run()
    finally:
        if len(CANARY_CALLS) != canary_calls:
            raise ContractViolation("a pickle in the payload ran code")
    if probe.take():
        raise ContractViolation(f"a sparse payload reached torch.load ({outcome.rule}: {outcome.message})")
    return outcome


def check_base64_contract(encoded: bytes | str, limits: EmbedsLimits) -> Outcome:
    """Decode and validate as the model does. Contract breaches raise
    ContractViolation; an unexpected exception escapes as it is (also a
    finding)."""
    return instrumented(lambda: _decode_and_validate(encoded, limits))


def _decode_and_validate(encoded: bytes | str, limits: EmbedsLimits) -> Outcome:
    try:
        tensor = validate_embeds(decode_base64_embeds(encoded, limits), limits)
    except RequestRejected as exc:
        return checked_rejection(exc)
    check_accepted(tensor, limits, payload_bytes=decoded_size(encoded))
    check_deterministic(encoded, limits, tensor)
    return Outcome("accepted", tensor=tensor)


def check_deterministic(encoded: bytes | str, limits: EmbedsLimits, tensor: torch.Tensor) -> None:
    """An accepted payload decodes to the same tensor again: values that
    differ between two decodes were read from memory the payload never
    wrote (uninitialized or freed buffers)."""
    try:
        again = validate_embeds(decode_base64_embeds(encoded, limits), limits)
    except RequestRejected as exc:
        raise ContractViolation(
            f"a payload accepted once was refused on a second decode\n{exc.message}"
        ) from None
    if not torch.equal(again, tensor):
        raise ContractViolation("one payload decoded to two different tensors: values from unwritten memory")


def check_tensor_contract(tensor: torch.Tensor, limits: EmbedsLimits) -> Outcome:
    """The raw-tensor input path: validate_embeds alone."""
    try:
        out = validate_embeds(tensor, limits)
    except RequestRejected as exc:
        return checked_rejection(exc)
    check_accepted(out, limits, payload_bytes=None)
    return Outcome("accepted", tensor=out)


def checked_rejection(exc: RequestRejected, allowed: frozenset[str] = DECODE_RULES) -> Outcome:
    if exc.rule not in allowed:
        raise ContractViolation(f"unknown rule {exc.rule!r}: {exc.message}")
    if not exc.message.strip():
        raise ContractViolation(f"rule {exc.rule} came with an empty message")
    return Outcome(exc.rule, exc.message)


def check_accepted(tensor: torch.Tensor, limits: EmbedsLimits, payload_bytes: int | None) -> None:
    """What the engine may be handed: a plain CPU tensor, dense and
    contiguous, (S >= 1, hidden) in the engine dtype, every value finite."""
    if type(tensor) is not torch.Tensor:
        raise ContractViolation(f"accepted a {type(tensor).__name__}, not a plain tensor")
    problems = [
        text
        for bad, text in (
            (tensor.layout != torch.strided or tensor.is_nested, f"layout {tensor.layout}"),
            (tensor.device.type != "cpu", f"device {tensor.device}"),
            (tensor.dtype != limits.dtype, f"dtype {tensor.dtype}"),
            (
                tensor.dim() != 2 or tensor.shape[0] < 1 or tensor.shape[-1] != limits.hidden_size,
                f"shape {list(tensor.shape)}",
            ),
            (not tensor.is_contiguous(), f"strides {tensor.stride()}"),
            (tensor.requires_grad, "requires_grad"),
            (tensor.is_neg() or tensor.is_conj(), "a lazy negation/conjugation bit"),
        )
        if bad
    ]
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
