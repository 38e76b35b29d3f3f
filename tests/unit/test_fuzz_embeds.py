"""Property-based fuzzing of the embeddings decoder and validator, and of the
request and sampling-parameters parsers.

The contract: any input yields a plain, dense, finite (seq_len, hidden) tensor
in the engine dtype, or a RequestRejected naming the rule it broke; nothing
else escapes. Inputs are structured but hostile: torch.save payloads of random
shapes, dtypes, values and memory layouts, mutated at every layer they pass
through (base64 text, zip container, pickle opcodes, raw bytes), pickles of
arbitrary objects, sparse layouts and numpy files. Hypothesis is derandomized
so every CI run tries the same examples; `python -m tools.fuzz` runs the same
builders, mutators and checks for millions of executions.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from embeds_backend.contract import (
    EMBEDS_BASE64_INPUT,
    EMBEDS_INPUTS,
    EMBEDS_TENSOR_INPUTS,
    EXCLUDE_INPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_INPUT,
)
from embeds_backend.embeds import (
    ACCEPTED_DTYPES,
    EmbedsLimits,
    decoded_size,
    tensor_from_numpy,
)
from embeds_backend.errors import RequestRejected
from embeds_backend.request_parsing import ParsedRequest, PromptKind, parse_request
from embeds_backend.sampling import (
    ALLOWED_KEYS,
    MAX_STRUCTURED_BYTES,
    STRUCTURED_KINDS,
    parse_sampling_parameters,
)
from tools.fuzz.inputs import (
    BYTE_MUTATORS,
    SAVE_DTYPES,
    SPECIAL_VALUES,
    VIEWS,
    LegacySparse,
    TensorSpec,
    corrupt_base64,
    make_tensor,
    mutate,
    mutate_pickle,
    mutate_zip,
    read_members,
    tamper_header,
)
from tools.fuzz.oracle import (
    CANARY_CALLS,
    HIDDEN,
    TEXT_MODE,
    CallsCanary,
    check_base64_contract,
    check_tensor_contract,
    limits_for,
    make_input,
    split_input,
)
from tools.payloads import (
    npy_bytes,
    npz_bytes,
    plain_zip,
    saved,
)


def fuzz_settings(max_examples: int) -> settings:
    """Reproducible in CI: a fixed example sequence, no example database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


ENGINE_DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])
SHAPES = st.one_of(
    st.tuples(st.integers(0, 6), st.sampled_from([HIDDEN, HIDDEN - 1, HIDDEN + 1, 0])),
    st.tuples(st.integers(1, 2), st.integers(0, 4), st.sampled_from([HIDDEN, 3])),
    st.lists(st.integers(0, 4), max_size=4).map(tuple),
)
SPECS = st.builds(
    TensorSpec,
    shape=SHAPES,
    dtype=st.sampled_from(SAVE_DTYPES),
    special=st.lists(st.sampled_from(SPECIAL_VALUES), max_size=3).map(tuple),
    view=st.sampled_from(VIEWS),
    seed=st.integers(0, 2**16),
)
VALID_SPECS = st.builds(
    TensorSpec,
    shape=st.tuples(st.integers(1, 6), st.just(HIDDEN)),
    dtype=st.sampled_from(ACCEPTED_DTYPES),
    seed=st.integers(0, 2**16),
)
RANDOMS = st.randoms(use_true_random=False)
BASE64_ALPHABET = re.compile(rb"[A-Za-z0-9+/=]*")


def predicted_rule(tensor: torch.Tensor, limits: EmbedsLimits) -> str:
    """The outcome the SPEC's rule order gives a saved tensor: what it is
    (sparse, nested, without data, quantized, a view past its storage), then
    shape, dtype and finiteness after the cast to the engine dtype."""
    if tensor.layout != torch.strided or tensor.is_nested:
        return "not_dense"
    if tensor.device.type != "cpu":
        return "not_a_tensor"
    if tensor.is_quantized:
        return "bad_dtype"
    if tensor.numel() * tensor.element_size() > tensor.untyped_storage().nbytes():
        return "not_dense"
    return predicted_dense_rule(tensor, limits)


def predicted_dense_rule(tensor: torch.Tensor, limits: EmbedsLimits) -> str:
    """Rules 5-7 for a dense CPU tensor: all a raw tensor input goes through."""
    shape = tuple(tensor.shape)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2 or shape[0] < 1:
        return "bad_shape"
    if shape[1] != limits.hidden_size:
        return "hidden_size"
    if tensor.dtype not in ACCEPTED_DTYPES:
        return "bad_dtype"
    if not bool(torch.isfinite(tensor.detach().resolve_neg().to(limits.dtype)).all()):
        return "not_finite"
    return "accepted"


def b64_of(obj: object) -> bytes:
    return base64.b64encode(saved(obj))


