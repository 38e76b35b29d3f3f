"""Serving benchmark: the same workload through vLLM's engine in-process,
this project's Triton model (gRPC and HTTP) and `vllm serve`, in one run.

Modules, one job each:
  paths      - the measured paths and the ratios between them
  settings   - run configuration, presets and the shared engine arguments
  model_dir  - the model directory (a real one, or a config.json with dummy weights)
  workload   - deterministic prompts and their wire encodings
  stats      - per-request records and their summary
  cpu        - CPU time of a server's process tree, per process
  closed_loop - a fixed-concurrency request loop
  transports - async clients for Triton gRPC/HTTP and the OpenAI server
  loadgen    - client processes that drive a server path
  engine_run - the in-process AsyncLLM paths (run in a child process)
  servers    - starting and stopping tritonserver and `vllm serve`
  report     - JSON, markdown and chart output
  runner     - runs the systems one after another

Entry points: `python -m tools.bench` (this benchmark), `python -m
tools.bench.decode` (per-request decode and validation cost, no server) and
`python -m tools.bench.latency` (concurrency-1 latency through tritonserver).
"""
