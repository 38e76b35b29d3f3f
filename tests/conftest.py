"""A real tritonserver for the whole session, serving three vLLM models:
`tiny` (random weights, embeddings on), `tiny_noembeds` (embeddings off) and
`smollm2` (SmolLM2-135M-Instruct, where output meaning matters)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tritonserver_launcher import Ports, TritonServer  # noqa: E402

TINY_DIR = ROOT / "models" / "tiny-llama"
SMOLLM2_DIR = ROOT / "models" / "SmolLM2-135M-Instruct"
TINY_CONTEXT = 512


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_models() -> None:
    python = sys.executable
    if not (TINY_DIR / "config.json").exists():
        subprocess.run([python, str(ROOT / "scripts/make_tiny_model.py"), "--out", str(TINY_DIR)], check=True)
    if not (SMOLLM2_DIR / "config.json").exists():
        subprocess.run([python, str(ROOT / "scripts/prepare_smollm2.py"), "--out", str(SMOLLM2_DIR)], check=True)


def write_model(repository: Path, name: str, engine_args: dict, parameters: dict | None = None) -> None:
    """Copy the shipped model (config.pbtxt + 1/) under a new name with its own model.json."""
    source = ROOT / "model_repository" / "vllm_model"
    target = repository / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "model.json"))
    (target / "1" / "model.json").write_text(json.dumps(engine_args))
    for key, value in (parameters or {}).items():
        config = target / "config.pbtxt"
        text = config.read_text()
        marker = f'{{ key: "{key}", value: {{ string_value: "'
        start = text.index(marker) + len(marker)
        end = text.index('"', start)
        config.write_text(text[:start] + str(value) + text[end:])


def tiny_args(**extra) -> dict:
    return {
        "model": str(TINY_DIR),
        "enable_prompt_embeds": True,
        "dtype": "float32",
        "max_model_len": TINY_CONTEXT,
        "enforce_eager": True,  # skips a ~30 s compile warm-up per engine
        **extra,
    }


def start_server(repository: Path, log: Path) -> TritonServer:
    server = TritonServer(
        repository,
        ports=Ports(http=free_port(), grpc=free_port(), metrics=free_port()),
        log_path=log,
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
