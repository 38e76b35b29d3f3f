"""A corpus of hostile requests, generated in code (no binary fixtures).

Each case is the inputs of one request, the validation rule it must break and
a fragment of the message it must get. The payloads attack every layer the
embeddings pass through: base64, the size gate, the zip container torch.save
writes, the pickle inside it, sparse layouts, dtypes, shapes, values, the
context limit, and the other inputs beside them."""

from __future__ import annotations

import base64
import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from triton_embeds.protocol import (
    EMBEDS_BASE64_INPUT,
    EMBEDS_FP16_INPUT,
    EMBEDS_FP32_INPUT,
    EMBEDS_PLACEHOLDER,
    RETURN_MODEL_INFO_INPUT,
    SAMPLING_INPUT,
    TEXT_INPUT,
)

from .infer import make_inputs, string_array
from .payloads import (
    b64,
    bf16_exact,
    malicious_pickle_payload,
    npy_payload,
    npz_bytes,
    plain_zip,
    saved,
    zip_members,
)

HIDDEN = 128
CONTEXT = 512
MAX_BYTES = 10 * 1024 * 1024
MIN_BYTES = 100
GREEDY = {"temperature": 0, "max_tokens": 8}


@dataclass(frozen=True)
class HostileCase:
    name: str
    build: Callable[[], dict[str, np.ndarray]]
    rule: str
    fragment: str
    model: str = "tiny"


def good(rows: int = 5) -> torch.Tensor:
    return bf16_exact((rows, HIDDEN), seed=11)


def embeds_b64(raw: bytes | str) -> dict[str, np.ndarray]:
    return make_inputs(embeds_b64=raw if isinstance(raw, str) else b64(raw), sampling=GREEDY)


def tensor_input(array: np.ndarray, name: str = EMBEDS_FP32_INPUT) -> dict[str, np.ndarray]:
    return make_inputs(embeds=array, embeds_name=name, sampling=GREEDY)


# -- zip containers ------------------------------------------------------------
def rezip(
    raw: bytes, edit: Callable[[str, bytes], bytes | None], compression: int = zipfile.ZIP_STORED
) -> bytes:
    """Rewrite a torch.save archive member by member; `edit` returns the new
    bytes of a member, or None to drop it."""
    edited = [(name, edit(name, data)) for name, data in zip_members(raw)]
    return plain_zip([(name, data) for name, data in edited if data is not None], compression)


def mark_as_directory(raw: bytes, member_suffix: str) -> bytes:
    """Give one member the MS-DOS directory attribute in the central
    directory: torch's reader then leaves its storage buffer unwritten."""
    data = bytearray(raw)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        central = archive.start_dir
    for offset in _central_entries(raw, central):
        name_length = struct.unpack_from("<H", raw, offset + 28)[0]
        if raw[offset + 46 : offset + 46 + name_length].decode().endswith(member_suffix):
            struct.pack_into("<I", data, offset + 38, 0x10)
    return bytes(data)


def lie_about_size(raw: bytes, member_suffix: str, size: int) -> bytes:
    """Patch the declared uncompressed size of one member in its local header
    and in the central directory, leaving the data as it is."""
    data = bytearray(raw)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
        central = archive.start_dir
    struct.pack_into("<I", data, info.header_offset + 22, size)  # local header
    for offset in _central_entries(raw, central):
        name_length = struct.unpack_from("<H", raw, offset + 28)[0]
        if raw[offset + 46 : offset + 46 + name_length].decode().endswith(member_suffix):
            struct.pack_into("<I", data, offset + 24, size)
    return bytes(data)


def _central_entries(raw: bytes, start: int):
    offset = start
    while raw[offset : offset + 4] == b"PK\x01\x02":
        yield offset
        name, extra, comment = struct.unpack_from("<HHH", raw, offset + 28)
        offset += 46 + name + extra + comment


def flip_pickle_byte(raw: bytes) -> bytes:
    return rezip(
        raw, lambda name, data: data[:20] + b"\x00\xff" + data[22:] if name.endswith("data.pkl") else data
    )


def replace_pickle(raw: bytes, payload: bytes) -> bytes:
    return rezip(raw, lambda name, data: payload if name.endswith("data.pkl") else data)


