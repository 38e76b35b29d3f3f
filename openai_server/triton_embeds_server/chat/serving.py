"""/v1/chat/completions through the client package: the model templates
the conversation; embeddings parts pass through as vLLM's `data` form."""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletion
from starlette.responses import Response, StreamingResponse

from .._protocol import common_arguments
from ..errors import HTTPError
from ..responses import json_response
from ..sse import sse
from ..upstream import Upstreams
from .protocol import ChatCompletionRequest

CHAT_PARAMETERS = ("add_generation_prompt", "continue_final_message", "chat_template_kwargs")


def prompt_kind(request: ChatCompletionRequest) -> str:
    """chat, or chat_embeds when some content part is embeddings."""
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") == "prompt_embeds" for part in content
        ):
            return "chat_embeds"
    return "chat"


def refuse_unsupported(request: ChatCompletionRequest) -> None:
    if request.tools or request.tool_choice not in (None, "none"):
        raise HTTPError(400, "tool calling is not supported", "unsupported", "tools")
    if request.logit_bias:
        raise HTTPError(400, "logit_bias is not supported", "unsupported", "logit_bias")


def arguments(request: ChatCompletionRequest) -> dict[str, Any]:
    common = common_arguments(request)
    for name in CHAT_PARAMETERS:
        value = getattr(request, name)
        if value is not None:
            common["extra_body"][name] = value
    return {
        **common,
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "max_completion_tokens": request.max_completion_tokens,
        "logprobs": request.logprobs,
        "top_logprobs": request.top_logprobs,
    }


async def create_chat_completion(request: ChatCompletionRequest, upstreams: Upstreams) -> Response:
    refuse_unsupported(request)
    result = await upstreams.next().chat.completions.create(**arguments(request))
    if not request.stream:
        assert isinstance(result, ChatCompletion)
        return json_response(result)
    return StreamingResponse(sse(result), media_type="text/event-stream")
