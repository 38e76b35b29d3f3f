"""HTTP transport: Triton's generate extension (`/generate`, `/generate_stream`).

tritonclient's HTTP client cannot talk to a decoupled model (its infer call
expects exactly one response and has no streaming), so this uses aiohttp,
which `tritonclient[http]` already installs for its own asyncio client. The
generate endpoints take a JSON object keyed by input name and flatten
arrays, so embeddings always travel base64: as `prompt_embeds_base64`, or
as "data" parts inside a chat conversation's `messages`.

One HTTP request carries one prompt, and it is always streamed from the
server, even when the caller asked for one response: Triton notices that an
HTTP client has gone only when it next writes to it. A non-streamed request
writes once, at the end, so an abandoned or timed-out one would run to
completion; streamed, every token is a write and a closed connection aborts
the request within a token. The deltas are joined above the transport.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any
from urllib.parse import quote

import aiohttp

from ._adapters import parse_model_info
from ._concurrency import merge
from ._errors import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    error_from_http_status,
    error_from_message,
)
from ._logprobs import parse_logprobs, parse_prompt_logprobs
from ._types import Delta, GenerateRequest
from .protocol import (
    CHOICE_INDEX_OUTPUT,
    EXCLUDE_INPUT,
    FINISH_REASON_OUTPUT,
    INPUT_TOKENS_OUTPUT,
    LOGPROBS_OUTPUT,
    MODEL_INFO_OUTPUT,
    OUTPUT_TOKENS_OUTPUT,
    PROMPT_LOGPROBS_OUTPUT,
    RETURN_LOGPROBS_INPUT,
    RETURN_MODEL_INFO_INPUT,
    SAMPLING_INPUT,
    STREAM_INPUT,
    TEXT_OUTPUT,
)


class HttpTransport:
    """Talks to one Triton HTTP endpoint (`host:port` or `http(s)://host:port`)."""

    def __init__(self, url: str, timeout: float | None) -> None:
        self._base_url = (url if "://" in url else f"http://{url}").rstrip("/")
        # Whole-request deadlines are enforced above the transport; here only
        # connecting is bounded, so a long stream is never cut by a read timeout.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> aiohttp.ClientSession:
        """The session for the running loop: its connection pool belongs to one loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._loop = loop
        return self._session

    def _url(self, *parts: str) -> str:
        return "/".join([self._base_url, *(quote(part, safe="") for part in parts)])

    async def model_inputs(self, model: str) -> frozenset[str]:
        config = await self._json("GET", self._url("v2", "models", model, "config"))
        return frozenset(tensor["name"] for tensor in config.get("input", []))

    async def list_models(self) -> list[tuple[str, str]]:
        index = await self._json("POST", self._url("v2", "repository", "index"), json={})
        return [(entry["name"], entry.get("state", "")) for entry in index]

    async def model_info(self, model: str) -> dict[str, Any]:
        url = self._url("v2", "models", model, "generate_stream")
        with _mapped_errors(self._base_url):
            async with self._http().post(url, json={RETURN_MODEL_INFO_INPUT: True}) as response:
                if response.status != 200:
                    content = await response.read()
                    raise error_from_http_status(response.status, _message(_decode_event(content), content))
                async for event in _sse_events(response):
                    if MODEL_INFO_OUTPUT in event:
                        return parse_model_info(str(event[MODEL_INFO_OUTPUT]))
        raise InternalServerError(f"model {model!r} answered without its model_info")

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        with _mapped_errors(self._base_url):
            async with self._http().request(method, url, **kwargs) as response:
                content = await response.read()
        if response.status != 200:
            raise error_from_http_status(response.status, _message(_decode_event(content), content))
        return json.loads(content)

    async def generate(self, model: str, requests: list[GenerateRequest]) -> AsyncGenerator[Delta, None]:
        """Deltas of every request; several prompts run as concurrent HTTP requests."""
        sources = [self._generate_one(model, request) for request in requests]
        merged = sources[0] if len(sources) == 1 else merge(sources)
        async with aclosing(merged):
            async for delta in merged:
                yield delta

    async def _generate_one(self, model: str, request: GenerateRequest) -> AsyncGenerator[Delta, None]:
        url = self._url("v2", "models", model, "generate_stream")
        with _mapped_errors(self._base_url):
            response = await self._http().post(url, json=_body(request))
            try:
                async for event in _events(response, request.n):
                    yield _delta(request.index, event, request.return_logprobs)
            except BaseException:
                response.close()  # drop the connection: the server cancels the request
                raise
            response.release()

    async def close(self) -> None:
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = self._loop = None


