"""/v1/completions through the client package: vLLM's request semantics,
openai's response objects, this server's errors."""

from __future__ import annotations

from typing import Any

from openai.types import Completion
from starlette.responses import Response, StreamingResponse

from .._protocol import common_arguments
from ..errors import HTTPError
from ..responses import json_response
from ..sse import sse
from ..upstream import Upstreams
from .protocol import CompletionRequest


def prompt_kind(request: CompletionRequest) -> str:
    """text, embeds or mixed: the label of this server's request metrics."""
    has_embeds = bool(request.prompt_embeds)
    texts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt or [])
    has_text = any(texts) if has_embeds else request.prompt is not None
    return "mixed" if has_embeds and has_text else "embeds" if has_embeds else "text"


# Prompts (text and embeddings together) one request may carry: each becomes
# its own request to Triton, so a list of a million is a flood, not a batch.
MAX_PROMPTS = 256


def refuse_unsupported(request: CompletionRequest) -> None:
    """OpenAI fields with no meaning here are refused, never ignored; a
    batch is bounded before anything is sent."""
    prompts = _count(request.prompt) + _count(request.prompt_embeds)
    if prompts > MAX_PROMPTS:
        raise HTTPError(
            400,
            f"the request has {prompts} prompts; at most {MAX_PROMPTS} per request",
            "too_many_prompts",
            "prompt",
        )
    if request.suffix:
        raise HTTPError(400, "suffix is not supported", "unsupported", "suffix")
    if request.best_of not in (None, 1, request.n):
        raise HTTPError(
            400, "best_of is not supported (vLLM's v1 engine has none); use n", "unsupported", "best_of"
        )
    if request.logit_bias:
        raise HTTPError(400, "logit_bias is not supported", "unsupported", "logit_bias")
    if request.echo and request.prompt_embeds:
        raise HTTPError(
            400, "echo applies to text prompts; it is not compatible with prompt embeds", None, "echo"
        )
    if request.echo and request.logprobs is not None:
        raise HTTPError(400, "echo together with logprobs is not supported", "unsupported", "echo")


def _count(prompt: str | list[str] | None) -> int:
    return len(prompt) if isinstance(prompt, list) else int(prompt is not None)


def arguments(request: CompletionRequest) -> dict[str, Any]:
    return {
        **common_arguments(request),
        "prompt": request.prompt,
        "prompt_embeds": request.prompt_embeds,
        "max_tokens": request.max_tokens,
        "logprobs": request.logprobs,
    }


async def create_completion(request: CompletionRequest, upstreams: Upstreams) -> Response:
    refuse_unsupported(request)
    result = await upstreams.next().completions.create(**arguments(request))
    echo = _Echo(request) if request.echo else None
    if not request.stream:
        assert isinstance(result, Completion)
        return json_response(echo.whole(result) if echo else result)
    return StreamingResponse(sse(result, echo.chunk if echo else None), media_type="text/event-stream")


class _Echo:
    """`echo`: each choice's text starts with its prompt, as in vLLM (text
    prompts only). Choice i answers prompt i // n."""

    def __init__(self, request: CompletionRequest) -> None:
        self._prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt or [])
        self._n = request.n
        self._echoed: set[int] = set()

    def whole(self, completion: Completion) -> Completion:
        for choice in completion.choices:
            choice.text = self._prompts[choice.index // self._n] + choice.text
        return completion

    def chunk(self, chunk: Completion) -> Completion:
        for choice in chunk.choices:
            if choice.index not in self._echoed:
                self._echoed.add(choice.index)
                choice.text = self._prompts[choice.index // self._n] + choice.text
        return chunk
