"""Request rejections: each carries the rule it broke (a metrics label) and a
message for the caller. They become INVALID_ARG errors before the engine sees
anything."""

from __future__ import annotations


class RequestRejected(ValueError):
    """A request that breaks one validation rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class EngineUnavailable(RuntimeError):
    """The engine is dead or restarting: the request could not be served."""
