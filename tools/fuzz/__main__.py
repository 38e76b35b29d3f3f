"""Long-run fuzzer for the prompt-embeds decoder and validator, and for chat
requests.

Targets (--target): `embeds` (default), the embeddings payload decoder and
validator described below; `chat`, a chat request (messages, chat_parameters,
an optional raw embeddings input) through the request parser, the
conversation checks, the chat template and the mixed prompt, with a real
tokenizer: it must end accepted with a prompt whose invariants hold, or
rejected with one of the chat rules (see `chat_oracle`).

Every embeddings input must end one of two ways: `validate_embeds` returns
a plain, dense, finite (seq_len, hidden) tensor in the engine dtype, or a
`RequestRejected` names the rule it broke. Anything else is a finding:

- crash: another exception escaped, or a contract check failed (a tensor
  that is not dense, finite, right-sized and plain was accepted; an
  accepted payload decoded to another tensor the second time; a sparse
  payload got past the pre-load pickle scan; pickled code ran);
- hang: one execution used more than --hang-seconds of CPU time, or a
  worker was stuck in one execution for 10 times that (30 s at least) of
  wall time and was killed;
- allocation: a worker's peak RSS grew by more than --rss-bound-mib, or an
  allocation hit the per-worker memory cap (a payload of a few KiB must
  never cost gigabytes).

Inputs are one control byte (engine dtype; whether the body is the base64
text itself) and a body. The seed corpus is generated here from torch.save
payloads of many shapes, dtypes, values and memory layouts, sparse tensors,
pickled non-tensors and numpy files; the mutators know the layers a payload
goes through (base64 text, zip container, pickle opcodes, bytes).

Engines: `mutation` (default) spreads a seeded mutation loop over --workers
processes and keeps inputs with new outcomes as further seeds; `atheris`
(optional, `pip install atheris`) runs libFuzzer's coverage-guided loop in one
process with the same mutators, and prints libFuzzer's own statistics.

Findings are saved under --findings-dir (git-ignored) as the input (.bin)
and a report (.txt); a chat finding's name starts with `chat-`.
`--replay FILE.bin` runs one saved input again, for the target its name
says (or --target, for atheris's crash-* files). The exit status is 1 when
there are findings.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from .campaign import (
    DEFAULT_EXECUTIONS,
    DEFAULT_FINDINGS_DIR,
    UNLIMITED,
    Campaign,
    Options,
    run_atheris,
)
from .targets import DEFAULT_TARGET, TARGETS, get_target, target_of_finding


# -- command line ----------------------------------------------------------------------------
def replay(path: Path, target: str | None = None) -> int:
    """Run one saved input: 0 when it ends as the contract allows, 1 when it
    is (still) a finding."""
    data = path.read_bytes()
    execute = get_target(target or target_of_finding(path)).execute
    started = time.perf_counter()
    try:
        outcome = execute(data)
    except Exception:  # noqa: BLE001 - the finding is what replay is for
        traceback.print_exc()
        return 1
    print(f"{outcome.rule} in {time.perf_counter() - started:.3f} s: {outcome.message}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--executions",
        type=int,
        default=0,
        help="total executions (0: no limit; 100000 when --seconds is not given either)",
    )
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: no limit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--engine", choices=("mutation", "atheris"), default="mutation")
    parser.add_argument(
        "--target",
        choices=tuple(TARGETS),
        help=f"what to fuzz (default {DEFAULT_TARGET}; with --replay, the one the file name says)",
    )
    parser.add_argument("--hang-seconds", type=float, default=2.0)
    parser.add_argument(
        "--rss-bound-mib",
        type=int,
        default=256,
        help="peak RSS growth of a worker that counts as an unbounded allocation",
    )
    parser.add_argument(
        "--memory-cap-mib",
        type=int,
        default=2048,
        help="allocations past this (per worker) fail and are reported",
    )
    parser.add_argument("--report-every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--findings-dir", type=Path, default=DEFAULT_FINDINGS_DIR)
    parser.add_argument("--replay", type=Path, help="run one saved input and print what happened")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    if args.replay:
        return replay(args.replay, args.target)
    executions = args.executions or (0 if args.seconds else DEFAULT_EXECUTIONS)
    options = Options(
        executions or UNLIMITED,
        args.seconds,
        args.seed,
        max(1, args.workers),
        args.hang_seconds,
        args.rss_bound_mib,
        args.memory_cap_mib,
        args.findings_dir,
        args.target or DEFAULT_TARGET,
    )
    if args.engine == "atheris":
        return run_atheris(options)
    print(
        f"target: {options.target}  engine: mutation  workers: {options.workers}  seed: {options.seed}  "
        f"executions: {executions or 'unlimited'}  seconds: {options.seconds or 'unlimited'}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    campaign = Campaign(options)
    elapsed = campaign.run(args.report_every)
    campaign.print_summary(elapsed)
    return 1 if campaign.findings else 0


if __name__ == "__main__":
    sys.exit(main())
