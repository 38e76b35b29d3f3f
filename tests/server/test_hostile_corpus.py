"""The hostile corpus through the real server, over gRPC and (where JSON can
carry the inputs) HTTP: every payload gets INVALID_ARG with its specific
message, and none of them crashes, restarts or corrupts anything."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tools.hostile_corpus import GREEDY, HostileCase, good, hostile_corpus
from tools.infer import grpc_infer, http_body, http_generate, make_inputs
from tools.metrics import metric_value
from triton_embeds.protocol import EMBEDS_FP16_INPUT, ErrorKind, ErrorMarker, parse_error_marker

MARKER = Path("/tmp/triton-embeds-hostile-corpus-ran-code")
CORPUS = hostile_corpus(str(MARKER))
# Allocator pools and caches may grow a little between passes; a leak per
# request would grow with the ~200 requests of a pass, far past this.
MEMORY_TOLERANCE_BYTES = 96 * 1024 * 1024


def valid_request() -> dict:
    return make_inputs(embeds=good().numpy(), sampling=GREEDY)


@pytest.fixture(scope="module")
def reference(server) -> dict:
    result = grpc_infer(server.grpc_url, "tiny", valid_request())
    assert result.error is None and result.completion_tokens == GREEDY["max_tokens"]
    return {"text": result.text, "processes": server_processes(server)}


def server_processes(server) -> dict[int, str]:
    root = psutil.Process(server.process.pid)
    return {p.pid: p.name() for p in [root, *root.children(recursive=True)]}


def server_rss(server) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in server_processes(server))


def send_corpus(server) -> None:
    for case in CORPUS:
        send(server, case)


def send(server, case: HostileCase) -> list[str]:
    """Every error message the case got: over gRPC, then HTTP if expressible."""
    inputs = case.build()
    result = grpc_infer(server.grpc_url, case.model, inputs)
    assert not result.chunks and result.final_flags == 1, case.name
    messages = [result.error]
    body = http_body(inputs)
    if body is not None:
        events = http_generate(server.http_url, case.model, body)
        assert events[0].get("http_status") == 400, (case.name, events)
        messages.append(events[0]["error"])
    return messages


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_hostile_payload_is_rejected_harmlessly(server, metrics_url, reference, case: HostileCase):
    MARKER.unlink(missing_ok=True)
    before = metric_value(metrics_url, "embeds_rejections_total", model=case.model, rule=case.rule)
    messages = send(server, case)
    for message in messages:
        assert message is not None and case.fragment in message, (case.name, message)
        # Clients classify by the marker, not the prose: it names the rule.
        assert parse_error_marker(message) == ErrorMarker(ErrorKind.REJECTED, case.rule), message
    after = metric_value(metrics_url, "embeds_rejections_total", model=case.model, rule=case.rule)
    assert after == before + len(messages), "rejected by a different rule than expected"
    assert not MARKER.exists(), "a payload ran code on the server"
    following = grpc_infer(server.grpc_url, "tiny", valid_request())
    assert following.error is None and following.text == reference["text"]


def test_corpus_leaves_processes_engines_and_memory_unchanged(server, metrics_url, reference):
    """Two more passes of the whole corpus after two warm-up passes: same
    processes, no engine restart, flat memory. The per-case test above does
    not warm the allocators enough: the first two whole passes after it grew
    the server by ~106 MiB, the four passes after those by ~49 MiB together."""
    for _ in range(2):
        send_corpus(server)
    rss_before = server_rss(server)
    for _ in range(2):
        send_corpus(server)
    rss_after = server_rss(server)
    print(
        f"\nserver RSS over two corpus passes ({2 * len(CORPUS)} payloads): "
        f"{rss_before / 2**20:.0f} MiB -> {rss_after / 2**20:.0f} MiB"
    )
    assert server_processes(server) == reference["processes"]
    assert metric_value(metrics_url, "embeds_engine_restarts_total", model="tiny") == 0
    assert metric_value(metrics_url, "embeds_engine_unfinished_requests", model="tiny") == 0
    assert rss_after - rss_before < MEMORY_TOLERANCE_BYTES
    following = grpc_infer(server.grpc_url, "tiny", valid_request())
    assert following.text == reference["text"]


def strided_views() -> dict[str, object]:
    """Valid tensors in awkward memory layouts: each must equal good()."""
    import torch

    from tools.payloads import torch_b64

    tensor = good()
    doubled = torch.zeros((tensor.shape[0] * 2, tensor.shape[1]))
    doubled[::2] = tensor
    return {
        "transposed_view": torch_b64(tensor.t().contiguous().t()),
        "every_other_row": torch_b64(doubled[::2]),
        "float64": torch_b64(tensor.double()),
        "batch_of_one_view": torch_b64(tensor.unsqueeze(0)),
    }


@pytest.mark.parametrize("layout", list(strided_views()))
def test_valid_awkward_layouts_are_served(server, reference, layout):
    payload = strided_views()[layout]
    result = grpc_infer(server.grpc_url, "tiny", make_inputs(embeds_b64=payload, sampling=GREEDY))
    assert result.error is None and result.text == reference["text"]


def test_values_and_lengths_at_the_limits_are_served(server):
    import numpy as np

    edge = good().numpy().astype(np.float16)
    edge[0, :4] = [65504, -65504, 6e-8, -6e-8]  # fp16's largest and smallest magnitudes
    at_max = grpc_infer(
        server.grpc_url, "tiny", make_inputs(embeds=edge, embeds_name=EMBEDS_FP16_INPUT, sampling=GREEDY)
    )
    assert at_max.error is None and at_max.completion_tokens == GREEDY["max_tokens"]
    full = good(512 - GREEDY["max_tokens"]).numpy()
    at_context = grpc_infer(server.grpc_url, "tiny", make_inputs(embeds=full, sampling=GREEDY))
    assert at_context.error is None and at_context.prompt_tokens == 512 - GREEDY["max_tokens"]
