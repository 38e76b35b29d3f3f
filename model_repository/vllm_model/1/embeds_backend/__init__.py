"""Server-side pieces of the vLLM prompt-embeddings Triton model."""
