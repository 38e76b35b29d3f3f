"""Tooling around the model, importable and runnable as `python -m tools.<name>`.

- `tools.server`: install, launch and serve the bundled tritonserver; write
  model repositories that serve the shipped model under other settings.
- `tools.models`: build the tiny test model and convert SmolLM2.
- `tools.infer`, `tools.metrics`, `tools.payloads`, `tools.hostile_corpus`:
  what tests and tools share to talk to a live server, read its metrics and
  build valid and hostile embeddings payloads.
- `tools.bench`, `tools.fuzz`, `tools.load_fault`, `tools.perf`: the serving
  benchmark, the embeddings fuzzer, the load-and-fault run, perf_analyzer.
"""
