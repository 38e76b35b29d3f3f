"""OpenAI-style client for Triton models that take text or prompt embeddings.

from triton_embeds import Client, encode_prompt_embeds

client = Client("localhost:8001")  # gRPC; Client("http://localhost:8000") for HTTP
completion = client.completions.create(model="vllm_model", prompt_embeds=tensor, max_tokens=16)
chat = client.chat.completions.create(
    model="vllm_model",
    messages=[{"role": "user", "content": [{"type": "prompt_embeds", "data": tensor}]}],
)
"""

from ._client import AsyncClient, Client
from ._encoding import encode_prompt_embeds
from ._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    ServiceUnavailableError,
    TritonEmbedsError,
)
from ._streaming import AsyncStream, Stream
from ._text_embeddings import text_to_embeddings
from ._types import ModelList

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncStream",
    "BadRequestError",
    "Client",
    "InternalServerError",
    "ModelList",
    "NotFoundError",
    "ServiceUnavailableError",
    "Stream",
    "TritonEmbedsError",
    "encode_prompt_embeds",
    "text_to_embeddings",
]
