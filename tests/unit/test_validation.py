"""Pure logic of embeddings decoding, validation and sampling parsing (no server)."""

from __future__ import annotations

import base64
import json
import struct
import threading

import pytest
import torch

from embeds_backend.embeds import (
    EmbedsLimits,
    all_finite,
    decode_base64_embeds,
    decoded_size,
    validate_embeds,
)
from embeds_backend.errors import RequestRejected
from embeds_backend.sampling import (
    MAX_STRUCTURED_BYTES,
    RequestOptions,
    parse_sampling_parameters,
    split_request_options,
)
from tools.payloads import bf16_exact, plain_zip, saved, sparse_out_of_range_payload, torch_b64, zip_members

LIMITS = EmbedsLimits(hidden_size=128, dtype=torch.float32)


@pytest.mark.parametrize("length", range(0, 40))
def test_decoded_size_matches_real_decoding(length):
    encoded = base64.b64encode(b"x" * length)
    assert decoded_size(encoded) == length
    assert decoded_size(encoded.decode()) == length


def test_valid_payload_round_trips():
    tensor = bf16_exact((7, 128))
    out = decode_base64_embeds(torch_b64(tensor), LIMITS)
    assert torch.equal(validate_embeds(out, LIMITS), tensor)


def test_cast_to_engine_dtype_and_overflow_counts_as_non_finite():
    half = EmbedsLimits(hidden_size=128, dtype=torch.float16)
    tensor = bf16_exact((3, 128))
    assert validate_embeds(tensor, half).dtype == torch.float16
    tensor[0, 0] = 1e6  # finite in fp32, +inf in fp16
    with pytest.raises(RequestRejected) as info:
        validate_embeds(tensor, half)
    assert info.value.rule == "not_finite"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_all_finite_finds_one_non_finite_value_in_any_dtype(dtype, bad):
    tensor = torch.ones(64, 128, dtype=dtype)
    assert all_finite(tensor)
    tensor[63, 127] = bad
    assert not all_finite(tensor)


def test_all_finite_finds_opposite_infinities_whose_sum_is_nan():
    tensor = torch.zeros(4, 128)
    tensor[0, 0], tensor[3, 5] = float("inf"), float("-inf")
    assert not all_finite(tensor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_finite_accepts_finite_values_whose_sum_overflows(dtype):
    """The one-pass sum overflows to inf here, yet every value is finite."""
    tensor = torch.full((16, 128), 3e38, dtype=dtype)
    assert torch.isinf(tensor.sum(dtype=torch.float32))
    assert all_finite(tensor)
    assert torch.equal(validate_embeds(tensor, EmbedsLimits(hidden_size=128, dtype=dtype)), tensor)


def test_float16_values_whose_float16_sum_overflows_are_finite():
    tensor = torch.full((16, 128), 60000.0, dtype=torch.float16)
    assert torch.isinf(tensor.sum())
    assert all_finite(tensor)


def test_sparse_payloads_are_refused_before_loading_under_concurrency():
    """torch validates loaded sparse tensors through a module-global list that
    concurrent loads clear for each other; the pickle scan must refuse every
    sparse payload before torch.load, whatever the other threads do."""
    payload = sparse_out_of_range_payload(128)
    failures: list[str] = []

    def load() -> None:
        for _ in range(20):
            try:
                decode_base64_embeds(payload, LIMITS)
                failures.append("loaded an out-of-range sparse tensor")
            except RequestRejected as exc:
                if exc.rule != "not_dense" or "sparse tensor payload" not in exc.message:
                    failures.append(f"{exc.rule}: {exc.message}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.parametrize("layout", ["coo", "csr", "csc", "bsr"])
def test_every_sparse_layout_is_refused_unloaded(layout: str):
    dense = bf16_exact((4, 128))
    sparse = {
        "coo": dense.to_sparse,
        "csr": dense.to_sparse_csr,
        "csc": dense.to_sparse_csc,
        "bsr": lambda: dense.to_sparse_bsr((2, 2)),
    }[layout]()
    with pytest.raises(RequestRejected) as info:
        decode_base64_embeds(torch_b64(sparse), LIMITS)
    assert info.value.rule == "not_dense"


def test_sampling_defaults_and_string_values():
    assert parse_sampling_parameters(None) == {"max_tokens": 16}
    parsed = parse_sampling_parameters('{"temperature": "0.5", "max_tokens": "8", "ignore_eos": "true"}')
    assert parsed == {"temperature": 0.5, "max_tokens": 8, "ignore_eos": True}


def test_the_backends_clients_keys_are_accepted():
    """Triton's vLLM backend clients and its OpenAI frontend send n=1, and
    logprobs (with return_logprobs)."""
    params = parse_sampling_parameters('{"n": "1", "logprobs": 5, "temperature": "0"}')
    assert params == {"n": 1, "logprobs": 5, "temperature": 0.0, "max_tokens": 16}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"max_tokens": 0}', "must be at least 1"),
        ('{"top_p": 0}', "must be in (0, 1]"),
        ('{"temperature": NaN}', "finite"),
        ('{"max_tokens": 2.5}', "expected an integer"),
        ('{"min_tokens": 9, "max_tokens": 8}', "exceeds"),
        ("[1, 2]", "must be a JSON object"),
        ('{"n": 17}', "n=17 must be between 1 and 16"),
        ('{"n": 0}', "n=0 must be between 1 and 16"),
        ('{"best_of": 2}', "unknown sampling parameter 'best_of'"),
        ('{"prompt_logprobs": 21}', "prompt_logprobs=21 must be between 0 and 20"),
        ('{"truncate_prompt_tokens": 0}', "must be at least 1"),
        ('{"cache_salt": ""}', "cache_salt='' must be 1 to 256 characters"),
        ('{"lora_name": 3}', "expected a string"),
        ('{"structured_outputs": {"regex": "a", "choice": ["b"]}}', "exactly one of"),
        ('{"structured_outputs": {}}', "exactly one of"),
        ('{"structured_outputs": {"regex": "a", "backend": "x"}}', "unknown keys 'backend'"),
        ('{"structured_outputs": "not json"}', "structured_outputs='not json' is invalid"),
        ('{"structured_outputs": {"choice": []}}', "a list of 1 to 256 non-empty strings"),
        ('{"structured_outputs": {"json_object": false}}', "json_object must be true"),
        ('{"structured_outputs": {"grammar": "  "}}', "a non-empty grammar"),
        ('{"guided_regex": "a", "guided_choice": ["b"]}', "one structured output constraint"),
        ('{"guided_regex": "a", "structured_outputs": {"regex": "b"}}', "one structured output constraint"),
        ('{"logprobs": 21}', "logprobs=21 must be between 0 and 20"),
        ('{"logprobs": -1}', "logprobs=-1 must be between 0 and 20"),
    ],
)
def test_sampling_rejections(text, fragment):
    with pytest.raises(RequestRejected) as info:
        parse_sampling_parameters(text)
    assert info.value.rule == "bad_sampling"
    assert fragment in info.value.message


