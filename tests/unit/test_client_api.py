"""The client's public surface, without a server: the sync and async
`create` take the same arguments, settings stay writable, and resources keep
their client alive."""

from __future__ import annotations

import gc
import inspect
import weakref
from typing import get_type_hints

import pytest

import triton_embeds as te
from triton_embeds.resources.completions import AsyncCompletions, CompletionParams, Completions


def test_completion_params_list_every_argument_of_create() -> None:
    parameters = set(inspect.signature(AsyncCompletions.create).parameters) - {"self", "model", "stream"}
    assert set(get_type_hints(CompletionParams)) == parameters


def test_sync_create_shows_the_async_signature_and_docs() -> None:
    assert inspect.signature(Completions.create) == inspect.signature(AsyncCompletions.create)
    assert Completions.create.__doc__ == AsyncCompletions.create.__doc__
    assert inspect.signature(Completions.create).parameters["max_tokens"].default == 16


def test_timeout_and_transport_can_be_changed_after_construction() -> None:
    client = te.AsyncClient("localhost:1", timeout=5)
    client.timeout = 30
    client.embeds_transport = "base64"
    assert (client.timeout, client.embeds_transport) == (30, "base64")
    http = te.AsyncClient("http://localhost:1")
    with pytest.raises(ValueError, match="flattens arrays"):
        http.embeds_transport = "binary"


def test_a_resource_keeps_its_client_alive() -> None:
    client = te.Client("localhost:1")
    finalized = weakref.ref(client)
    models, completions = client.models, client.completions
    del client
    gc.collect()
    assert finalized() is not None, "the client (and its loop) died under its resources"
    del models, completions
    gc.collect()
    assert finalized() is None
