"""The ASGI application: routes, authentication, request metrics, and one
place where every failure becomes an OpenAI-shaped error."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import metrics
from .body import decode, read_body
from .chat.protocol import ChatCompletionRequest
from .chat.serving import create_chat_completion
from .chat.serving import prompt_kind as chat_kind
from .completions.protocol import CompletionRequest
from .completions.serving import create_completion
from .completions.serving import prompt_kind as completion_kind
from .errors import HTTPError, error_response, from_client_error
from .models.serving import list_models, retrieve_model
from .responses import json_response
from .settings import ServerSettings
from .upstream import Upstreams

log = logging.getLogger("triton_embeds_server")
R = TypeVar("R")


class _State:
    """What the routes share; the upstream clients exist once the loop runs."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._upstreams: Upstreams | None = None

    @property
    def upstreams(self) -> Upstreams:
        assert self._upstreams is not None, "the application has not started"
        return self._upstreams


def create_app(settings: ServerSettings | None = None) -> Starlette:
    """The application; uvicorn's worker processes call it without arguments
    and read the settings the command line left in the environment."""
    state = _State(settings or ServerSettings.from_env())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state._upstreams = Upstreams(state.settings.triton_urls, state.settings.request_timeout_s)
        print(_banner(state.settings), flush=True)
        yield
        await state.upstreams.close()

    completions = _generation(state, "/v1/completions", CompletionRequest, completion_kind, create_completion)
    chat = _generation(
        state, "/v1/chat/completions", ChatCompletionRequest, chat_kind, create_chat_completion
    )

    async def models(request: Request) -> Response:
        return await _simple(state, request, "/v1/models", lambda: list_models(state.upstreams))

    async def model(request: Request) -> Response:
        model_id = request.path_params["model_id"]
        return await _simple(state, request, "/v1/models", lambda: retrieve_model(state.upstreams, model_id))

    async def health(request: Request) -> Response:
        ready, reason = await state.upstreams.ready()
        if ready:
            return json_response({"status": "ready"})
        return error_response(HTTPError(503, reason, "not_ready"))

    async def prometheus(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    routes = [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _starlette_error})


def _banner(settings: ServerSettings) -> str:
    host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    key = (settings.api_key and "<your key>") or "unused"
    return (
        f"OpenAI API on http://{host}:{settings.port}/v1 (Triton: {', '.join(settings.triton_urls)}). Try:\n"
        f'  python -c \'from openai import OpenAI; c = OpenAI(base_url="http://{host}:{settings.port}/v1", '
        f'api_key="{key}"); print([m.id for m in c.models.list()])\''
    )


async def _starlette_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods, in the API's error shape."""
    assert isinstance(exc, HTTPException)
    return error_response(HTTPError(exc.status_code, str(exc.detail)))


def _generation(
    state: _State,
    route: str,
    kind: type[R],
    prompt_kind: Callable[[R], str],
    serve: Callable[[R, Upstreams], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A generation endpoint: authenticate, read and decode the body, serve."""

    async def endpoint(request: Request) -> Response:
        labels = _Labels(route)

        async def answer() -> Response:
            _authenticate(state.settings, request)
            parsed = decode(await read_body(request, state.settings.max_body_bytes), kind)
            labels.kind = prompt_kind(parsed)
            return await serve(parsed, state.upstreams)

        return await _instrumented(labels, answer)

    return endpoint


async def _simple(
    state: _State, request: Request, route: str, serve: Callable[[], Awaitable[Response]]
) -> Response:
    async def answer() -> Response:
        _authenticate(state.settings, request)
        return await serve()

    return await _instrumented(_Labels(route), answer)


class _Labels:
    def __init__(self, route: str) -> None:
        self.route = route
        self.kind = "none"


async def _instrumented(labels: _Labels, answer: Callable[[], Awaitable[Response]]) -> Response:
    """The response, or the error it became, counted once its last byte is
    out (a stream's, too) with its latency and the time it was in flight."""
    start = time.perf_counter()
    metrics.IN_FLIGHT.labels(labels.route).inc()
    try:
        response = await answer()
    except HTTPError as exc:
        response = error_response(exc)
    except Exception as exc:
        error = from_client_error(exc)
        if error.status >= 500:
            log.exception("request failed")
        response = error_response(error)

    def done() -> None:
        metrics.IN_FLIGHT.labels(labels.route).dec()
        metrics.LATENCY.labels(labels.route).observe(time.perf_counter() - start)
        metrics.REQUESTS.labels(labels.route, str(response.status_code), labels.kind).inc()

    if isinstance(response, StreamingResponse):
        response.body_iterator = _then(response.body_iterator, done)
    else:
        done()
    return response


async def _then(iterator: Any, done: Callable[[], None]) -> AsyncIterator[Any]:
    try:
        async for item in iterator:
            yield item
    finally:
        done()


def _authenticate(settings: ServerSettings, request: Request) -> None:
    if settings.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), settings.api_key.encode()
    ):
        raise HTTPError(
            401, "a valid API key is required: send `Authorization: Bearer <key>`", "invalid_api_key"
        )
