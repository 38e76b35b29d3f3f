"""The OpenAI server's own logic, without Triton: body limits, request
decoding, refusals, authentication, error shapes and prompt kinds. (Its
behaviour in front of a real tritonserver is tests/server/test_openai_server.py.)
Requests that would reach Triton never get that far here: the upstream URL
points nowhere."""

from __future__ import annotations

import json
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from triton_embeds import BadRequestError, NotFoundError, ServiceUnavailableError
from triton_embeds_server import ServerSettings, create_app
from triton_embeds_server.chat.protocol import ChatCompletionRequest
from triton_embeds_server.chat.serving import arguments as chat_arguments
from triton_embeds_server.chat.serving import prompt_kind as chat_kind
from triton_embeds_server.cli import parse_args
from triton_embeds_server.completions.protocol import CompletionRequest
from triton_embeds_server.completions.serving import arguments, prompt_kind
from triton_embeds_server.errors import from_client_error

NOWHERE = ("127.0.0.1:9",)  # the discard port: nothing answers gRPC there


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = ServerSettings(triton_urls=NOWHERE, max_body_bytes=64 * 1024, api_key="k", request_timeout_s=5)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


AUTH = {"Authorization": "Bearer k"}


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_the_v1_routes_need_the_key_and_the_probes_do_not(client):
    response = client.post("/v1/completions", json={"model": "m", "prompt": "hi"})
    assert response.status_code == 401 and error_of(response)["type"] == "authentication_error"
    wrong = client.post("/v1/completions", json={"model": "m"}, headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401
    assert client.get("/metrics").status_code == 200
    assert client.get("/health").status_code == 503  # no Triton behind: not ready


def test_a_body_over_the_limit_is_413(client):
    response = client.post("/v1/completions", content=b"x" * 70_000, headers=AUTH)
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("body", "fragment", "param"),
    [
        (b"", "has no body", None),
        (b'{"model": ', "not valid JSON", None),
        (b'{"prompt": "hi"}', "missing required field `model`", None),
        (b'{"model": "m", "prompt": 3}', "Expected `str | array | null`, got `int`", "prompt"),
        (b'{"model": "m", "temprature": 0}', "unknown field `temprature`", None),
        (b'{"model": "m", "stream_options": {"x": 1}}', "unknown field `x`", "stream_options"),
        (b'{"model": "m", "prompt": "a", "suffix": "b"}', "suffix is not supported", "suffix"),
        (b'{"model": "m", "prompt": "a", "best_of": 3}', "best_of is not supported", "best_of"),
        (
            b'{"model": "m", "prompt": "", "prompt_embeds": "QQ==", "echo": true}',
            "echo applies to text",
            "echo",
        ),
    ],
)
def test_bad_completion_bodies_are_400_naming_the_problem(client, body, fragment, param):
    response = client.post("/v1/completions", content=body, headers=AUTH)
    error = error_of(response)
    assert response.status_code == 400 and fragment in error["message"], error
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_tools_are_refused_in_chat(client):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}
    response = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 400 and "tool calling is not supported" in error_of(response)["message"]


def test_unknown_routes_and_methods_are_api_errors(client):
    assert error_of(client.get("/v1/nothing"))["message"] == "Not Found"
    assert client.get("/v1/completions", headers=AUTH).status_code == 405


def test_an_unreachable_triton_is_503_with_retry_after(client):
    response = client.post("/v1/completions", json={"model": "m", "prompt": "hi"}, headers=AUTH)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"


def test_client_errors_map_to_the_apis_statuses():
    rejected = from_client_error(BadRequestError("[rejected:hidden_size] no", code="hidden_size"))
    assert (rejected.status, rejected.code) == (400, "hidden_size")
    assert from_client_error(NotFoundError("gone")).status == 404
    assert from_client_error(ServiceUnavailableError("busy", code="engine_restarting")).status == 503
    assert from_client_error(RuntimeError("bug")).status == 500


def decoded(kind, body: dict):
    return msgspec.json.decode(json.dumps(body).encode(), type=kind)


def test_completion_requests_become_client_arguments_with_vllm_keys_in_extra_body():
    request = decoded(
        CompletionRequest,
        {
            "model": "m",
            "prompt": "",
            "prompt_embeds": ["QQ=="],
            "n": 2,
            "ignore_eos": True,
            "cache_salt": "t",
        },
    )
    args = arguments(request)
    assert args["prompt_embeds"] == ["QQ=="] and args["n"] == 2 and args["max_tokens"] == 16
    assert args["extra_body"] == {"ignore_eos": True, "cache_salt": "t"}
    assert prompt_kind(request) == "embeds"
    assert (
        prompt_kind(decoded(CompletionRequest, {"model": "m", "prompt": ["", "x"], "prompt_embeds": "A"}))
        == "mixed"
    )
    assert prompt_kind(decoded(CompletionRequest, {"model": "m", "prompt": "x"})) == "text"


def test_chat_requests_pass_template_controls_and_name_their_kind():
    part = {"type": "prompt_embeds", "data": "QQ=="}
    request = decoded(
        ChatCompletionRequest,
        {"model": "m", "messages": [{"role": "user", "content": [part]}], "add_generation_prompt": False},
    )
    assert chat_arguments(request)["extra_body"] == {"add_generation_prompt": False}
    assert chat_kind(request) == "chat_embeds"


def test_the_command_line():
    settings = parse_args(["--triton-url", "a:1", "--triton-url", "b:2", "--port", "9100", "--workers", "3"])
    assert settings.triton_urls == ("a:1", "b:2") and settings.port == 9100 and settings.workers == 3
    assert ServerSettings(**{**json.loads(settings.to_env()), "triton_urls": ("a:1", "b:2")}) == settings


def test_deep_nesting_is_a_400_not_a_fault(client):
    body = b'{"model": "m", "prompt": "x", "structured_outputs": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001
    response = client.post("/v1/completions", content=body, headers={**AUTH})
    assert response.status_code == 400 and error_of(response)["message"] == "the body is nested too deeply"


def test_a_flood_of_prompts_is_refused_before_anything_is_sent(client):
    body = {"model": "m", "prompt": ["a"] * 200, "prompt_embeds": ["QQ=="] * 57}
    response = client.post("/v1/completions", json=body, headers=AUTH)
    assert response.status_code == 400 and error_of(response)["code"] == "too_many_prompts"
    assert "257 prompts; at most 256" in error_of(response)["message"]


# -- fuzzing the HTTP bodies: any body is an API error or a request, never a fault ----------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = sorted({*CompletionRequest.__struct_fields__, *ChatCompletionRequest.__struct_fields__})
BODIES = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), JSON_VALUES, max_size=6).map(
    lambda body: json.dumps(body).encode()
) | st.binary(max_size=64)


# The app is stateless between requests: one client serves every example.
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=BODIES, route=st.sampled_from(["/v1/completions", "/v1/chat/completions"]))
def test_any_body_gets_an_api_error_or_goes_upstream_never_a_fault(client, body, route):
    response = client.post(route, content=body, headers=AUTH)
    # 503: a well-formed request that reached for the (absent) Triton.
    assert response.status_code in (400, 404, 413, 503), (body, response.status_code, response.text)
    error_of(response)
