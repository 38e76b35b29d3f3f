"""A real tritonserver for the whole session, serving three vLLM models:
`tiny` (random weights, embeddings on), `tiny_noembeds` (embeddings off) and
`smollm2` (SmolLM2-135M-Instruct, where output meaning matters)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from repository_builder import TINY_MODEL_DIR, tiny_engine_args, write_model  # noqa: E402,F401
from tritonserver_launcher import Ports, TritonServer  # noqa: E402

TINY_DIR = TINY_MODEL_DIR
SMOLLM2_DIR = ROOT / "models" / "SmolLM2-135M-Instruct"
TINY_CONTEXT = 512


def ensure_models() -> None:
    python = sys.executable
    if not (TINY_DIR / "config.json").exists():
        subprocess.run([python, str(ROOT / "scripts/make_tiny_model.py"), "--out", str(TINY_DIR)], check=True)
    if not (SMOLLM2_DIR / "config.json").exists():
        subprocess.run([python, str(ROOT / "scripts/prepare_smollm2.py"), "--out", str(SMOLLM2_DIR)], check=True)


def tiny_args(**extra) -> dict:
    return tiny_engine_args(context=TINY_CONTEXT, **extra)


def start_server(repository: Path, log: Path) -> TritonServer:
    server = TritonServer(
        repository,
        ports=Ports.free(),
        log_path=log,
        # One model at a time: with engines starting together on a loaded
        # 2-core host, Triton has given up on a stub mid-initialize and then
        # waited forever for it to exit.
        extra_args=["--model-load-thread-count=1"],
    )
    server.start()
    try:
        server.wait_ready(timeout_s=900)
    except BaseException:
        server.stop()
        print(log.read_text()[-5000:])
        raise
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> TritonServer:
    ensure_models()
    repository = tmp_path_factory.mktemp("model_repository")
    write_model(repository, "tiny", tiny_args(), {"max_embeds_bytes": 10 * 1024 * 1024})
    write_model(repository, "tiny_noembeds", tiny_args(enable_prompt_embeds=False))
    write_model(
        repository,
        "smollm2",
        {"model": str(SMOLLM2_DIR), "enable_prompt_embeds": True, "dtype": "float32",
         "max_model_len": 4096, "enforce_eager": True},
    )
    server = start_server(repository, repository.parent / "tritonserver.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def grpc_url(server) -> str:
    return server.grpc_url


@pytest.fixture(scope="session")
def http_url(server) -> str:
    return server.http_url


@pytest.fixture(scope="session")
def metrics_url(server) -> str:
    return f"localhost:{server.ports.metrics}"
