"""Serve the model repository with the bundled tritonserver, and the
OpenAI-compatible HTTP server in front of it, until Ctrl-C.

Usage: python -m tools.server.serve [--model-repository DIR] [--http-port 8000]
       [--grpc-port 8001] [--metrics-port 8002] [--openai-port 9000]
       [-- extra tritonserver args]
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from ..paths import MODEL_REPOSITORY
from .launcher import Ports, TritonServer
from .openai_launcher import OpenAIServer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.server.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--openai-port", type=int, default=9000, help="the OpenAI API's port; 0: do not start it"
    )
    parser.add_argument("extra", nargs="*", help="passed to tritonserver after --")
    return parser.parse_args()


def ready_banner(server: TritonServer, seconds: float, model: str, openai: OpenAIServer | None) -> str:
    lines = [
        f"\nREADY in {seconds:.0f} s: HTTP {server.http_url}, gRPC {server.grpc_url}, "
        f"metrics {server.metrics_url}/metrics",
        f"Try: curl -s -X POST http://{server.http_url}/v2/models/{model}/generate "
        '-d \'{"text_input": "The capital of France is", "exclude_input_in_output": true, '
        '"sampling_parameters": "{\\"temperature\\": 0, \\"max_tokens\\": 16}"}\'',
    ]
    if openai is not None:
        lines += [
            f"OpenAI API: {openai.base_url} (health {openai.url}/health, metrics {openai.url}/metrics)",
            f'Try: python -c \'from openai import OpenAI; c = OpenAI(base_url="{openai.base_url}", '
            f'api_key="unused"); print(c.completions.create(model="{model}", '
            f'prompt="The capital of France is", max_tokens=16).choices[0].text)\'',
        ]
    return "\n".join([*lines, "Ctrl-C stops the servers.\n"])


def main() -> None:
    args = parse_args()
    server = TritonServer(
        args.model_repository.resolve(),
        ports=Ports(args.http_port, args.grpc_port, args.metrics_port),
        extra_args=args.extra,
    )
    # tritonserver runs in its own process group, so a terminal's Ctrl-C
    # reaches only this process: it becomes KeyboardInterrupt, and stop()
    # forwards it as SIGINT, waits for the models to unload and reaps the group.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    openai = (
        OpenAIServer((server.grpc_url,), port=args.openai_port, host="0.0.0.0") if args.openai_port else None
    )
    server.start()
    try:
        seconds = server.wait_ready(timeout_s=1800)
        if openai is not None:
            openai.start()
            openai.wait_ready()
        models = sorted(p.name for p in args.model_repository.iterdir() if (p / "config.pbtxt").exists())
        print(ready_banner(server, seconds, models[0] if models else "vllm_model", openai), flush=True)
        server.process.wait()
    except KeyboardInterrupt:
        print("\nstopping the servers...", flush=True)
    finally:
        if openai is not None:
            openai.stop()
        server.stop()
        print("servers stopped", flush=True)


if __name__ == "__main__":
    main()
