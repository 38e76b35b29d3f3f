"""Errors, named as in openai-python so `except BadRequestError` reads the same.

Every failure of a request surfaces as one of these; tritonclient, grpc and
aiohttp exceptions never leak out, and an error is never turned into an empty
result.

Triton reports a model's error on a gRPC stream as message text only (the
stream response has no status code), while the HTTP endpoints carry the
status. `error_from_message` therefore classifies stream errors by the
wording of Triton's and this project's server messages; anything it does not
recognise is a rejected request, which is what nearly every in-band error is.
"""

from __future__ import annotations

__all__ = [
    "TritonEmbedsError",
    "APIError",
    "APIStatusError",
    "BadRequestError",
    "NotFoundError",
    "InternalServerError",
    "ServiceUnavailableError",
    "APIConnectionError",
    "APITimeoutError",
]


class TritonEmbedsError(Exception):
    """Base of every error this package raises for a request."""


class APIError(TritonEmbedsError):
    """The server or the connection to it failed the request."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIStatusError(APIError):
    """The server answered with an error; `status_code` is the HTTP equivalent."""

    status_code: int = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


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


_NOT_FOUND_MARKERS = ("unknown model", "is not found", "has no available versions")
_UNAVAILABLE_MARKERS = (
    "concurrent requests; retry later",
    "engine is unavailable",
    "engine is not running",
    "is not ready",
)
_INTERNAL_MARKERS = ("generation failed:",)


def error_from_message(message: str) -> APIStatusError:
    """Classify an error that arrived as text only (gRPC stream responses)."""
    lowered = message.lower()
    if any(marker in lowered for marker in _NOT_FOUND_MARKERS):
        return NotFoundError(message)
    if any(marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return ServiceUnavailableError(message)
    if any(marker in lowered for marker in _INTERNAL_MARKERS):
        return InternalServerError(message)
    return BadRequestError(message)


def error_from_http_status(status: int, message: str) -> APIError:
    """Map an HTTP error status from Triton to the matching error class."""
    if status == 400:
        return BadRequestError(message)
    if status == 404:
        return NotFoundError(message)
    if status == 503:
        return ServiceUnavailableError(message)
    if status >= 500:
        return InternalServerError(message, status)
    if status < 400:  # Triton answers some failures with 200 and an "error" body
        return error_from_message(message)
    return APIStatusError(message, status)
