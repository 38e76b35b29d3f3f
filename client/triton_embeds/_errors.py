"""Errors, named as in openai-python so `except BadRequestError` reads the same.

Every failure of a request surfaces as one of these; tritonclient, grpc and
aiohttp exceptions never leak out, and an error is never turned into an empty
result.

The model starts every error message with a `[kind:code] ` marker (see
`protocol`): the kind picks the class and the code becomes `.code` (the
rule a rejection broke, or why the model could not serve). Triton reports a
model's error on a gRPC stream, and inside an HTTP event stream, as text
only, so the marker is what is read there, never the prose. Errors raised by
Triton itself (unknown model, unknown input) carry no marker: over HTTP and
unary gRPC their status says what they are; on a gRPC stream, where Triton
sends text alone, an unknown model is recognised by Triton's wording and
anything else is a rejected request.
"""

from __future__ import annotations

from .protocol import ErrorKind, parse_error_marker

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "BadRequestError",
    "InternalServerError",
    "NotFoundError",
    "ServiceUnavailableError",
    "TritonEmbedsError",
]


class TritonEmbedsError(Exception):
    """Base of every error this package raises for a request."""


class APIError(TritonEmbedsError):
    """The server or the connection to it failed the request."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIStatusError(APIError):
    """The server answered with an error; `status_code` is the HTTP equivalent
    and `code` the model's code for it (a rule name such as "hidden_size", or
    "engine_restarting"), None for errors from Triton itself."""

    status_code: int = 500

    def __init__(self, message: str, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.code = code


class BadRequestError(APIStatusError):
    """The server rejected the request (Triton INVALID_ARG); `message` says why."""

    status_code = 400


class NotFoundError(APIStatusError):
    """The model does not exist or is not loaded."""

    status_code = 404


class InternalServerError(APIStatusError):
    """The server failed while handling a valid request."""

    status_code = 500


class ServiceUnavailableError(InternalServerError):
    """Overloaded, or the engine is down or restarting: worth a retry later."""

    status_code = 503


class APIConnectionError(APIError):
    """The server could not be reached, or the connection broke."""


class APITimeoutError(APIConnectionError):
    """The request did not finish within its timeout; it was cancelled."""

    def __init__(self, message: str = "request timed out") -> None:
        super().__init__(message)


_BY_KIND: dict[str, type[APIStatusError]] = {
    ErrorKind.REJECTED: BadRequestError,
    ErrorKind.UNAVAILABLE: ServiceUnavailableError,
    ErrorKind.INTERNAL: InternalServerError,
}
# Triton's own wording, on gRPC streams only, for a model it does not serve
# and for one that is not ready (loading, unloading).
_TRITON_NOT_FOUND = ("unknown model", "is not found", "has no available versions")
_TRITON_NOT_READY = ("is not ready",)


def error_from_message(message: str) -> APIStatusError:
    """Classify an error that arrived as text only (gRPC stream responses,
    errors inside an HTTP event stream)."""
    marker = parse_error_marker(message)
    if marker is not None:
        return _BY_KIND[marker.kind](message, code=marker.code)
    lowered = message.lower()
    if any(phrase in lowered for phrase in _TRITON_NOT_FOUND):
        return NotFoundError(message)
    if any(phrase in lowered for phrase in _TRITON_NOT_READY):
        return ServiceUnavailableError(message)
    return BadRequestError(message)


def error_from_http_status(status: int, message: str) -> APIError:
    """Map an HTTP error from Triton to its class: by the model's marker when
    the message has one (the status then agrees with it), else by the status."""
    if status < 400 or parse_error_marker(message) is not None:
        # Triton answers some failures with 200 and an "error" body.
        return error_from_message(message)
    if status == 400:
        return BadRequestError(message)
    if status == 404:
        return NotFoundError(message)
    if status == 503:
        return ServiceUnavailableError(message)
    if status >= 500:
        return InternalServerError(message, status)
    return APIStatusError(message, status)
