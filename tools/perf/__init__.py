"""perf_analyzer and genai-perf for this project's Triton model.

`tools` installs the perf-analyzer wheel (and genai-perf) under .cache/ and
makes its binary run on hosts whose glibc is older than the wheel needs;
`inputs` writes perf_analyzer `--input-data` files for text and embeddings
prompts; `report` runs perf_analyzer and summarises what it measured.
The command line is `python -m tools.perf`.
"""
