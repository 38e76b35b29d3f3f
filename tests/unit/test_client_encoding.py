"""The client's error hierarchy and its torch.save encoding, without a server."""

from __future__ import annotations

import base64
import io

import pytest
import torch

import triton_embeds as te

HIDDEN = 128


def test_errors_share_one_base():
    for error in (te.BadRequestError, te.NotFoundError, te.ServiceUnavailableError, te.APITimeoutError):
        assert issubclass(error, te.APIError) and issubclass(error, te.TritonEmbedsError)
    assert issubclass(te.ServiceUnavailableError, te.InternalServerError)
    assert issubclass(te.APITimeoutError, te.APIConnectionError)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_encode_prompt_embeds_round_trips_bit_exactly(dtype):
    tensor = torch.randn(5, 7, dtype=torch.float32).to(dtype)
    decoded = torch.load(io.BytesIO(base64.b64decode(te.encode_prompt_embeds(tensor))), weights_only=True)
    assert decoded.dtype == dtype and decoded.shape == tensor.shape
    assert torch.equal(
        decoded.view(torch.int16 if dtype != torch.float32 else torch.int32),
        tensor.view(torch.int16 if dtype != torch.float32 else torch.int32),
    )


def test_encode_prompt_embeds_saves_only_a_views_own_values():
    big = torch.randn(64, HIDDEN)
    view = big[10:14].t()  # non-contiguous, offset into a larger storage
    encoded = te.encode_prompt_embeds(view)
    decoded = torch.load(io.BytesIO(base64.b64decode(encoded)), weights_only=True)
    assert torch.equal(decoded, view)
    assert len(base64.b64decode(encoded)) < 4 * HIDDEN * 4 + 2000  # not the 64-row storage
    assert te.encode_prompt_embeds(view.numpy()) == te.encode_prompt_embeds(view.contiguous())