@pytest.mark.parametrize(
    "sampling, fragment",
    [
        ({"stop": ["x"] * 65}, "stop has 65 strings"),
        ({"stop": ["x" * 1025]}, "a string of 1025 characters"),
        ({"stop_token_ids": list(range(1025))}, "stop_token_ids has 1025 entries"),
    ],
)
def test_sampling_lists_are_bounded(sampling, fragment):
    import json

    with pytest.raises(RequestRejected) as info:
        parse_sampling_parameters(json.dumps(sampling))
    assert fragment in info.value.message


def test_structured_outputs_normalize_to_one_constraint():
    schema = {"type": "object"}
    as_object = parse_sampling_parameters(json.dumps({"structured_outputs": {"json": schema}}))
    as_string = parse_sampling_parameters(json.dumps({"structured_outputs": json.dumps({"json": schema})}))
    older_key = parse_sampling_parameters(json.dumps({"guided_json": schema}))
    assert as_object["structured_outputs"] == as_string["structured_outputs"] == {"json": schema}
    assert older_key["structured_outputs"] == {"json": schema} and "guided_json" not in older_key


def test_structured_constraints_are_bounded():
    huge = "a" * (MAX_STRUCTURED_BYTES + 1)
    with pytest.raises(RequestRejected, match=r"structured_outputs\.regex is 32769 characters long"):
        parse_sampling_parameters(json.dumps({"structured_outputs": {"regex": huge}}))
    many = [f"c{i}" for i in range(257)]
    with pytest.raises(RequestRejected, match="1 to 256 non-empty strings"):
        parse_sampling_parameters(json.dumps({"guided_choice": many}))


def test_request_options_leave_the_sampling_parameters():
    params = parse_sampling_parameters(
        '{"lora_name": "a", "truncate_prompt_tokens": "5", "cache_salt": "t1", "n": 2, "seed": 3}'
    )
    options = split_request_options(params)
    assert options == RequestOptions(lora_name="a", truncate_prompt_tokens=5, cache_salt="t1")
    assert params == {"n": 2, "seed": 3, "max_tokens": 16}


def test_sampling_json_size_and_depth_are_bounded():
    with pytest.raises(RequestRejected, match="above the limit of 65536"):
        parse_sampling_parameters('{"stop": ["' + "x" * 70000 + '"]}')
    with pytest.raises(RequestRejected, match="nested too deeply"):
        parse_sampling_parameters('{"stop": ' + "[" * 20000 + "]" * 20000 + "}")


def unname_last_member(archive: bytes) -> bytes:
    """The archive with its one-character last member name made empty
    (zipfile cannot write one): the name byte becomes a 1-byte extra field in
    both headers, so no offset moves."""
    data = bytearray(archive)
    local, central = data.rfind(b"PK\x03\x04"), data.rfind(b"PK\x01\x02")
    struct.pack_into("<HH", data, local + 26, 0, 1)
    struct.pack_into("<HH", data, central + 28, 0, 1)
    return bytes(data)


def test_a_member_with_an_empty_name_is_a_rejection_not_a_crash():
    """Found by the chat fuzzer: zipfile's own is_dir() raises IndexError on
    an empty member name; the container check must reject it by rule."""
    archive = plain_zip([*zip_members(saved(bf16_exact((2, 8)))), ("Z", b"")])
    with pytest.raises(RequestRejected) as info:
        decode_base64_embeds(base64.b64encode(unname_last_member(archive)), EmbedsLimits(8, torch.float32))
    assert info.value.rule == "not_a_tensor"
