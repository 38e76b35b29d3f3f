"""The prompt-embeddings fuzzer: `python -m tools.fuzz --help`. The unit
tests run the same generators and contract under Hypothesis."""
