"""The benchmark's command line: extra engine arguments reach every path's engine args."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.bench.settings import build_parser, config_from_args, parse_engine_args


def test_engine_arg_values_are_json_when_they_parse() -> None:
    parsed = parse_engine_args(["stream_interval=4", "kv_cache_dtype=auto", "enable_chunked_prefill=false"])
    assert parsed == {"stream_interval": 4, "kv_cache_dtype": "auto", "enable_chunked_prefill": False}


@pytest.mark.parametrize("bad", ["stream_interval", "=4"])
def test_engine_arg_without_key_and_value_is_refused(bad: str) -> None:
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_engine_args([bad])


def test_engine_arg_overrides_and_extends_the_shared_engine_args() -> None:
    args = build_parser().parse_args(
        ["--preset", "cpu", "--engine-arg", "stream_interval=4", "--engine-arg", "seed=7"]
    )
    engine_args = config_from_args(args).engine_args(Path("/models/m"))
    assert engine_args["stream_interval"] == 4
    assert engine_args["seed"] == 7
    assert engine_args["enable_prompt_embeds"] is True
