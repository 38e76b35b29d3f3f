"""A real tritonserver for the whole session, serving three vLLM models:
`tiny` (random weights, embeddings on), `tiny_noembeds` (embeddings off) and
`smollm2` (SmolLM2-135M-Instruct, where output meaning matters)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.hostile_corpus import MAX_MIXED_BYTES
from tools.models import ensure_models
from tools.models.lora import build_adapter
from tools.paths import SMOLLM2_DIR, TINY_MODEL_DIR
from tools.server.launcher import TritonServer, start_ready_server
from tools.server.repository import (
    TINY_ADAPTER,
    TINY_CHAT_TEMPLATE,
    TINY_LORA_RANK,
    tiny_engine_args,
    tokenizer_without_chat_template,
    write_model,
)

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this tier's tests `server` (the hook sees every collected item,
    so the unit tier's are left alone by path)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    ensure_models()
    repository = tmp_path_factory.mktemp("model_repository")
    adapter = build_adapter(TINY_MODEL_DIR, repository.parent / "tiny-adapter", rank=TINY_LORA_RANK)
    write_model(
        repository,
        "tiny",
        tiny_engine_args(
            chat_template=TINY_CHAT_TEMPLATE, enable_lora=True, max_lora_rank=TINY_LORA_RANK, max_loras=1
        ),
        {"max_embeds_bytes": 10 * 1024 * 1024, "max_mixed_embeds_bytes": MAX_MIXED_BYTES},
        lora_adapters={TINY_ADAPTER: adapter},
    )
    # Embeddings off and no chat template: the model for both rejections.
    bare_tokenizer = tokenizer_without_chat_template(TINY_MODEL_DIR, repository.parent / "tiny-tokenizer")
    write_model(
        repository,
        "tiny_noembeds",
        tiny_engine_args(enable_prompt_embeds=False, tokenizer=str(bare_tokenizer)),
    )
    write_model(
        repository,
        "smollm2",
        {
            "model": str(SMOLLM2_DIR),
            "enable_prompt_embeds": True,
            "dtype": "float32",
            "max_model_len": 4096,
            "enforce_eager": True,
        },
    )
    server = start_ready_server(repository, repository.parent / "tritonserver.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def grpc_url(server: TritonServer) -> str:
    return server.grpc_url


@pytest.fixture(scope="session")
def http_url(server: TritonServer) -> str:
    return server.http_url


@pytest.fixture(scope="session")
def metrics_url(server: TritonServer) -> str:
    return server.metrics_url