# -- well-formed payloads -------------------------------------------------------------
@fuzz_settings(250)
@given(spec=SPECS, engine_dtype=ENGINE_DTYPES)
def test_saved_tensors_get_the_outcome_their_structure_predicts(spec: TensorSpec, engine_dtype: torch.dtype):
    tensor, limits = make_tensor(spec), limits_for(engine_dtype)
    outcome = check_base64_contract(b64_of(tensor), limits)
    assert outcome.rule == predicted_rule(tensor, limits), outcome.message
    if outcome.tensor is not None:
        expected = tensor.detach().resolve_neg().to(engine_dtype).reshape(outcome.tensor.shape)
        assert torch.equal(outcome.tensor, expected)


@fuzz_settings(60)
@given(spec=VALID_SPECS, engine_dtype=ENGINE_DTYPES, as_str=st.booleans())
def test_valid_payloads_are_accepted_as_str_or_bytes(
    spec: TensorSpec, engine_dtype: torch.dtype, as_str: bool
):
    """The control case: without it, a decoder that rejected everything
    would pass every other test here."""
    tensor = make_tensor(spec)
    encoded = b64_of(tensor)
    outcome = check_base64_contract(encoded.decode() if as_str else encoded, limits_for(engine_dtype))
    assert outcome.rule == "accepted", outcome.message
    assert torch.equal(outcome.tensor, tensor.to(engine_dtype))


# -- mutated payloads -------------------------------------------------------------------
def mutate_data_pkl(body: bytes, rng: random.Random) -> bytes:
    """Change one opcode of torch.save's pickle, then rezip with a valid CRC."""
    members = read_members(body)
    index = next(i for i, (name, _) in enumerate(members) if name.endswith("data.pkl"))
    members[index] = (members[index][0], mutate_pickle(members[index][1], rng))
    return plain_zip(members)


MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    **{mutator.__name__: mutator for mutator in BYTE_MUTATORS},
    "zip_header_field": tamper_header,
    "zip_members": mutate_zip,
    "pickle_opcode": mutate_data_pkl,
}


@pytest.mark.parametrize("name", list(MUTATORS))
@fuzz_settings(25)
@given(spec=SPECS, engine_dtype=ENGINE_DTYPES, rng=RANDOMS)
def test_each_mutation_keeps_the_contract(
    name: str, spec: TensorSpec, engine_dtype: torch.dtype, rng: random.Random
):
    body = MUTATORS[name](saved(make_tensor(spec)), rng)
    check_base64_contract(base64.b64encode(body), limits_for(engine_dtype))


@fuzz_settings(250)
@given(spec=SPECS, control=st.integers(0, 255), rng=RANDOMS)
def test_stacked_mutations_keep_the_contract(spec: TensorSpec, control: int, rng: random.Random):
    data = make_input(control & ~TEXT_MODE, saved(make_tensor(spec)))
    for _ in range(3):
        data = mutate(data, rng)
    limits, encoded = split_input(data)
    check_base64_contract(encoded, limits)


@fuzz_settings(150)
@given(spec=SPECS, rng=RANDOMS, as_str=st.booleans())
def test_corrupted_base64_is_refused_before_decoding(spec: TensorSpec, rng: random.Random, as_str: bool):
    text = corrupt_base64(b64_of(make_tensor(spec)), rng)
    outcome = check_base64_contract(text.decode("latin-1") if as_str else text, limits_for(torch.float32))
    if not BASE64_ALPHABET.fullmatch(text):
        assert outcome.rule in {"bad_base64", "embeds_too_small", "embeds_too_large"}, outcome.message


@fuzz_settings(100)
@given(raw=st.binary(max_size=400))
def test_decoded_size_matches_decoding_and_gates_first(raw: bytes):
    encoded = base64.b64encode(raw)
    assert decoded_size(encoded) == len(raw)
    outcome = check_base64_contract(encoded, limits_for(torch.float32))
    if len(raw) < 100:
        assert outcome.rule == "embeds_too_small" and f"decodes to {len(raw)} bytes" in outcome.message


# -- what is not a tensor ------------------------------------------------------------------
PICKLABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    # b"" pickles as a call to builtins.bytes, which weights_only refuses
    | st.binary(min_size=1, max_size=20)
    | st.complex_numbers()
    | st.just(torch.ones(2, HIDDEN)),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
).filter(lambda obj: not isinstance(obj, torch.Tensor))


@fuzz_settings(100)
@given(obj=PICKLABLE)
def test_pickled_objects_are_named_in_the_rejection(obj: Any):
    outcome = check_base64_contract(b64_of(obj), limits_for(torch.float32))
    assert outcome.rule == "not_a_tensor"
    assert f"holds a pickled {type(obj).__name__}, not a tensor" in outcome.message


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickled_code_never_runs(protocol: int):
    calls = len(CANARY_CALLS)
    outcome = check_base64_contract(
        base64.b64encode(saved(CallsCanary(), pickle_protocol=protocol)), limits_for(torch.float32)
    )
    assert outcome.rule == "not_a_tensor" and "weights_only" in outcome.message
    assert len(CANARY_CALLS) == calls


