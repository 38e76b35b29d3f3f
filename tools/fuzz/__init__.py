"""The prompt-embeddings and chat fuzzer: `python -m tools.fuzz --help`. The
unit tests run the same generators and contracts (under Hypothesis for the
embeddings target)."""
