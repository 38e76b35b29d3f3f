"""How the model learns that its replica is stopping.

A python-backend model sees neither tritonserver's signals nor its shutdown
until Triton unloads it, and Triton unloads a model only after its in-flight
requests end (or its exit timeout expires and it aborts them unanswered). So
the replica supervisor (`triton_embeds_replica`) tells the model first, by
writing a drain file whose path it passes in the environment:

    {"deadline_unix": 1767225600.0}

From then on the model refuses new requests (UNAVAILABLE `draining`), lets
the ones it holds finish until the deadline, and ends the rest with
UNAVAILABLE `shutdown`. A file is a deliberately small interface: any
process in the container may write it (a Kubernetes preStop hook can too),
and it needs no port, no request path a client could reach, and no signal
handling inside Triton's stub.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

# The environment variable naming the drain file; unset: drain is off.
DRAIN_FILE_ENV = "TRITON_EMBEDS_DRAIN_FILE"


@dataclass(frozen=True)
class DrainOrder:
    """When the model must have ended every request, on the monotonic clock."""

    deadline: float

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


class DrainWatch:
    """Polls for the drain file; cheap enough to call every few milliseconds
    (one stat() while the file is absent)."""

    def __init__(self, path: str | os.PathLike[str] | None, default_timeout_s: float) -> None:
        self._path = Path(path) if path else None
        self._default_timeout_s = default_timeout_s
        self.order: DrainOrder | None = None

    @classmethod
    def from_environment(cls, default_timeout_s: float) -> DrainWatch:
        return cls(os.environ.get(DRAIN_FILE_ENV) or None, default_timeout_s)

    def clear_stale(self) -> None:
        """A file left by an earlier run (a restarted container keeps its
        volumes) must not drain the new one."""
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    def poll(self) -> DrainOrder | None:
        """The drain order, once the file appears; None until then."""
        if self.order is not None or self._path is None:
            return self.order
        try:
            text = self._path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            text = ""  # present but unreadable: drain with the default time
        self.order = DrainOrder(time.monotonic() + self._timeout(text))
        return self.order

    def _timeout(self, text: str) -> float:
        """Seconds left to the file's deadline, or the default when the file
        says nothing usable (an empty file from `touch` is a valid order)."""
        try:
            deadline = float(json.loads(text)["deadline_unix"])
        except (ValueError, TypeError, KeyError):
            return self._default_timeout_s
        return max(0.0, deadline - time.time())


def write_drain_order(path: str | os.PathLike[str], timeout_s: float) -> None:
    """What the supervisor writes: atomically, so the model never reads half."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps({"deadline_unix": time.time() + timeout_s}))
    partial.replace(target)