@fuzz_settings(80)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float16, np.float64, np.int64, np.uint8, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    ),
    as_npz=st.booleans(),
)
def test_numpy_files_are_named_in_the_rejection(array: np.ndarray, as_npz: bool):
    raw = npz_bytes(embeds=array) if as_npz else npy_bytes(array)
    outcome = check_base64_contract(base64.b64encode(raw), limits_for(torch.float32))
    assert outcome.rule == "not_a_tensor"
    assert ("numpy .npz archive" if as_npz else "numpy .npy payload") in outcome.message


# -- sparse payloads ---------------------------------------------------------------------------
def _decoy_first(sparse_payload: bytes) -> bytes:
    """A harmless pickle named x/xdata.pkl listed before the sparse one that
    torch actually loads (it picks data.pkl by the archive's folder name)."""
    members = read_members(sparse_payload)
    folder = members[0][0].split("/")[0]
    dense_pickle = dict(read_members(saved(torch.ones(2, HIDDEN))))["archive/data.pkl"]
    return plain_zip([(f"{folder}/xdata.pkl", dense_pickle), *members])


def _duplicate_name(sparse_payload: bytes) -> bytes:
    """Two members named data.pkl: torch reads the first, zipfile the last."""
    members = read_members(sparse_payload)
    dense = [(n, d) for n, d in read_members(saved(torch.ones(2, HIDDEN))) if n.endswith("data.pkl")]
    return plain_zip([*members, *dense])


SPARSE_FORMS: dict[str, Callable[[torch.Tensor], bytes]] = {
    "coo": lambda dense: saved(dense.to_sparse()),
    "csr": lambda dense: saved(dense.to_sparse_csr()),
    "csc": lambda dense: saved(dense.to_sparse_csc()),
    "bsr": lambda dense: saved(dense.to_sparse_bsr((1, 1))),
    "bsc": lambda dense: saved(dense.to_sparse_bsc((1, 1))),
    "legacy_class": lambda dense: saved(LegacySparse(dense.nonzero().t(), dense[dense != 0], dense.shape)),
    "decoy_member": lambda dense: _decoy_first(saved(dense.to_sparse())),
    "duplicate_member": lambda dense: _duplicate_name(saved(dense.to_sparse())),
}


@pytest.mark.parametrize("form", list(SPARSE_FORMS))
@fuzz_settings(15)
@given(
    spec=st.builds(
        TensorSpec,
        shape=st.tuples(st.integers(1, 4), st.just(HIDDEN)),
        dtype=st.just(torch.float32),
        seed=st.integers(0, 2**16),
    )
)
def test_sparse_payloads_never_reach_torch_load(form: str, spec: TensorSpec):
    """check_base64_contract fails if torch.load builds any sparse tensor:
    the pickle scan must refuse them all first."""
    outcome = check_base64_contract(
        base64.b64encode(SPARSE_FORMS[form](make_tensor(spec))), limits_for(torch.float32)
    )
    if form == "duplicate_member":
        assert outcome.rule == "not_a_tensor" and "duplicate member names" in outcome.message
    else:
        assert outcome.rule == "not_dense" and "sparse tensor payload" in outcome.message


# -- the raw tensor input ----------------------------------------------------------------------
TRITON_NUMPY_DTYPES = [
    np.float32,
    np.float16,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
]


@fuzz_settings(150)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(TRITON_NUMPY_DTYPES),
        shape=st.one_of(
            st.tuples(st.integers(0, 4), st.sampled_from([HIDDEN, HIDDEN + 1])),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        ),
    ),
    transposed=st.booleans(),
    engine_dtype=ENGINE_DTYPES,
)
def test_raw_tensor_inputs_get_the_predicted_outcome(
    array: np.ndarray, transposed: bool, engine_dtype: torch.dtype
):
    if transposed:
        array = array.T
    tensor, limits = tensor_from_numpy(array), limits_for(engine_dtype)
    outcome = check_tensor_contract(tensor, limits)
    assert outcome.rule == predicted_dense_rule(tensor, limits), outcome.message


def test_object_arrays_are_refused_as_bytes():
    with pytest.raises(RequestRejected) as info:
        tensor_from_numpy(np.array([b"x" * 8], dtype=np.object_))
    assert info.value.rule == "bad_dtype"


