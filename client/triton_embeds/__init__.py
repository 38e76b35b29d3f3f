"""OpenAI-style client for Triton models that take text or prompt embeddings."""
