"""API resources, one module per openai-python resource."""

from .completions import AsyncCompletions, Completions
from .models import AsyncModels, Models

__all__ = ["AsyncCompletions", "AsyncModels", "Completions", "Models"]