# -- sampling parameters -----------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.from_regex(r"\s*-?[0-9]{1,6}(\.[0-9]{0,3})?(e-?[0-9])?\s*", fullmatch=True)
    | st.sampled_from(["true", "false", "TRUE", "nan", "inf", "-1", "1e400"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
SAMPLING_JSON = st.dictionaries(st.sampled_from(ALLOWED_KEYS) | st.text(max_size=10), JSON_VALUES, max_size=5)
EXPECTED_TYPES = {
    **dict.fromkeys(["max_tokens", "min_tokens", "top_k"], int),
    **dict.fromkeys(
        ["temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"],
        float,
    ),
    **dict.fromkeys(
        ["ignore_eos", "include_stop_str_in_output", "skip_special_tokens", "spaces_between_special_tokens"],
        bool,
    ),
}


def assert_valid_sampling(params: dict[str, Any]) -> None:
    assert set(params) <= set(ALLOWED_KEYS) and params["max_tokens"] >= 1
    assert not any(key.startswith("guided_") for key in params)  # folded into structured_outputs
    structured = params.get("structured_outputs")
    if structured is not None:
        assert sum(structured.get(kind) is not None for kind in STRUCTURED_KINDS) == 1, structured
        assert len(json.dumps(structured)) <= MAX_STRUCTURED_BYTES + 1024
    for key, value in params.items():
        expected = EXPECTED_TYPES.get(key)
        assert expected is None or type(value) is expected, (key, value)
    assert all(type(s) is str for s in params.get("stop", []))
    assert all(type(i) is int for i in params.get("stop_token_ids", []))
    assert params.get("seed") is None or type(params["seed"]) is int
    assert params.get("min_tokens", 0) <= params["max_tokens"]


def parse_or_reject(text: str) -> None:
    try:
        params = parse_sampling_parameters(text)
    except RequestRejected as exc:
        assert exc.rule == "bad_sampling" and exc.message
        return
    assert_valid_sampling(params)


@fuzz_settings(200)
@given(raw=SAMPLING_JSON)
def test_sampling_json_is_parsed_or_rejected(raw: dict[str, Any]):
    parse_or_reject(json.dumps(raw))


GUIDED_KEYS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")
STRUCTURED_SPECS = st.dictionaries(
    st.sampled_from([*STRUCTURED_KINDS, "disable_any_whitespace", "whitespace_pattern"])
    | st.text(max_size=6),
    JSON_VALUES
    | st.lists(st.text(max_size=4), max_size=4)
    | st.dictionaries(st.text(max_size=4), JSON_VALUES),
    max_size=3,
)


@fuzz_settings(200)
@given(spec=STRUCTURED_SPECS, as_string=st.booleans(), guided=st.sampled_from([None, *GUIDED_KEYS]))
def test_structured_output_specs_are_one_checked_constraint_or_rejected(
    spec: dict[str, Any], as_string: bool, guided: str | None
):
    raw: dict[str, Any] = {"structured_outputs": json.dumps(spec) if as_string else spec}
    if guided is not None:
        raw[guided] = spec.get("regex", "x")
    parse_or_reject(json.dumps(raw))


@fuzz_settings(150)
@given(
    text=st.text(max_size=80)
    | JSON_VALUES.map(json.dumps)
    | st.integers(4000, 5000).map(lambda digits: f'{{"max_tokens": {"9" * digits}}}')
)
def test_any_sampling_text_is_parsed_or_rejected(text: str):
    parse_or_reject(text)


# -- whole requests ------------------------------------------------------------------------------
STRING_VALUES = st.none() | st.binary(max_size=12) | st.text(max_size=12)
REQUEST_INPUTS = st.fixed_dictionaries(
    {},
    optional={
        TEXT_INPUT: STRING_VALUES,
        SAMPLING_INPUT: STRING_VALUES | SAMPLING_JSON.map(lambda raw: json.dumps(raw).encode()),
        EMBEDS_BASE64_INPUT: STRING_VALUES,
        STREAM_INPUT: st.booleans(),
        EXCLUDE_INPUT: st.booleans(),
        **{name: st.none() | st.just(torch.ones(2, HIDDEN)) for name in EMBEDS_TENSOR_INPUTS},
    },
)


@fuzz_settings(200)
@given(inputs=REQUEST_INPUTS, enabled=st.booleans())
def test_requests_are_parsed_or_rejected(inputs: dict[str, Any], enabled: bool):
    try:
        parsed = parse_request(inputs, embeds_enabled=enabled)
    except RequestRejected as exc:
        assert exc.rule in {"embeds_disabled", "multiple_embeds", "no_prompt", "bad_text", "bad_sampling"}
        return
    assert isinstance(parsed, ParsedRequest)
    given_embeds = [name for name in EMBEDS_INPUTS if inputs.get(name) is not None]
    assert len(given_embeds) <= 1 and (enabled or not given_embeds)
    assert (parsed.kind == PromptKind.TEXT) == (not given_embeds)
    assert (parsed.text is None) == bool(given_embeds)
    assert_valid_sampling(parsed.sampling)
