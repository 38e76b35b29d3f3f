"""Why a request ends without being served. Each carries a stable code from
the contract (`contract.Rule`, `contract.Unavailable`); the handler turns them
into INVALID_ARG and UNAVAILABLE errors whose messages start with
`[kind:code] `, before the engine sees anything."""

from __future__ import annotations


class RequestRejected(ValueError):
    """A request that breaks one validation rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class EngineUnavailable(RuntimeError):
    """The engine is dead or restarting: the request could not be served.
    `code` is one of contract.Unavailable's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