def truncate_storage(raw: bytes) -> bytes:
    return rezip(raw, lambda name, data: data[: len(data) // 2] if "/data/" in name else data)


def drop_storage(raw: bytes) -> bytes:
    return rezip(raw, lambda name, data: None if "/data/" in name else data)


# -- pickles -------------------------------------------------------------------
class _Imports:
    """Unpickling this would import a module and call into it."""

    def __reduce__(self):
        return (__import__, ("antigravity",))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def raw_pickle(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=2)


# -- sparse layouts ----------------------------------------------------------------
def sparse_coo(indices: list[list[int]], shape: tuple[int, int]) -> bytes:
    values = torch.ones(len(indices[0]))
    tensor = torch.sparse_coo_tensor(torch.tensor(indices), values, shape, check_invariants=False)
    return saved(tensor)


def sparse_csr_bad() -> bytes:
    tensor = torch.sparse_csr_tensor(
        torch.tensor([0, 5, 1]),
        torch.tensor([0, 900, 2, 3, 4]),
        torch.ones(5),
        (2, HIDDEN),
        check_invariants=False,
    )
    return saved(tensor)


# -- value payloads ------------------------------------------------------------------
def with_values(*values: float) -> torch.Tensor:
    tensor = good().clone()
    for index, value in enumerate(values):
        tensor[index % 5, index] = value
    return tensor


def float64_with(value: float) -> torch.Tensor:
    """Finite in float64, infinite once cast to the engine's float32."""
    tensor = good().double()
    tensor[0, 0] = value
    return tensor


def base64_cases() -> list[HostileCase]:
    valid = b64(saved(good()))
    return [
        HostileCase(
            "b64_bad_alphabet", lambda: embeds_b64("@@not*base64!!" * 20), "bad_base64", "not valid base64"
        ),
        HostileCase(
            "b64_missing_padding",
            lambda: embeds_b64(valid.rstrip("=") + "A"),
            "bad_base64",
            "not valid base64",
        ),
        HostileCase(
            "b64_extra_padding", lambda: embeds_b64(valid + "===="), "bad_base64", "not valid base64"
        ),
        HostileCase(
            "b64_padding_inside",
            lambda: embeds_b64(valid[:40] + "=" + valid[41:]),
            "bad_base64",
            "not valid base64",
        ),
        HostileCase(
            "b64_mime_newlines",
            lambda: embeds_b64(base64.encodebytes(saved(good())).decode()),
            "bad_base64",
            "not valid base64",
        ),
        HostileCase(
            "b64_surrounding_space", lambda: embeds_b64(f"  {valid}  "), "bad_base64", "not valid base64"
        ),
        HostileCase(
            "b64_urlsafe",
            lambda: embeds_b64(base64.urlsafe_b64encode(saved(good()) + b"\xfb\xff").decode()),
            "bad_base64",
            "not valid base64",
        ),
        HostileCase(
            "b64_non_ascii",
            lambda: embeds_b64(valid[:100] + "é" + valid[101:]),
            "bad_base64",
            "not valid base64",
        ),
        HostileCase(
            "b64_invalid_utf8",
            lambda: make_inputs(embeds_b64=b"\xff\xfe" + valid.encode()[2:]),
            "bad_base64",
            "not valid base64",
        ),
        HostileCase("b64_empty", lambda: embeds_b64(""), "embeds_too_small", "decodes to 0 bytes"),
    ]


def size_cases() -> list[HostileCase]:
    return [
        HostileCase(
            "size_one_below_min",
            lambda: embeds_b64(b"x" * (MIN_BYTES - 1)),
            "embeds_too_small",
            f"decodes to {MIN_BYTES - 1} bytes",
        ),
        HostileCase(
            "size_at_min_junk",
            lambda: embeds_b64(b"x" * MIN_BYTES),
            "not_a_tensor",
            "not a torch.save payload",
        ),
        HostileCase(
            "size_one_above_max",
            lambda: embeds_b64(b"\0" * (MAX_BYTES + 1)),
            "embeds_too_large",
            f"decodes to {MAX_BYTES + 1} bytes",
        ),
        HostileCase(
            "size_at_max_junk",
            lambda: embeds_b64(b"\0" * MAX_BYTES),
            "not_a_tensor",
            "not a torch.save payload",
        ),
        HostileCase(
            "size_far_above_max",
            lambda: embeds_b64("A" * (16 * 1024 * 1024)),
            "embeds_too_large",
            "above this model's limit",
        ),
    ]


def container_cases() -> list[HostileCase]:
    raw = saved(good())
    return [
        HostileCase(
            "random_bytes",
            lambda: embeds_b64(bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8))),
            "not_a_tensor",
            "not a torch.save payload",
        ),
        HostileCase(
            "png_header",
            lambda: embeds_b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 200),
            "not_a_tensor",
            "no zip archive",
        ),
        HostileCase(
            "gzip_bytes",
            lambda: embeds_b64(b"\x1f\x8b\x08\x00" + b"\0" * 200),
            "not_a_tensor",
            "no zip archive",
        ),
        HostileCase(
            "legacy_torch_format",
            lambda: embeds_b64(saved(good(), _use_new_zipfile_serialization=False)),
            "not_a_tensor",
            "legacy and non-torch formats",
        ),
        HostileCase(
            "zip_truncated_half", lambda: embeds_b64(raw[: len(raw) // 2]), "not_a_tensor", "corrupt zip"
        ),
        HostileCase("zip_truncated_tail", lambda: embeds_b64(raw[:-10]), "not_a_tensor", "corrupt zip"),
        HostileCase(
            "zip_corrupt_directory",
            lambda: embeds_b64(raw[:-60] + b"\xee" * 38 + raw[-22:]),
            "not_a_tensor",
            "zip",
        ),
        HostileCase(
            "zip_storage_marked_as_directory",
            lambda: embeds_b64(mark_as_directory(raw, "data/0")),
            "not_a_tensor",
            "is marked as a directory",
        ),
        HostileCase(
            "zip_deflated_members",
            lambda: embeds_b64(rezip(raw, lambda n, d: d, zipfile.ZIP_DEFLATED)),
            "not_a_tensor",
            "compressed member",
        ),
        HostileCase(
            "zip_member_claims_gigabytes",
            lambda: embeds_b64(lie_about_size(raw, "data/0", 2**31)),
            "not_a_tensor",
            "claims 2147483648 bytes",
        ),
        HostileCase(
            "zip_member_claims_less",
            lambda: embeds_b64(lie_about_size(raw, "data/0", 64)),
            "not_a_tensor",
            "prompt_embeds_base64",
        ),
        HostileCase(
            "zip_without_data_pkl",
            lambda: embeds_b64(plain_zip({"readme.txt": b"not a tensor " * 20})),
            "not_a_tensor",
            "without torch.save's data.pkl",
        ),
        HostileCase(
            "zip_corrupted_pickle",
            lambda: embeds_b64(flip_pickle_byte(raw)),
            "not_a_tensor",
            "could not be loaded",
        ),
        HostileCase(
            "zip_storage_truncated",
            lambda: embeds_b64(truncate_storage(raw)),
            "not_a_tensor",
            "could not be loaded",
        ),
        HostileCase(
            "zip_storage_missing",
            lambda: embeds_b64(drop_storage(raw)),
            "not_a_tensor",
            "could not be loaded",
        ),
        HostileCase(
            "numpy_npy", lambda: embeds_b64(npy_payload(good().numpy())), "not_a_tensor", "numpy .npy"
        ),
        HostileCase(
            "numpy_npz", lambda: embeds_b64(npz_bytes(embeds=good().numpy())), "not_a_tensor", "numpy .npz"
        ),
    ]


def pickle_cases(marker: str) -> list[HostileCase]:
    raw = saved(good())
    return [
        HostileCase(
            "pickle_dict", lambda: embeds_b64(saved({"embeds": good()})), "not_a_tensor", "pickled dict"
        ),
        HostileCase(
            "pickle_list", lambda: embeds_b64(saved([good(), good()])), "not_a_tensor", "pickled list"
        ),
        HostileCase("pickle_tuple", lambda: embeds_b64(saved((good(),))), "not_a_tensor", "pickled tuple"),
        HostileCase("pickle_int", lambda: embeds_b64(saved(42)), "not_a_tensor", "pickled int"),
        HostileCase("pickle_string", lambda: embeds_b64(saved("x" * 200)), "not_a_tensor", "pickled str"),
        HostileCase(
            "pickle_module", lambda: embeds_b64(saved(torch.nn.Linear(4, 4))), "not_a_tensor", "weights_only"
        ),
        HostileCase(
            "pickle_runs_shell",
            lambda: embeds_b64(malicious_pickle_payload(marker)),
            "not_a_tensor",
            "weights_only",
        ),
        HostileCase(
            "pickle_imports_module",
            lambda: embeds_b64(replace_pickle(raw, raw_pickle(_Imports()))),
            "not_a_tensor",
            "weights_only",
        ),
        HostileCase(
            "pickle_calls_eval",
            lambda: embeds_b64(replace_pickle(raw, raw_pickle(_Evaluates()))),
            "not_a_tensor",
            "weights_only",
        ),
        HostileCase(
            "pickle_bare_not_zipped",
            lambda: embeds_b64(raw_pickle(_Evaluates()) + b"\0" * 100),
            "not_a_tensor",
            "no zip archive",
        ),
    ]


def sparse_cases() -> list[HostileCase]:
    dense = good()
    return [
        HostileCase(
            "sparse_coo_out_of_range",
            lambda: embeds_b64(sparse_coo([[0, 50_000], [0, 7]], (4, HIDDEN))),
            "not_dense",
            "sparse tensor payload",
        ),
        HostileCase(
            "sparse_coo_negative",
            lambda: embeds_b64(sparse_coo([[0, -3], [0, 7]], (4, HIDDEN))),
            "not_dense",
            "sparse tensor payload",
        ),
        HostileCase(
            "sparse_coo_huge_index",
            lambda: embeds_b64(sparse_coo([[2**62], [0]], (4, HIDDEN))),
            "not_dense",
            "sparse tensor payload",
        ),
        HostileCase(
            "sparse_coo_huge_shape",
            lambda: embeds_b64(sparse_coo([[0], [0]], (2**30, 2**30))),
            "not_dense",
            "sparse tensor payload",
        ),
        HostileCase(
            "sparse_csr_valid",
            lambda: embeds_b64(saved(dense.to_sparse_csr())),
            "not_dense",
            "sparse tensor payload",
        ),
        HostileCase(
            "sparse_csr_bad_indices",
            lambda: embeds_b64(sparse_csr_bad()),
            "not_dense",
            "sparse tensor payload",
        ),
        HostileCase(
            "sparse_csc",
            lambda: embeds_b64(saved(dense.to_sparse_csc())),
            "not_dense",
            "sparse tensor payload",
        ),
        HostileCase(
            "sparse_bsr",
            lambda: embeds_b64(saved(dense.to_sparse_bsr((1, 2)))),
            "not_dense",
            "sparse tensor payload",
        ),
    ]


def dtype_cases() -> list[HostileCase]:
    ones = torch.ones((5, HIDDEN))
    return [
        HostileCase(
            "dtype_quantized",
            lambda: embeds_b64(saved(torch.quantize_per_tensor(ones, 0.1, 0, torch.qint8))),
            "bad_dtype",
            "quantized",
        ),
        HostileCase(
            "dtype_complex",
            lambda: embeds_b64(saved(ones.to(torch.complex64))),
            "bad_dtype",
            "dtype complex64 is not accepted",
        ),
        HostileCase(
            "dtype_int64", lambda: embeds_b64(saved(ones.to(torch.int64))), "bad_dtype", "dtype int64"
        ),
        HostileCase("dtype_int8", lambda: embeds_b64(saved(ones.to(torch.int8))), "bad_dtype", "dtype int8"),
        HostileCase(
            "dtype_uint8", lambda: embeds_b64(saved(ones.to(torch.uint8))), "bad_dtype", "dtype uint8"
        ),
        HostileCase("dtype_bool", lambda: embeds_b64(saved(ones.to(torch.bool))), "bad_dtype", "dtype bool"),
        HostileCase(
            "dtype_float8",
            lambda: embeds_b64(saved(ones.to(torch.float8_e4m3fn))),
            "bad_dtype",
            "dtype float8_e4m3fn",
        ),
    ]


def shape_cases() -> list[HostileCase]:
    return [
        HostileCase(
            "shape_scalar", lambda: embeds_b64(saved(torch.tensor(1.0)) + b""), "bad_shape", "got []"
        ),
        HostileCase("shape_1d", lambda: embeds_b64(saved(torch.ones(HIDDEN * 2))), "bad_shape", "got [256]"),
        HostileCase(
            "shape_4d",
            lambda: embeds_b64(saved(torch.ones((1, 1, 5, HIDDEN)))),
            "bad_shape",
            "got [1, 1, 5, 128]",
        ),
        HostileCase(
            "shape_batch_of_two",
            lambda: embeds_b64(saved(torch.ones((2, 5, HIDDEN)))),
            "bad_shape",
            "got [2, 5, 128]",
        ),
        HostileCase(
            "shape_zero_rows", lambda: embeds_b64(saved(torch.zeros((0, HIDDEN)))), "bad_shape", "no rows"
        ),
        HostileCase(
            "shape_zero_rows_3d",
            lambda: embeds_b64(saved(torch.zeros((1, 0, HIDDEN)))),
            "bad_shape",
            "no rows",
        ),
        HostileCase(
            "shape_zero_hidden",
            lambda: embeds_b64(saved(torch.zeros((5, 0)))),
            "hidden_size",
            "hidden size 0",
        ),
        HostileCase(
            "shape_zero_hidden_tensor",
            lambda: tensor_input(np.zeros((5, 0), np.float32)),
            "hidden_size",
            "hidden size 0",
        ),
        HostileCase(
            "hidden_too_small",
            lambda: tensor_input(bf16_exact((5, 100)).numpy()),
            "hidden_size",
            "hidden size 100 does not match the model's hidden size 128",
        ),
        HostileCase(
            "hidden_too_large_b64",
            lambda: embeds_b64(saved(bf16_exact((5, 4096)))),
            "hidden_size",
            "hidden size 4096",
        ),
        HostileCase(
            "hidden_wrong_fp16",
            lambda: tensor_input(np.ones((5, 64), np.float16), EMBEDS_FP16_INPUT),
            "hidden_size",
            "hidden size 64",
        ),
    ]


def value_cases() -> list[HostileCase]:
    half = good().numpy().astype(np.float16)
    half[0, 0] = np.float16(np.inf)
    return [
        HostileCase(
            "value_nan_tensor", lambda: tensor_input(with_values(float("nan")).numpy()), "not_finite", "1 NaN"
        ),
        HostileCase(
            "value_nan_b64", lambda: embeds_b64(saved(with_values(float("nan")))), "not_finite", "1 NaN"
        ),
        HostileCase(
            "value_plus_inf",
            lambda: tensor_input(with_values(float("inf")).numpy()),
            "not_finite",
            "0 NaN and 1 infinite",
        ),
        HostileCase(
            "value_minus_inf_b64",
            lambda: embeds_b64(saved(with_values(float("-inf")))),
            "not_finite",
            "0 NaN and 1 infinite",
        ),
        HostileCase(
            "value_mixed",
            lambda: tensor_input(with_values(float("nan"), float("inf"), float("-inf")).numpy()),
            "not_finite",
            "1 NaN and 2 infinite",
        ),
        HostileCase(
            "value_all_nan",
            lambda: tensor_input(np.full((5, HIDDEN), np.nan, np.float32)),
            "not_finite",
            f"{5 * HIDDEN} NaN",
        ),
        HostileCase(
            "value_fp16_inf", lambda: tensor_input(half, EMBEDS_FP16_INPUT), "not_finite", "1 infinite"
        ),
        HostileCase(
            "value_float64_overflow",
            lambda: embeds_b64(saved(float64_with(1e300))),
            "not_finite",
            "after conversion to the engine dtype float32",
        ),
    ]


def request_cases() -> list[HostileCase]:
    return [
        HostileCase(
            "context_one_past_full",
            lambda: make_inputs(embeds=good(CONTEXT - 8).numpy(), sampling={"max_tokens": 9}),
            "too_long",
            f"prompt of {CONTEXT - 8} positions plus max_tokens=9",
        ),
        HostileCase(
            "context_past_limit",
            lambda: tensor_input(good(CONTEXT + 1).numpy()),
            "too_long",
            f"prompt of {CONTEXT + 1} positions",
        ),
        HostileCase(
            "context_huge_max_tokens",
            lambda: make_inputs(embeds=good().numpy(), sampling={"max_tokens": 10**12}),
            "too_long",
            "max_tokens=1000000000000",
        ),
        HostileCase(
            "both_embeds_inputs",
            lambda: make_inputs(embeds=good().numpy(), embeds_b64=b64(saved(good()))),
            "multiple_embeds",
            "got prompt_embeds, prompt_embeds_base64",
        ),
        HostileCase(
            "two_tensor_inputs",
            lambda: {
                **tensor_input(good().numpy()),
                **tensor_input(good().numpy().astype(np.float16), EMBEDS_FP16_INPUT),
            },
            "multiple_embeds",
            "got prompt_embeds, prompt_embeds_fp16",
        ),
        HostileCase(
            "no_prompt", lambda: make_inputs(stream=False, sampling=GREEDY), "no_prompt", "no prompt"
        ),
        HostileCase(
            "embeds_to_disabled_model",
            lambda: tensor_input(good().numpy()),
            "embeds_disabled",
            '"enable_prompt_embeds": true',
            model="tiny_noembeds",
        ),
        HostileCase(
            "text_invalid_utf8",
            lambda: {TEXT_INPUT: string_array(b"\xc3\x28 broken")},
            "bad_text",
            "not valid UTF-8",
        ),
        HostileCase(
            "sampling_invalid_utf8",
            lambda: {TEXT_INPUT: string_array("hi"), SAMPLING_INPUT: string_array(b'{"seed": \xff}')},
            "bad_text",
            "not valid UTF-8",
        ),
    ]


def sampling_cases() -> list[HostileCase]:
    def text_with(sampling: dict | str) -> Callable[[], dict[str, np.ndarray]]:
        return lambda: make_inputs(text="hi", sampling=sampling)

    return [
        HostileCase("sampling_not_json", text_with("{max_tokens: 8"), "bad_sampling", "not valid JSON"),
        HostileCase(
            "sampling_absurd_top_logprobs",
            text_with({"logprobs": 10**9}),
            "bad_sampling",
            "logprobs=1000000000 must be between 0 and 20",
        ),
        HostileCase(
            "sampling_json_list", text_with("[1, 2]"), "bad_sampling", "must be a JSON object, got list"
        ),
        HostileCase(
            "sampling_unknown_key", text_with({"max_tokenz": 8}), "bad_sampling", "unknown sampling parameter"
        ),
        HostileCase(
            "sampling_n_many", text_with({"n": 1000}), "bad_sampling", "n=1000 must be between 1 and 16"
        ),
        HostileCase(
            "sampling_negative_temperature",
            text_with({"temperature": -1}),
            "bad_sampling",
            "temperature=-1.0 must be in [0, 100]",
        ),
        HostileCase(
            "sampling_nan_temperature", text_with('{"temperature": NaN}'), "bad_sampling", "temperature"
        ),
        HostileCase(
            "sampling_top_p_zero", text_with({"top_p": 0}), "bad_sampling", "top_p=0.0 must be in (0, 1]"
        ),
        HostileCase("sampling_zero_max_tokens", text_with({"max_tokens": 0}), "bad_sampling", "max_tokens=0"),
        HostileCase("sampling_huge_seed", text_with({"seed": 2**80}), "bad_sampling", "seed"),
        HostileCase(
            "sampling_string_number", text_with({"top_k": "many"}), "bad_sampling", "top_k='many' is invalid"
        ),
        HostileCase("sampling_nested_object", text_with({"stop": {"a": 1}}), "bad_sampling", "stop="),
        HostileCase(
            "sampling_min_over_max",
            text_with({"min_tokens": 9, "max_tokens": 8}),
            "bad_sampling",
            "min_tokens=9 exceeds max_tokens=8",
        ),
        HostileCase(
            "sampling_deep_nesting",
            text_with('{"stop": ' + "[" * 20000 + "]" * 20000 + "}"),
            "bad_sampling",
            "nested too deeply",
        ),
        HostileCase(
            "sampling_huge_json",
            text_with(json.dumps({"stop": ["x" * 64] * 20000})),
            "bad_sampling",
            "above the limit of 65536",
        ),
        HostileCase(
            "sampling_many_stops", text_with({"stop": ["x"] * 65}), "bad_sampling", "stop has 65 strings"
        ),
        HostileCase(
            "sampling_long_stop",
            text_with({"stop": ["x" * 5000]}),
            "bad_sampling",
            "a string of 5000 characters",
        ),
        HostileCase(
            "sampling_many_stop_ids",
            text_with({"stop_token_ids": list(range(2000))}),
            "bad_sampling",
            "stop_token_ids has 2000 entries",
        ),
    ]


MAX_MESSAGES_BYTES = 16 * 1024 * 1024
MAX_CHAT_MESSAGES = 256
MAX_CHAT_PARTS = 256
# The corpus model's max_mixed_embeds_bytes: 256 positions of hidden 128 in float32.
MAX_MIXED_BYTES = 128 * 1024


def chat(*content: dict | str, system: str = "Be brief.") -> list[dict]:
    """A conversation whose user message holds `content` as parts."""
    parts = [{"type": "text", "text": part} if isinstance(part, str) else part for part in content]
    return [{"role": "system", "content": system}, {"role": "user", "content": parts}]


def data_part(raw: bytes | str) -> dict:
    return {"type": "prompt_embeds", "data": raw if isinstance(raw, str) else b64(raw)}


def rows_part(rows: int) -> dict:
    return {"type": "prompt_embeds", "rows": rows}


def chat_inputs(messages: list | str | bytes, **extra) -> dict[str, np.ndarray]:
    return make_inputs(messages=messages, sampling=GREEDY, **extra)


def chat_cases() -> list[HostileCase]:
    user = {"role": "user", "content": "hi"}
    return [
        HostileCase("chat_not_json", lambda: chat_inputs("[{"), "bad_messages", "messages is not valid JSON"),
        HostileCase(
            "chat_invalid_utf8",
            lambda: chat_inputs(b'[{"role": "user", "content": "\xc3\x28"}]'),
            "bad_messages",
            "not valid JSON",
        ),
        HostileCase(
            "chat_deep_nesting", lambda: chat_inputs("[" * 100_000), "bad_messages", "not valid JSON"
        ),
        HostileCase("chat_empty", lambda: chat_inputs([]), "bad_messages", "non-empty JSON array"),
        HostileCase(
            "chat_object_not_list", lambda: chat_inputs("{}"), "bad_messages", "non-empty JSON array"
        ),
        HostileCase(
            "chat_unknown_role",
            lambda: chat_inputs([{"role": "wizard", "content": "hi"}]),
            "bad_messages",
            'messages[0].role is "wizard"',
        ),
        HostileCase(
            "chat_unknown_part_type",
            lambda: chat_inputs(chat({"type": "image_url", "image_url": {"url": "http://x"}})),
            "bad_messages",
            'messages[1].content[0] has type "image_url"',
        ),
        HostileCase(
            "chat_tool_calls",
            lambda: chat_inputs([{"role": "assistant", "content": "", "tool_calls": []}]),
            "bad_messages",
            "unsupported keys ['tool_calls']",
        ),
        HostileCase(
            "chat_embeds_part_both_forms",
            lambda: chat_inputs(chat({"type": "prompt_embeds", "data": "QUJD", "rows": 1})),
            "bad_messages",
            "exactly one of",
        ),
        HostileCase(
            "chat_rows_negative", lambda: chat_inputs(chat(rows_part(-1))), "bad_messages", "positive integer"
        ),
        HostileCase(
            "chat_messages_over_limit",
            lambda: chat_inputs(chat("x" * MAX_MESSAGES_BYTES)),
            "chat_limit",
            "max_messages_bytes",
        ),
        HostileCase(
            "chat_too_many_messages",
            lambda: chat_inputs([user] * (MAX_CHAT_MESSAGES + 1)),
            "chat_limit",
            f"{MAX_CHAT_MESSAGES + 1} messages",
        ),
        HostileCase(
            "chat_too_many_parts",
            lambda: chat_inputs(chat(*["a"] * MAX_CHAT_PARTS)),
            "chat_limit",
            f"{MAX_CHAT_PARTS + 1} content parts",
        ),
        HostileCase(
            "chat_placeholder_in_text",
            lambda: chat_inputs(chat(f"ignore {EMBEDS_PLACEHOLDER} this")),
            "reserved_placeholder",
            "messages[1].content[0].text contains '<prompt_embeds>'",
        ),
        HostileCase(
            "chat_placeholder_in_system",
            lambda: chat_inputs(chat("hi", system=EMBEDS_PLACEHOLDER)),
            "reserved_placeholder",
            "messages[0].content contains",
        ),
        HostileCase(
            "chat_placeholder_in_template_kwargs",
            lambda: chat_inputs(
                chat("hi"), chat_parameters={"chat_template_kwargs": {"x": EMBEDS_PLACEHOLDER}}
            ),
            "reserved_placeholder",
            "chat_template_kwargs.x contains '<prompt_embeds>'",
        ),
        HostileCase(
            "chat_placeholder_escaped_in_template_kwargs",
            lambda: chat_inputs(
                chat("hi"), chat_parameters='{"chat_template_kwargs": {"x": "\\u003cprompt_embeds>"}}'
            ),
            "reserved_placeholder",
            "chat_template_kwargs.x contains",
        ),
        HostileCase(
            "chat_lone_surrogate",
            lambda: chat_inputs('[{"role": "user", "content": "\\ud800"}]'),
            "bad_messages",
            "messages[0].content holds a lone UTF-16 surrogate",
        ),
        HostileCase(
            "chat_mixed_rows_over_limit",
            lambda: chat_inputs(chat("hi", data_part(saved(good(300))))),
            "chat_limit",
            f"over this model's limit of {MAX_MIXED_BYTES} (max_mixed_embeds_bytes)",
        ),
        HostileCase(
            "text_input_placeholder",
            lambda: make_inputs(text=f"a {EMBEDS_PLACEHOLDER} b", sampling=GREEDY),
            "reserved_placeholder",
            "text_input contains '<prompt_embeds>'",
        ),
        HostileCase(
            "chat_parameters_unknown_key",
            lambda: chat_inputs(chat("hi"), chat_parameters={"tools": []}),
            "bad_chat_parameters",
            "unknown chat_parameters keys ['tools']",
        ),
        HostileCase(
            "chat_parameters_reserved_kwarg",
            lambda: chat_inputs(chat("hi"), chat_parameters={"chat_template_kwargs": {"messages": []}}),
            "bad_chat_parameters",
            "may not set ['messages']",
        ),
        HostileCase(
            "chat_with_text_input",
            lambda: chat_inputs(chat("hi"), text="also this"),
            "prompt_conflict",
            "do not also send text_input",
        ),
        HostileCase(
            "chat_with_base64_input",
            lambda: chat_inputs(chat("hi"), embeds_b64=b64(saved(good()))),
            "prompt_conflict",
            "do not also send prompt_embeds_base64",
        ),
        HostileCase(
            "chat_parameters_without_messages",
            lambda: make_inputs(text="hi", chat_parameters={}),
            "prompt_conflict",
            "messages, which is missing",
        ),
        HostileCase(
            "chat_rows_past_the_tensor",
            lambda: chat_inputs(chat("hi", rows_part(6)), embeds=good(5).numpy()),
            "chat_rows",
            "takes rows 0..5 of the raw embeddings input, which has 5 rows",
        ),
        HostileCase(
            "chat_rows_left_over",
            lambda: chat_inputs(chat(rows_part(2), "and", rows_part(1)), embeds=good(5).numpy()),
            "chat_rows",
            "rows 3..4 of the raw embeddings input are not taken",
        ),
        HostileCase(
            "chat_tensor_without_rows_part",
            lambda: chat_inputs(chat("hi"), embeds=good(5).numpy()),
            "chat_rows",
            'no "rows" part',
        ),
        HostileCase(
            "chat_rows_part_without_tensor",
            lambda: chat_inputs(chat(rows_part(2))),
            "chat_rows",
            "which has 0 rows",
        ),
        HostileCase(
            "chat_context_overflow",
            lambda: chat_inputs(chat("hi", data_part(saved(good(CONTEXT - 10))))),
            "too_long",
            "exceeds the model's context length of 512",
        ),
        HostileCase(
            "chat_no_template",
            lambda: chat_inputs(chat("hi")),
            "no_chat_template",
            "this model has no chat template",
            model="tiny_noembeds",
        ),
        HostileCase(
            "chat_embeds_to_disabled_model",
            lambda: chat_inputs(chat("hi", data_part(saved(good())))),
            "embeds_disabled",
            "messages[1].content[1]: this model cannot take embeddings parts",
            model="tiny_noembeds",
        ),
        HostileCase(
            "chat_rows_to_disabled_model",
            lambda: chat_inputs(chat(rows_part(5)), embeds=good(5).numpy()),
            "embeds_disabled",
            '"enable_prompt_embeds": true',
            model="tiny_noembeds",
        ),
    ]


def chat_part_cases(base64_cases: list[HostileCase]) -> list[HostileCase]:
    """The embeddings chain inside a chat part: the first base64 payload of
    each rule, moved into a "data" part. (That the message names the part is
    tested beside the chat tests.)"""
    chosen: dict[str, HostileCase] = {}
    for case in base64_cases:
        inputs = case.build()
        # An empty payload is a malformed part, not a payload: skipped.
        if set(inputs) <= {EMBEDS_BASE64_INPUT, SAMPLING_INPUT} and inputs.get(EMBEDS_BASE64_INPUT, [b""])[0]:
            chosen.setdefault(case.rule, case)

    def moved(case: HostileCase) -> HostileCase:
        def build() -> dict[str, np.ndarray]:
            payload = case.build()[EMBEDS_BASE64_INPUT][0]
            return chat_inputs(
                chat("hi", data_part(payload.decode() if isinstance(payload, bytes) else payload))
            )

        return HostileCase(f"chat_part_{case.name}", build, case.rule, case.fragment)

    return [moved(case) for case in chosen.values()]


def generation_feature_cases() -> list[HostileCase]:
    """Structured outputs, adapters and prompt options: our bounds first,
    then what only the engine's front end can judge (a schema, regex or
    grammar it cannot compile), all INVALID_ARG before generation."""

    def text_with(sampling: dict) -> Callable[[], dict[str, np.ndarray]]:
        return lambda: make_inputs(text="hi", sampling=sampling)

    wide_schema = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(1500)}}
    return [
        HostileCase(
            "structured_huge_schema",
            text_with({"structured_outputs": {"json": wide_schema}}),
            "bad_sampling",
            "above the limit of 32768",
        ),
        HostileCase(
            "structured_two_constraints",
            text_with({"structured_outputs": {"regex": "a+", "choice": ["a"]}}),
            "bad_sampling",
            "exactly one of",
        ),
        HostileCase(
            "structured_choice_flood",
            text_with({"guided_choice": [f"c{i}" for i in range(1000)]}),
            "bad_sampling",
            "1 to 256 non-empty strings",
        ),
        HostileCase(
            "structured_broken_schema",
            text_with({"structured_outputs": {"json": '{"type": "objec'}}),
            "engine_validation",
            "Invalid JSON grammar specification",
        ),
        HostileCase(
            "structured_backreference_regex",
            text_with({"guided_regex": "(a)\\1"}),
            "engine_validation",
            "regex",
        ),
        HostileCase(
            "structured_grammar_without_root",
            text_with({"guided_grammar": 'foo ::= "x"'}),
            "engine_validation",
            "grammar",
        ),
        HostileCase(
            "adapter_unknown",
            text_with({"lora_name": "../../etc/passwd"}),
            "unknown_adapter",
            "is not served here",
        ),
        HostileCase(
            "prompt_logprobs_with_embeds",
            lambda: make_inputs(embeds=good().numpy(), sampling={"prompt_logprobs": 1}),
            "bad_sampling",
            "not compatible with prompt embeds",
        ),
        HostileCase(
            "truncate_to_nothing",
            text_with({"truncate_prompt_tokens": 0}),
            "bad_sampling",
            "must be at least 1",
        ),
        HostileCase(
            "cache_salt_flood", text_with({"cache_salt": "s" * 10_000}), "bad_sampling", "1 to 256 characters"
        ),
        HostileCase(
            "model_info_with_prompt",
            lambda: {**make_inputs(text="hi"), RETURN_MODEL_INFO_INPUT: np.array([True])},
            "prompt_conflict",
            "return_model_info is sent alone",
        ),
    ]


def hostile_corpus(marker: str) -> list[HostileCase]:
    cases = [
        *base64_cases(),
        *size_cases(),
        *container_cases(),
        *pickle_cases(marker),
        *sparse_cases(),
        *dtype_cases(),
        *shape_cases(),
        *value_cases(),
        *request_cases(),
        *sampling_cases(),
        *generation_feature_cases(),
        *chat_cases(),
    ]
    cases += chat_part_cases(cases)
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "corpus case names must be unique"
    return cases
