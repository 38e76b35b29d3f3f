"""Per-token log probabilities: the arguments that ask for them, and the
model's `logprobs` output as openai-python's types, shaped as vLLM's OpenAI
server shapes them.

Asked for (the `return_logprobs` input), every response of the model carries
a JSON list with one entry per token new in that response:
`{"<token_id>": {"logprob": float, "rank": int, "decoded_token": str}, ...}`,
the chosen token first, then the top alternatives (the chosen token appears
once, so an entry has k or k + 1 items). Nothing here runs for a call that
did not ask for logprobs.

The prompt's logprobs (the `prompt_logprobs` sampling key) come once per
request, on its first response, as a list with an entry per prompt position
in the same layout (None for the first position); they are returned as vLLM's
OpenAI server returns them, that layout unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import islice
from typing import Any

from openai.types.chat import ChatCompletionTokenLogprob
from openai.types.chat.chat_completion_token_logprob import TopLogprob
from openai.types.completion_choice import Logprobs

from ._errors import InternalServerError
from ._types import PromptLogprobs, TokenLogprobs, construct

# Most alternatives per token: vLLM's default `max_logprobs`, the server's limit.
MAX_LOGPROBS = 20
# What OpenAI and vLLM report instead of a log probability below it (-inf).
_FLOOR = -9999.0


# -- arguments ---------------------------------------------------------------------


def completion_top_logprobs(logprobs: int | None) -> int | None:
    """The `logprobs` of sampling_parameters for completions' `logprobs`
    argument (alternatives per token); None: none asked for."""
    if logprobs is not None:
        _check_count("logprobs", logprobs)
    return logprobs


def chat_top_logprobs(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """The `logprobs` of sampling_parameters for chat's `logprobs` and
    `top_logprobs` arguments; None: none asked for."""
    if top_logprobs is not None:
        if not logprobs:
            raise ValueError(f"top_logprobs={top_logprobs!r} needs logprobs=True")
        _check_count("top_logprobs", top_logprobs)
    return (top_logprobs or 0) if logprobs else None


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LOGPROBS:
        raise ValueError(
            f"{name} must be an integer from 0 to {MAX_LOGPROBS} (top alternatives per token), not {value!r}"
        )


# -- the model's output ---------------------------------------------------------------


def parse_logprobs(raw: str | bytes) -> list[TokenLogprobs] | None:
    """One response's `logprobs` output; None where the sampling parameters
    asked for none (the output is then "null")."""
    try:
        entries = json.loads(raw)
    except ValueError:
        raise InternalServerError("the server sent a logprobs output that is not JSON") from None
    if entries is not None and not isinstance(entries, list):
        raise InternalServerError("the server sent a logprobs output that is not a list")
    return entries


def parse_prompt_logprobs(raw: str | bytes) -> PromptLogprobs:
    """A request's `prompt_logprobs` output: an entry per prompt position,
    None for the first, as vLLM gives them."""
    try:
        entries = json.loads(raw)
    except ValueError:
        raise InternalServerError("the server sent a prompt_logprobs output that is not JSON") from None
    if not isinstance(entries, list) or not all(e is None or isinstance(e, dict) for e in entries):
        raise InternalServerError("the server sent a prompt_logprobs output that is not a list of entries")
    return entries


def clamp_prompt_logprobs(entries: PromptLogprobs) -> PromptLogprobs:
    """The prompt's logprobs as vLLM's OpenAI server returns them: its
    layout unchanged, -inf reported as -9999.0 so the JSON stays valid."""
    return [
        None
        if entry is None
        else {key: {**value, "logprob": max(value["logprob"], _FLOOR)} for key, value in entry.items()}
        for entry in entries
    ]


def completion_logprobs(entries: Iterable[TokenLogprobs], top: int, offset: int = 0) -> tuple[Logprobs, int]:
    """A completion choice's `Logprobs` of `entries`, as vLLM builds them:
    each token's text and log probability, a dict of it and its `top`
    alternatives, and its offset into the text, counting from `offset`
    (where the previous chunk's tokens ended); and the offset after the
    last token, for the next chunk."""
    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] = []
    text_offset: list[int] = []
    for entry in entries:
        token_id, chosen = _chosen(entry)
        token = _token(token_id, chosen)
        tokens.append(token)
        token_logprobs.append(max(chosen["logprob"], _FLOOR))
        alternatives = islice(entry.items(), top + 1)
        top_logprobs.append(
            {_token(key, value): max(value["logprob"], _FLOOR) for key, value in alternatives}
        )
        text_offset.append(offset)
        offset += len(token)
    logprobs = construct(
        Logprobs,
        text_offset=text_offset,
        token_logprobs=token_logprobs,
        tokens=tokens,
        top_logprobs=top_logprobs,
    )
    return logprobs, offset


def chat_logprobs(entries: Iterable[TokenLogprobs], top: int) -> list[ChatCompletionTokenLogprob]:
    """The `content` of a chat choice's logprobs, as vLLM builds it: each
    token with its log probability and UTF-8 bytes, and the entry's first
    `top` items (the chosen token, then its alternatives) as `top_logprobs`."""
    content = []
    for entry in entries:
        token_id, chosen = _chosen(entry)
        decoded = chosen.get("decoded_token")
        content.append(
            construct(
                ChatCompletionTokenLogprob,
                token=_token(token_id, chosen),
                logprob=max(chosen["logprob"], _FLOOR),
                bytes=None if decoded is None else _utf8(decoded),
                top_logprobs=[_top_logprob(key, value) for key, value in islice(entry.items(), top)],
            )
        )
    return content


def _chosen(entry: TokenLogprobs) -> tuple[str, dict[str, Any]]:
    for item in entry.items():
        return item
    raise InternalServerError("the server sent a logprobs entry without its token")


def _token(token_id: str, value: dict[str, Any]) -> str:
    """The token's text; vLLM's placeholder for a token the server could not decode."""
    decoded = value.get("decoded_token")
    return f"token_id:{token_id}" if decoded is None else str(decoded)


def _top_logprob(token_id: str, value: dict[str, Any]) -> TopLogprob:
    token = _token(token_id, value)
    return construct(TopLogprob, token=token, logprob=max(value["logprob"], _FLOOR), bytes=_utf8(token))


def _utf8(text: str) -> list[int]:
    return list(text.encode("utf-8", errors="replace"))