async def _events(response: aiohttp.ClientResponse, n: int = 1) -> AsyncGenerator[dict[str, Any], None]:
    """Server-sent events up to the request's last; a rejected request gets
    an error status with one JSON error object instead."""
    if response.status != 200:
        content = await response.read()
        raise error_from_http_status(response.status, _message(_decode_event(content), content))
    async for event in _sse_events(response):
        yield event
        if _is_last(event, n):
            return
    raise APIConnectionError("the server closed the stream before the request finished")


def _is_last(event: dict[str, Any], n: int) -> bool:
    """The events carry no final flag. With one sequence the one with a
    finish reason is the last; with n > 1 every sequence's last has one, and
    the request's last is the one with the token counts (totals), which
    nothing before it carries: no return_num_* input is ever sent."""
    if n == 1:
        return bool(event.get(FINISH_REASON_OUTPUT))
    return INPUT_TOKENS_OUTPUT in event


@contextmanager
def _mapped_errors(base_url: str) -> Iterator[None]:
    """Turn aiohttp's network exceptions into this package's errors."""
    try:
        yield
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise APITimeoutError(f"request to {base_url} timed out: {exc}") from None
    except aiohttp.ClientError as exc:
        raise APIConnectionError(f"cannot reach the Triton HTTP endpoint {base_url}: {exc}") from None


def _body(request: GenerateRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        SAMPLING_INPUT: json.dumps(request.sampling),
        STREAM_INPUT: True,  # see the module docstring: cancellation needs it
        EXCLUDE_INPUT: True,  # neither API echoes the prompt (chat never does)
    }
    if request.return_logprobs:
        body[RETURN_LOGPROBS_INPUT] = True
    for name, value in request.prompt_inputs():
        if not isinstance(value, str):
            raise ValueError("raw embeddings tensors cannot travel over HTTP; use base64")
        body[name] = value
    return body


async def _sse_events(response: aiohttp.ClientResponse) -> AsyncGenerator[dict[str, Any], None]:
    """`data: {...}` lines of Triton's server-sent events. An error after the
    stream has started comes as an event with an "error" key and status 200."""
    async for raw_line in response.content:
        line = raw_line.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        event = json.loads(line[len("data:") :])
        if "error" in event:
            raise error_from_message(str(event["error"]))
        yield event


def _decode_event(content: bytes) -> dict[str, Any]:
    """One JSON object; error replies of generate_stream come as an SSE line."""
    text = content.decode("utf-8", errors="replace").strip()
    if text.startswith("data:"):
        text = text[len("data:") :].strip()
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def _message(event: dict[str, Any], content: bytes) -> str:
    fallback = content.decode("utf-8", errors="replace").strip()
    return str(event.get("error") or fallback or "no error message")


def _delta(index: int, event: dict[str, Any], logprobs: bool = False) -> Delta:
    """One event's delta; `logprobs`: whether the request asked for them
    (BYTES outputs such as logprobs come as their JSON text)."""
    raw = event.get(LOGPROBS_OUTPUT) if logprobs else None
    prompt_logprobs = event.get(PROMPT_LOGPROBS_OUTPUT)
    return Delta(
        index=index,
        text=str(event.get(TEXT_OUTPUT, "")),
        finish_reason=event.get(FINISH_REASON_OUTPUT) or None,
        prompt_tokens=_optional_int(event.get(INPUT_TOKENS_OUTPUT)),
        completion_tokens=_optional_int(event.get(OUTPUT_TOKENS_OUTPUT)),
        logprobs=None if raw is None else parse_logprobs(raw),
        choice=_optional_int(event.get(CHOICE_INDEX_OUTPUT)) or 0,
        prompt_logprobs=None if prompt_logprobs is None else parse_prompt_logprobs(prompt_logprobs),
    )


def _optional_int(value: Any) -> int | None:
    """A one-element number output: Triton's generate API gives it as a
    scalar; a list is taken too."""
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else int(value)
