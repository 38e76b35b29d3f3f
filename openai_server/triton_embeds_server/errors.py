"""Errors as the OpenAI API sends them: `{"error": {"message", "type",
"param", "code"}}` with the HTTP status the SDKs map to their exception
classes. The model's own rejections keep its message and rule name."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from triton_embeds import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    NotFoundError,
    ServiceUnavailableError,
)

# Seconds a client should wait before retrying an overloaded or restarting model.
RETRY_AFTER_S = 1

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    500: "server_error",
    503: "server_error",
    504: "server_error",
}


class HTTPError(Exception):
    """A request this server answers with an error status."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(error: HTTPError) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if error.status == 503 else None
    body = msgspec.json.encode(error_body(error.status, error.message, error.code, error.param))
    return Response(body, status_code=error.status, media_type="application/json", headers=headers)


def from_client_error(exc: Exception) -> HTTPError:
    """The client package's error as this server's: a rejection stays a
    400 with the model's rule as `code`, an unknown model a 404, an
    overloaded or restarting engine a 503; anything else is a fault."""
    if isinstance(exc, BadRequestError):
        return HTTPError(400, str(exc), exc.code)
    if isinstance(exc, NotFoundError):
        return HTTPError(404, str(exc), "model_not_found", "model")
    if isinstance(exc, ServiceUnavailableError):
        return HTTPError(503, str(exc), exc.code)
    if isinstance(exc, APITimeoutError):
        return HTTPError(504, f"the model did not answer in time: {exc}", "timeout")
    if isinstance(exc, APIConnectionError):
        return HTTPError(503, f"Triton is unreachable: {exc}", "upstream_unreachable")
    if isinstance(exc, APIStatusError):
        return HTTPError(exc.status_code, str(exc), exc.code)
    if isinstance(exc, (ValueError, TypeError)):  # arguments the client refused before sending
        return HTTPError(400, str(exc))
    return HTTPError(500, f"{type(exc).__name__}: {exc}")


def validation_error(exc: msgspec.ValidationError | msgspec.DecodeError) -> HTTPError:
    """msgspec names the offending field (`$.prompt[0]`) or the unknown one."""
    message = str(exc)
    param = message.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in message else None
    if isinstance(exc, msgspec.ValidationError):  # a subclass of DecodeError: first
        return HTTPError(400, message, "invalid_request", param)
    return HTTPError(400, f"the body is not valid JSON: {message}", "invalid_json")
