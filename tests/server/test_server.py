"""The real stack: tritonserver + python backend + vLLM AsyncLLM, text prompts."""

from __future__ import annotations

import urllib.request

import psutil

from tools.infer import GREEDY, grpc_infer, http_generate, make_inputs
from tools.paths import SMOLLM2_DIR
from tools.server.launcher import start_ready_server
from tools.server.repository import tiny_engine_args, write_model
from triton_embeds.protocol import EXCLUDE_INPUT, SAMPLING_INPUT, STREAM_INPUT, TEXT_INPUT

# Outputs a streamed request gets only on its last response.
LAST_RESPONSE_ONLY = {"finish_reason", "num_input_tokens", "num_output_tokens"}


def test_server_and_models_ready(server):
    for model in ("tiny", "tiny_noembeds", "smollm2"):
        url = f"http://{server.http_url}/v2/models/{model}/ready"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200


def test_text_streams_a_response_per_step_over_grpc(grpc_url):
    """One response per engine step, merged only when the client falls behind."""
    result = grpc_infer(grpc_url, "tiny", make_inputs(text="Hello world", stream=True, sampling=GREEDY))
    assert result.error is None
    assert 1 < len(result.chunks) <= 8
    assert result.finish_reason == "length"
    assert result.completion_tokens == 8
    assert result.final_flags == 1
    # Text alone until the last response, which adds finish reason and usage.
    assert all(names == {"text_output"} for names in result.output_names[:-1])
    assert result.output_names[-1] == {"text_output"} | LAST_RESPONSE_ONLY


def test_text_streams_over_http_sse(http_url):
    body = {
        TEXT_INPUT: "Hello world",
        STREAM_INPUT: True,
        SAMPLING_INPUT: '{"temperature": 0, "max_tokens": 6}',
    }
    events = http_generate(http_url, "tiny", body, stream=True)
    assert 1 < len(events) <= 6
    assert all("text_output" in event and not LAST_RESPONSE_ONLY & event.keys() for event in events[:-1])
    assert events[-1]["finish_reason"] == "length"
    assert events[-1]["num_output_tokens"] == 6


def test_non_streaming_returns_one_response(grpc_url, http_url):
    result = grpc_infer(
        grpc_url, "tiny", make_inputs(text="Hello world", exclude_input=True, sampling=GREEDY)
    )
    assert len(result.chunks) == 1 and result.completion_tokens == 8
    events = http_generate(
        http_url,
        "tiny",
        {
            TEXT_INPUT: "Hello world",
            EXCLUDE_INPUT: True,
            SAMPLING_INPUT: '{"temperature": 0, "max_tokens": 8}',
        },
    )
    assert len(events) == 1
    assert events[0]["text_output"] == result.text


def test_non_streaming_echoes_prompt_unless_excluded(grpc_url):
    """Triton's vLLM backend behaviour: the prompt leads the non-streamed text."""
    echoed = grpc_infer(grpc_url, "tiny", make_inputs(text="Hello world", sampling=GREEDY))
    bare = grpc_infer(grpc_url, "tiny", make_inputs(text="Hello world", exclude_input=True, sampling=GREEDY))
    assert echoed.text == "Hello world" + bare.text


def smollm2_chat_prompt(question: str) -> str:
    """The caller applies the chat template (the model receives plain text)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2_DIR)
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_smollm2_knows_the_capital_of_france(grpc_url):
    prompt = smollm2_chat_prompt("What is the capital of France?")
    result = grpc_infer(
        grpc_url,
        "smollm2",
        make_inputs(text=prompt, exclude_input=True, sampling={"temperature": 0, "max_tokens": 24}),
    )
    assert result.error is None
    assert "Paris" in result.text


def test_shutdown_leaves_no_child_processes(tmp_path):
    repository = tmp_path / "repo"
    repository.mkdir()
    write_model(repository, "tiny", tiny_engine_args())
    server = start_ready_server(repository, tmp_path / "server.log")
    parent = psutil.Process(server.process.pid)
    children = parent.children(recursive=True)
    assert children, "the python backend stub and the engine run as child processes"
    server.stop()
    assert server.process.returncode == 0
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    assert "Segfault" not in (tmp_path / "server.log").read_text()
