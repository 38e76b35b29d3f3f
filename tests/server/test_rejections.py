"""Every validation rule through the real server: INVALID_ARG with a specific
message, and the engine unharmed afterwards (same greedy output as before)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tools.infer import GREEDY, grpc_infer, http_body, http_generate, make_inputs
from tools.metrics import metric_value
from tools.payloads import (
    b64,
    bf16_exact,
    malicious_pickle_payload,
    npy_payload,
    sparse_huge_shape_payload,
    sparse_out_of_range_payload,
    torch_b64,
)
from tools.server.repository import TINY_CONTEXT
from triton_embeds.protocol import EMBEDS_BASE64_INPUT

HIDDEN = 128
MARKER = Path("/tmp/triton-embeds-malicious-pickle-ran")


def good() -> torch.Tensor:
    return bf16_exact((5, HIDDEN), seed=3)


def with_nan() -> np.ndarray:
    array = good().numpy().copy()
    array[2, 7] = np.nan
    return array


def with_value(value: float) -> torch.Tensor:
    tensor = good().clone()
    tensor[1, 1] = value
    return tensor


# (case id, model, inputs, rule, message fragment)
CASES = [
    (
        "bad_base64",
        "tiny",
        lambda: make_inputs(embeds_b64="@@not*base64!!" * 20),
        "bad_base64",
        "not valid base64",
    ),
    (
        "urlsafe_base64",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(good()).replace("+", "-").replace("/", "_") + "-_"),
        "bad_base64",
        "not valid base64",
    ),
    (
        "too_small",
        "tiny",
        lambda: make_inputs(embeds_b64=b64(b"x" * 50)),
        "embeds_too_small",
        "decodes to 50 bytes",
    ),
    (
        "too_large",
        "tiny",
        lambda: make_inputs(embeds_b64="A" * (14 * 1024 * 1024)),
        "embeds_too_large",
        "decodes to 11010048 bytes",
    ),
    (
        "not_torch",
        "tiny",
        lambda: make_inputs(embeds_b64=b64(b"hello, this is not a torch payload " * 5)),
        "not_a_tensor",
        "not a torch.save payload",
    ),
    (
        "numpy_npy",
        "tiny",
        lambda: make_inputs(embeds_b64=npy_payload(good().numpy())),
        "not_a_tensor",
        "numpy .npy",
    ),
    (
        "pickled_dict",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64({"embeds": good()})),
        "not_a_tensor",
        "pickled dict",
    ),
    (
        "malicious_pickle",
        "tiny",
        lambda: make_inputs(embeds_b64=malicious_pickle_payload(str(MARKER))),
        "not_a_tensor",
        "weights_only",
    ),
    (
        "sparse_out_of_range",
        "tiny",
        lambda: make_inputs(embeds_b64=sparse_out_of_range_payload(HIDDEN)),
        "not_dense",
        "got a sparse tensor payload",
    ),
    (
        "sparse_huge_shape",
        "tiny",
        lambda: make_inputs(embeds_b64=sparse_huge_shape_payload()),
        "not_dense",
        "got a sparse tensor payload",
    ),
    (
        "wrong_hidden",
        "tiny",
        lambda: make_inputs(embeds=bf16_exact((5, 100)).numpy()),
        "hidden_size",
        "hidden size 100 does not match the model's hidden size 128",
    ),
    (
        "wrong_hidden_b64",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(bf16_exact((5, 576)))),
        "hidden_size",
        "hidden size 576",
    ),
    (
        "one_dim",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(bf16_exact((HIDDEN * 2,)))),
        "bad_shape",
        "got [256]",
    ),
    (
        "four_dim",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(bf16_exact((1, 1, 5, HIDDEN)))),
        "bad_shape",
        "got [1, 1, 5, 128]",
    ),
    (
        "batch_of_two",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(bf16_exact((2, 5, HIDDEN)))),
        "bad_shape",
        "got [2, 5, 128]",
    ),
    (
        "zero_rows",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(torch.zeros((0, HIDDEN)))),
        "bad_shape",
        "no rows",
    ),
    (
        "int64",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(torch.ones((5, HIDDEN), dtype=torch.int64))),
        "bad_dtype",
        "dtype int64 is not accepted",
    ),
    (
        "bool",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(torch.ones((5, HIDDEN), dtype=torch.bool))),
        "bad_dtype",
        "dtype bool is not accepted",
    ),
    ("nan_tensor", "tiny", lambda: make_inputs(embeds=with_nan()), "not_finite", "1 NaN and 0 infinite"),
    (
        "nan_b64",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(torch.from_numpy(with_nan()))),
        "not_finite",
        "1 NaN",
    ),
    (
        "plus_inf",
        "tiny",
        lambda: make_inputs(embeds_b64=torch_b64(with_value(float("inf")))),
        "not_finite",
        "0 NaN and 1 infinite",
    ),
    (
        "minus_inf",
        "tiny",
        lambda: make_inputs(embeds=with_value(float("-inf")).numpy()),
        "not_finite",
        "0 NaN and 1 infinite",
    ),
    (
        "too_long",
        "tiny",
        lambda: make_inputs(
            embeds=bf16_exact((TINY_CONTEXT - 4, HIDDEN)).numpy(), sampling={"max_tokens": 8}
        ),
        "too_long",
        "prompt of 508 positions plus max_tokens=8 exceeds the model's context length of 512",
    ),
    (
        "both_embeds",
        "tiny",
        lambda: make_inputs(embeds=good().numpy(), embeds_b64=torch_b64(good())),
        "multiple_embeds",
        "exactly one prompt embeddings input, got prompt_embeds, prompt_embeds_base64",
    ),
    ("no_prompt", "tiny", lambda: make_inputs(sampling=GREEDY), "no_prompt", "no prompt"),
    (
        "embeds_disabled",
        "tiny_noembeds",
        lambda: make_inputs(embeds=good().numpy()),
        "embeds_disabled",
        '"enable_prompt_embeds": true',
    ),
    (
        "bad_sampling_json",
        "tiny",
        lambda: make_inputs(text="hi", sampling="{max_tokens: 8"),
        "bad_sampling",
        "not valid JSON",
    ),
    (
        "unknown_sampling_key",
        "tiny",
        lambda: make_inputs(text="hi", sampling={"max_tokenz": 8}),
        "bad_sampling",
        "unknown sampling parameter 'max_tokenz'",
    ),
    (
        "bad_sampling_value",
        "tiny",
        lambda: make_inputs(text="hi", sampling={"temperature": "hot"}),
        "bad_sampling",
        "temperature='hot' is invalid",
    ),
    (
        "invalid_utf8",
        "tiny",
        lambda: make_inputs(text=b"\xff\xfe bad".decode("latin-1").encode("latin-1")),
        "bad_text",
        "not valid UTF-8",
    ),
]


@pytest.fixture(scope="module")
def reference(grpc_url) -> str:
    result = grpc_infer(grpc_url, "tiny", make_inputs(embeds=good().numpy(), sampling=GREEDY))
    assert result.error is None
    return result.text


@pytest.mark.parametrize("case_id, model, build, rule, fragment", CASES, ids=[c[0] for c in CASES])
def test_rejection_is_specific_and_harmless(
    grpc_url, http_url, metrics_url, reference, case_id, model, build, rule, fragment
):
    MARKER.unlink(missing_ok=True)
    before = metric_value(metrics_url, "embeds_rejections_total", model=model, rule=rule)
    inputs = build()
    # Triton's gRPC stream carries a model's error as its message only.
    result = grpc_infer(grpc_url, model, inputs)
    assert result.error is not None and fragment in result.error, result.error
    assert not result.chunks and result.final_flags == 1
    rejections = 1
    body = http_body(inputs)
    if body is not None:  # over HTTP the code shows: INVALID_ARG is 400
        events = http_generate(http_url, model, body)
        assert events[0]["http_status"] == 400 and fragment in events[0]["error"], events
        rejections += 1
    assert metric_value(metrics_url, "embeds_rejections_total", model=model, rule=rule) == before + rejections
    assert not MARKER.exists(), "a pickle ran code on the server"
    after = grpc_infer(grpc_url, "tiny", make_inputs(embeds=good().numpy(), sampling=GREEDY))
    assert after.text == reference


def test_rejections_over_http_are_400(http_url):
    events = http_generate(http_url, "tiny", {EMBEDS_BASE64_INPUT: torch_b64(bf16_exact((5, 64)))})
    assert events[0]["http_status"] == 400
    assert "hidden size 64" in events[0]["error"]


def test_nan_attempt_does_not_corrupt_the_next_request(grpc_url, reference):
    """vLLM accepts NaN embeds and the poisoned KV block corrupts whoever
    reuses it; here the NaN never reaches the engine."""
    for _ in range(3):
        assert grpc_infer(grpc_url, "tiny", make_inputs(embeds=with_nan(), sampling=GREEDY)).error
        assert (
            grpc_infer(grpc_url, "tiny", make_inputs(embeds=good().numpy(), sampling=GREEDY)).text
            == reference
        )
