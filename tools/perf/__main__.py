"""perf_analyzer and genai-perf against the vLLM model, on any glibc.

  install [--genai-perf]   put perf_analyzer (and genai-perf) under .cache/perf-tools
  inputs --kind K --out F  write a perf_analyzer --input-data file
  run --kind K             measure a live server and print the figures
  exec -- ARGS             run perf_analyzer itself with ARGS
  genai-perf -- ARGS       run genai-perf with ARGS (perf_analyzer on its PATH)

Examples (server from scripts/serve.sh, model SmolLM2 with hidden size 576):
  python -m tools.perf run --kind embeds --hidden 576 --concurrency 1:4
  python -m tools.perf genai-perf -- profile -m vllm_model --endpoint-type kserve \\
      --backend vllm --streaming -u localhost:8001 --tokenizer models/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from . import tools
from .inputs import KINDS, InputSpec, write_input_data
from .report import PerfRun, format_table, run_perf_analyzer


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = InputSpec()
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default=defaults.kind,
        help="text prompts, raw FP32 prompt_embeds, or base64 torch.save embeds",
    )
    parser.add_argument("--entries", type=int, default=defaults.entries, help="distinct requests")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="prompt tokens")
    parser.add_argument("--hidden", type=int, default=defaults.hidden, help="the model's hidden size")
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens)
    parser.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=defaults.ignore_eos)
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=defaults.stream,
        help="a response per token (the model's stream input)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--tokenizer", help="local tokenizer dir: cut text prompts to exactly --seq-len tokens"
    )


def spec_from(args: argparse.Namespace) -> InputSpec:
    return InputSpec(
        kind=args.kind,
        entries=args.entries,
        seq_len=args.seq_len,
        hidden=args.hidden,
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
        stream=args.stream,
        seed=args.seed,
        tokenizer=args.tokenizer,
    )


def cmd_install(args: argparse.Namespace) -> int:
    wrapper = tools.ensure_perf_analyzer()
    print(f"perf_analyzer: {wrapper}")
    if args.genai_perf:
        print(f"genai-perf: {tools.ensure_genai_perf()}")
    print(f'export PATH="{tools.BIN}:$PATH"   # puts perf_analyzer on PATH')
    return 0


def cmd_inputs(args: argparse.Namespace) -> int:
    print(write_input_data(spec_from(args), Path(args.out)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    wrapper = tools.ensure_perf_analyzer()
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="perf-analyzer-"))
    input_data = (
        Path(args.input_data)
        if args.input_data
        else write_input_data(spec_from(args), out_dir / f"input_{args.kind}.json")
    )
    run = PerfRun(
        url=args.url,
        model=args.model,
        input_data=input_data,
        out_dir=out_dir,
        concurrency=args.concurrency,
        request_count=args.request_count,
        stability_percentage=args.stability,
        extra_args=args.extra,
    )
    result = run_perf_analyzer(run, wrapper)
    if args.verbose or result.returncode != 0:
        print(result.output)
    elif result.problems:
        print("\n".join(result.problems))
    print(format_table(result.figures))
    print(f"files: {out_dir}")
    return result.returncode


def cmd_exec(args: argparse.Namespace) -> int:
    wrapper = tools.ensure_perf_analyzer()
    return subprocess.run([str(wrapper), *args.extra]).returncode


def cmd_genai_perf(args: argparse.Namespace) -> int:
    tools.ensure_perf_analyzer()
    executable = tools.ensure_genai_perf()
    return subprocess.run([str(executable), *args.extra], env=tools.tool_environment()).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="install perf_analyzer (idempotent)")
    install.add_argument("--genai-perf", action="store_true", help="also genai-perf, in its own venv")
    inputs = sub.add_parser("inputs", help="write an --input-data JSON file")
    add_spec_arguments(inputs)
    inputs.add_argument("--out", required=True)
    run = sub.add_parser("run", help="run perf_analyzer against a live server")
    add_spec_arguments(run)
    run.add_argument("--url", default="localhost:8001", help="Triton gRPC address")
    run.add_argument("--model", default="vllm_model")
    run.add_argument("--input-data", help="an existing input file instead of generating one")
    run.add_argument("--concurrency", default="1", help="start[:end[:step]]")
    run.add_argument("--request-count", type=int, default=20, help="requests per measurement window")
    run.add_argument("--stability", type=float, default=10.0, help="perf_analyzer --stability-percentage")
    run.add_argument("--out-dir", help="keep the CSV, profile export and input file here")
    run.add_argument("--verbose", action="store_true", help="print perf_analyzer's own report")
    for name, helptext in (("exec", "run perf_analyzer"), ("genai-perf", "run genai-perf")):
        sub.add_parser(name, help=f"{helptext} with the arguments after --")
    return parser


COMMANDS = {
    "install": cmd_install,
    "inputs": cmd_inputs,
    "run": cmd_run,
    "exec": cmd_exec,
    "genai-perf": cmd_genai_perf,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Everything after "--" goes to the tool untouched (argparse would parse it).
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    args.extra = extra
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
