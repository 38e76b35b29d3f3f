"""Model settings: vLLM engine arguments from `model.json` (as Triton's vLLM
backend does) and backend knobs from `config.pbtxt` parameters."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chat_prompt import DEFAULT_MAX_MIXED_BYTES
from .embeds import DEFAULT_MAX_EMBEDS_BYTES

# Engine defaults this backend needs unless model.json says otherwise:
# its own metrics replace vLLM's stat logging, and request logs would print
# every prompt (the point of embeddings is keeping text off the server).
_ENGINE_DEFAULTS: dict[str, Any] = {"disable_log_stats": True, "enable_log_requests": False}


@dataclass(frozen=True)
class BackendSettings:
    """Knobs read from config.pbtxt `parameters`."""

    max_embeds_bytes: int = DEFAULT_MAX_EMBEDS_BYTES
    # 0 means no limit; past it a request gets UNAVAILABLE at once, not a queue.
    max_concurrent_requests: int = 0
    # Threads that decode and validate embeds off the engine's event loop.
    decode_workers: int = 4
    # How often in-flight requests are checked for client cancellation.
    cancel_poll_interval_s: float = 0.05
    # Chat: the messages JSON's size (checked before parsing), the number of
    # messages, and content parts over all messages.
    max_messages_bytes: int = 16 * 1024 * 1024
    max_chat_messages: int = 256
    max_chat_parts: int = 256
    # The rows of a prompt mixing template tokens and embeddings parts: vLLM
    # takes one row per position.
    max_mixed_embeds_bytes: int = DEFAULT_MAX_MIXED_BYTES
    # Seconds held requests get to finish once a drain file without its own
    # deadline appears (the replica supervisor always writes one).
    drain_timeout_s: float = 30.0


@dataclass(frozen=True)
class ModelFile:
    """model.json: vLLM engine arguments, plus the keys that configure this
    backend rather than the engine."""

    engine_args: dict[str, Any]
    # Jinja text that replaces the tokenizer's chat template.
    chat_template: str | None = None
    # LoRA adapters from multi_lora.json: name -> directory.
    lora_adapters: dict[str, str] = field(default_factory=dict)


# Beside model.json, as in Triton's vLLM backend: {"adapter name": "path"}.
MULTI_LORA_FILE = "multi_lora.json"


def load_model_file(model_json: Path, repository_root: Path) -> ModelFile:
    """`chat_template` is the template itself (Jinja: it has a "{") or a
    file path, relative to model.json's directory or else the project root.
    Adapter paths in multi_lora.json are found the same way."""
    args = load_engine_args(model_json, repository_root)
    bases = (model_json.parent, repository_root)
    template = args.pop("chat_template", None)
    if template is not None:
        if not isinstance(template, str) or not template:
            raise ValueError(f"{model_json}: chat_template must be Jinja text or a file path")
        if "{" not in template:
            template = _find(template, bases, model_json, "chat_template file").read_text()
    adapters = load_lora_adapters(model_json.parent / MULTI_LORA_FILE, bases, bool(args.get("enable_lora")))
    return ModelFile(args, template, adapters)


def load_lora_adapters(path: Path, bases: tuple[Path, ...], lora_enabled: bool) -> dict[str, str]:
    """Checked at load, so a typo fails the model rather than every request
    that names the adapter."""
    if not path.exists():
        return {}
    if not lora_enabled:
        raise ValueError(f'{path} declares LoRA adapters: set "enable_lora": true in model.json')
    declared = json.loads(path.read_text())
    if not isinstance(declared, dict) or not all(isinstance(v, str) and k for k, v in declared.items()):
        raise ValueError(f'{path} must map adapter names to directories: {{"name": "path"}}')
    adapters = {}
    for name, directory in declared.items():
        found = directory if os.path.isabs(directory) else str(_find(directory, bases, path, "adapter"))
        if not (Path(found) / "adapter_config.json").is_file():
            raise ValueError(f"{path}: adapter {name!r} at {found} has no adapter_config.json")
        adapters[name] = found
    return adapters


def _find(relative: str, bases: tuple[Path, ...], source: Path, what: str) -> Path:
    for base in bases:
        candidate = base / relative
        if candidate.exists():
            return candidate
    searched = ", ".join(str(base) for base in bases)
    raise ValueError(f"{source}: {what} {relative!r} not found (looked in {searched})")


def load_engine_args(model_json: Path, repository_root: Path) -> dict[str, Any]:
    """Read model.json. A relative `model` path is taken from the directory
    that holds the model repository when it exists there, so the shipped
    repository finds `models/...` from the project root; anything else (a
    hub id, an absolute path) is passed to vLLM unchanged."""
    args = dict(_ENGINE_DEFAULTS)
    args.update(json.loads(model_json.read_text()))
    model = args.get("model")
    if not model:
        raise ValueError(f"{model_json} must name a model")
    local = repository_root / str(model)
    if not os.path.isabs(model) and local.exists():
        args["model"] = str(local)
        args.setdefault("tokenizer", str(local))
    return args


def load_backend_settings(model_config: Mapping[str, Any]) -> BackendSettings:
    """Triton model config parameters are {"key": {"string_value": "..."}}."""
    params = {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}
    defaults = BackendSettings()
    return BackendSettings(
        max_embeds_bytes=int(params.get("max_embeds_bytes") or defaults.max_embeds_bytes),
        max_concurrent_requests=int(
            params.get("max_concurrent_requests") or defaults.max_concurrent_requests
        ),
        decode_workers=int(params.get("decode_workers") or defaults.decode_workers),
        cancel_poll_interval_s=float(params.get("cancel_poll_interval_s") or defaults.cancel_poll_interval_s),
        max_messages_bytes=int(params.get("max_messages_bytes") or defaults.max_messages_bytes),
        max_chat_messages=int(params.get("max_chat_messages") or defaults.max_chat_messages),
        max_chat_parts=int(params.get("max_chat_parts") or defaults.max_chat_parts),
        max_mixed_embeds_bytes=int(params.get("max_mixed_embeds_bytes") or defaults.max_mixed_embeds_bytes),
        drain_timeout_s=float(params.get("drain_timeout_s") or defaults.drain_timeout_s),
    )
