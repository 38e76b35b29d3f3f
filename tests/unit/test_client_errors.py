"""The client classifies a server error by the model's `[kind:code] ` marker
or by the HTTP status, never by the wording of the message."""

from __future__ import annotations

import pytest

import triton_embeds as te
from triton_embeds._errors import error_from_http_status, error_from_message


@pytest.mark.parametrize(
    ("message", "error_type", "code"),
    [
        ("[rejected:hidden_size] any wording at all", te.BadRequestError, "hidden_size"),
        ("[unavailable:engine_restarting] any wording", te.ServiceUnavailableError, "engine_restarting"),
        ("[unavailable:concurrency_limit] retry later", te.ServiceUnavailableError, "concurrency_limit"),
        ("[internal:generation_failed] boom", te.InternalServerError, "generation_failed"),
        # A rejection whose prose happens to say "engine is unavailable" stays a rejection.
        ("[rejected:bad_sampling] the engine is unavailable for top_p=2", te.BadRequestError, "bad_sampling"),
        # Triton's own errors carry no marker: an unknown model by its wording, the rest rejections.
        ("Request for unknown model: 'x' is not found", te.NotFoundError, None),
        ("unexpected inference input 'foo' for model 'tiny'", te.BadRequestError, None),
        ("Request for model 'tiny' is not ready", te.ServiceUnavailableError, None),
        # Text quoted later in a message is not a marker.
        ("unexpected input '[unavailable:engine_down] '", te.BadRequestError, None),
    ],
)
def test_stream_errors_are_classified_by_marker(message: str, error_type: type, code: str | None) -> None:
    error = error_from_message(message)
    assert type(error) is error_type
    assert error.code == code
    assert error.message == message


@pytest.mark.parametrize(
    ("status", "error_type", "status_code"),
    [
        (400, te.BadRequestError, 400),
        (404, te.NotFoundError, 404),
        (503, te.ServiceUnavailableError, 503),
        (500, te.InternalServerError, 500),
        (502, te.InternalServerError, 502),
        (409, te.APIStatusError, 409),
    ],
)
def test_http_statuses_pick_the_class_of_errors_without_a_marker(
    status: int, error_type: type, status_code: int
) -> None:
    error = error_from_http_status(status, "Triton's own words")
    assert type(error) is error_type
    assert isinstance(error, te.APIStatusError) and error.status_code == status_code
    assert error.code is None


@pytest.mark.parametrize(
    ("status", "message", "error_type", "code"),
    [
        (400, "[rejected:too_long] prompt too long", te.BadRequestError, "too_long"),
        (
            503,
            "[unavailable:concurrency_limit] at the limit",
            te.ServiceUnavailableError,
            "concurrency_limit",
        ),
        (500, "[internal:generation_failed] boom", te.InternalServerError, "generation_failed"),
    ],
)
def test_the_models_marker_gives_class_and_code_over_http(
    status: int, message: str, error_type: type, code: str
) -> None:
    error = error_from_http_status(status, message)
    assert type(error) is error_type and error.code == code
    assert isinstance(error, te.APIStatusError) and error.status_code == status


def test_an_error_in_a_200_http_body_is_read_like_a_stream_error() -> None:
    error = error_from_http_status(200, "[unavailable:engine_down] the vLLM engine is not running")
    assert type(error) is te.ServiceUnavailableError and error.code == "engine_down"
