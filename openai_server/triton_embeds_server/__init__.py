"""An OpenAI-compatible HTTP server in front of Triton models that generate
from text or prompt embeddings: the calls vLLM's and Dynamo's users make
with the OpenAI SDK, served through the `triton_embeds` client over gRPC."""

from .app import create_app
from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
