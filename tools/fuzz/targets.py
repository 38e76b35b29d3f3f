"""What a campaign can fuzz. A target bundles how one input is executed
against its contract, its seed corpus, its mutator and what atheris
instruments; the campaign machinery (workers, findings, replay) is the same
for every target.

- `embeds`: the embeddings payload decoder and validator (`oracle`, `inputs`);
- `chat`: a chat request from the request parser to the engine prompt:
  messages, chat_parameters, an optional raw embeddings input and the served
  model's chat template (`chat_oracle`, `chat_inputs`).
"""

from __future__ import annotations

import functools
import pickletools
import random
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

import embeds_backend.embeds

from .oracle import Outcome

DEFAULT_TARGET = "embeds"


def message_shape(outcome: Outcome) -> str:
    """The rule and the shape of its message (numbers stripped): a new one
    is new behaviour worth mutating further."""
    return f"{outcome.rule} {re.sub(r'[0-9]+', 'N', outcome.message)[:90]}"


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Target:
    name: str
    execute: Callable[[bytes], Outcome]  # raises on a finding
    seed_inputs: Callable[[], list[bytes]]
    mutate: Callable[[bytes, random.Random, Sequence[bytes]], bytes]
    modules: Callable[[], list[ModuleType]]  # whose functions atheris instruments
    max_input: int
    signature: Callable[[Outcome], str] = message_shape
    # Run once in the parent before workers fork: imports they all share.
    prepare: Callable[[], None] = field(default=_nothing)

    def file_prefix(self) -> str:
        """Findings of other targets than the default carry the target's name."""
        return "" if self.name == DEFAULT_TARGET else f"{self.name}-"


def embeds_modules() -> list[ModuleType]:
    return [
        embeds_backend.embeds,
        zipfile,
        pickletools,
        torch.serialization,
        torch._weights_only_unpickler,
        torch._utils,
    ]


def _embeds_target() -> Target:
    from .inputs import MAX_INPUT, mutate, seed_inputs
    from .oracle import execute

    return Target(DEFAULT_TARGET, execute, seed_inputs, mutate, embeds_modules, MAX_INPUT)


def _chat_target() -> Target:
    from . import chat_inputs, chat_oracle

    return Target(
        "chat",
        chat_oracle.execute,
        chat_inputs.seed_inputs,
        chat_inputs.mutate,
        chat_oracle.modules,
        chat_inputs.MAX_INPUT,
        signature=chat_oracle.signature,
        prepare=chat_oracle.prepare,
    )


TARGETS: dict[str, Callable[[], Target]] = {DEFAULT_TARGET: _embeds_target, "chat": _chat_target}


@functools.cache
def get_target(name: str) -> Target:
    """Targets import their modules only when asked for (the chat target
    needs transformers)."""
    return TARGETS[name]()


def target_of_finding(path: Path) -> str:
    """The target a saved finding belongs to, from its file name."""
    return next((target for target in TARGETS if path.name.startswith(f"{target}-")), DEFAULT_TARGET)
