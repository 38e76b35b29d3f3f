"""From openai-style `create()` arguments to one GenerateRequest per prompt,
or one per chat conversation."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from ._chat_messages import ChatMessage, encode_chat
from ._encoding import EmbedsItem, split_prompt_embeds, to_base64, to_tensor_payload
from ._transport import EmbedsTransport
from ._types import GenerateRequest


def sampling_parameters(extra: dict[str, Any], **given: Any) -> dict[str, Any]:
    """The model's `sampling_parameters` JSON. Unset (None) values are left
    out so the server's defaults apply; `extra_body` keys pass through (the
    server rejects unknown ones by name, so a typo is never ignored)."""
    params = {key: value for key, value in given.items() if value is not None}
    params.update(extra)
    return params


# `extra_body` keys of vLLM's chat API that shape the prompt, not the sampling:
# they go to the model's `chat_parameters` input.
CHAT_PARAMETER_KEYS = ("add_generation_prompt", "continue_final_message", "chat_template_kwargs")


def split_chat_parameters(extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(chat parameters, the rest) of a chat call's `extra_body`."""
    chat = {key: value for key, value in extra.items() if key in CHAT_PARAMETER_KEYS}
    rest = {key: value for key, value in extra.items() if key not in CHAT_PARAMETER_KEYS}
    return chat, rest


def text_prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if prompt is None:
        raise ValueError("give a prompt (text) or prompt_embeds")
    raise TypeError(
        "prompt must be a string or a list of strings; token-id prompts are not "
        "supported by this model (send text, or prompt_embeds)"
    )


async def build_requests(
    *,
    prompt: Any,
    prompt_embeds: Any,
    sampling: dict[str, Any],
    stream: bool,
    embeds_transport: EmbedsTransport,
    model_inputs: Callable[[], Awaitable[Collection[str]]],
    return_logprobs: bool = False,
) -> list[GenerateRequest]:
    """vLLM's rule for a call with both: the embeddings prompts come first,
    then each non-empty text prompt, so choice 0 answers the embeddings (as
    Dynamo's users expect); the empty `prompt=""` of vLLM's and Dynamo's
    examples is no prompt and is never sent."""
    requests: list[GenerateRequest] = []
    if prompt_embeds is not None and not _empty_list(prompt_embeds):
        for item in split_prompt_embeds(prompt_embeds):
            fields = await _embeds_fields(item, embeds_transport, model_inputs)
            requests.append(
                GenerateRequest(len(requests), sampling, stream, return_logprobs=return_logprobs, **fields)
            )
    texts = text_prompts(prompt) if prompt_embeds is None or prompt else []
    if prompt_embeds is not None:
        texts = [text for text in texts if text]
    for text in texts:
        requests.append(
            GenerateRequest(len(requests), sampling, stream, text=text, return_logprobs=return_logprobs)
        )
    if not requests:
        raise ValueError("no prompt: prompt_embeds is empty and prompt has no text")
    return requests


def _empty_list(value: Any) -> bool:
    """`prompt_embeds: []` beside a text prompt is no embeddings (vLLM)."""
    return isinstance(value, (list, tuple)) and not value


async def _embeds_fields(
    item: EmbedsItem,
    embeds_transport: EmbedsTransport,
    model_inputs: Callable[[], Awaitable[Collection[str]]],
) -> dict[str, Any]:
    if isinstance(item, str) or embeds_transport == "base64":
        return {"embeds_base64": to_base64(item)}
    payload = to_tensor_payload(item, await model_inputs())
    if payload is None:  # the model has no raw-tensor input for it
        return {"embeds_base64": to_base64(item)}
    return {"embeds_tensor": payload}


async def build_chat_request(
    *,
    messages: Iterable[ChatMessage],
    chat_parameters: dict[str, Any],
    sampling: dict[str, Any],
    stream: bool,
    embeds_transport: EmbedsTransport,
    model_inputs: Callable[[], Awaitable[Collection[str]]],
    return_logprobs: bool = False,
) -> GenerateRequest:
    """One conversation; `chat_parameters` is left out when empty, so the
    model's defaults apply."""
    encoded = await encode_chat(messages, embeds_transport, model_inputs)
    return GenerateRequest(
        0,
        sampling,
        stream,
        messages=encoded.messages,
        chat_parameters=json.dumps(chat_parameters) if chat_parameters else None,
        embeds_tensor=encoded.embeds_tensor,
        return_logprobs=return_logprobs,
    )
