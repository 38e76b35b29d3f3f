"""One client over several Triton replicas, and retries of what is safe to
retry, without a Triton server: the targets each form of `url` becomes and
the channel options that carry the policy; calls spread per call over two
in-process gRPC servers speaking Triton's protocol (one `ipv4:` channel
balanced by gRPC, and a channel per host name taken in turn) and two
in-process HTTP servers; which errors are retried, how often, and never
once output has arrived, with a fake transport scripting the server."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from aiohttp import web
from tritonclient.grpc import service_pb2, service_pb2_grpc

import triton_embeds as te
from triton_embeds import _retries
from triton_embeds._errors import error_from_http_status, error_from_message
from triton_embeds._replicas import BalancedTransport
from triton_embeds._retries import backoff_delay, is_retryable
from triton_embeds._transport import Connection
from triton_embeds._transport_grpc import GrpcTransport
from triton_embeds._types import Delta, GenerateRequest
from triton_embeds.protocol import FINISH_REASON_OUTPUT, RETURN_MODEL_INFO_INPUT, TEXT_OUTPUT, bytes_element
from triton_embeds.resources.completions import AsyncCompletions
from triton_embeds.resources.models import AsyncModels

# -- the targets each form of url becomes ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "targets", "policy"),
    [
        ("localhost:8001", ("localhost:8001",), "pick_first"),
        ("grpc://localhost:8001", ("localhost:8001",), "pick_first"),
        ("10.0.0.1:8001", ("10.0.0.1:8001",), "pick_first"),
        # A headless Service: DNS answers with every pod, gRPC balances over them.
        ("dns:///triton-headless:8001", ("dns:///triton-headless:8001",), "round_robin"),
        ("dns:triton-headless:8001", ("dns:triton-headless:8001",), "round_robin"),
        ("ipv4:10.0.0.1:8001,10.0.0.2:8001", ("ipv4:10.0.0.1:8001,10.0.0.2:8001",), "round_robin"),
        ("ipv4:10.0.0.1:8001", ("ipv4:10.0.0.1:8001",), "pick_first"),
        ("ipv6:[::1]:8001,[::2]:8001", ("ipv6:[::1]:8001,[::2]:8001",), "round_robin"),
        ("unix:///tmp/triton.sock", ("unix:///tmp/triton.sock",), "pick_first"),
        # IP addresses of one family share one static target.
        (["10.0.0.1:8001", "10.0.0.2:8001"], ("ipv4:10.0.0.1:8001,10.0.0.2:8001",), "round_robin"),
        (("10.0.0.1:8001", "10.0.0.2:8002"), ("ipv4:10.0.0.1:8001,10.0.0.2:8002",), "round_robin"),
        ("10.0.0.1:8001, 10.0.0.2:8001", ("ipv4:10.0.0.1:8001,10.0.0.2:8001",), "round_robin"),
        (["grpc://10.0.0.1:8001", "10.0.0.2:8001"], ("ipv4:10.0.0.1:8001,10.0.0.2:8001",), "round_robin"),
        (["[::1]:8001", "[fe80::1]:8002"], ("ipv6:[::1]:8001,[fe80::1]:8002",), "round_robin"),
        # Host names cannot go in gRPC's static targets: a channel each.
        (["replica-a:8001", "replica-b:8001"], ("replica-a:8001", "replica-b:8001"), "round_robin"),
        ("replica-a:8001,replica-b:8001", ("replica-a:8001", "replica-b:8001"), "round_robin"),
        (["10.0.0.1:8001", "replica-b:8001"], ("10.0.0.1:8001", "replica-b:8001"), "round_robin"),
        (["10.0.0.1:8001", "[::1]:8001"], ("10.0.0.1:8001", "[::1]:8001"), "round_robin"),
        (["10.0.0.1", "10.0.0.2"], ("10.0.0.1", "10.0.0.2"), "round_robin"),  # no port
        (["999.0.0.1:8001", "10.0.0.2:8001"], ("999.0.0.1:8001", "10.0.0.2:8001"), "round_robin"),
        (["dns:///a:8001", "dns:///b:8001"], ("dns:///a:8001", "dns:///b:8001"), "round_robin"),
        (["replica-a:8001"], ("replica-a:8001",), "pick_first"),
    ],
)
def test_grpc_targets_of_each_form_of_url(url: Any, targets: tuple[str, ...], policy: str) -> None:
    client = te.AsyncClient(url)
    assert (client.protocol, client.targets, client.load_balancing) == ("grpc", targets, policy)
    assert client.url == url  # what was given, untouched


@pytest.mark.parametrize(
    ("url", "protocol", "targets"),
    [
        ("http://a:8000", None, ("http://a:8000",)),
        ("http://a:8000,https://b:8443/", None, ("http://a:8000", "https://b:8443")),
        (["a:8000", "b:8000"], "http", ("http://a:8000", "http://b:8000")),
    ],
)
def test_http_targets_are_base_urls(url: Any, protocol: Any, targets: tuple[str, ...]) -> None:
    client = te.AsyncClient(url, protocol=protocol)
    assert (client.protocol, client.targets) == ("http", targets)
    assert client.load_balancing == ("round_robin" if len(targets) > 1 else "pick_first")


def test_no_url_is_the_default_address_of_the_protocol() -> None:
    for url in (None, ""):
        assert (te.AsyncClient(url).url, te.AsyncClient(url).targets) == (
            "localhost:8001",
            ("localhost:8001",),
        )
        http = te.AsyncClient(url, protocol="http")
        assert (http.url, http.targets) == ("localhost:8000", ("http://localhost:8000",))


def test_load_balancing_given_wins_over_the_default() -> None:
    spread = te.AsyncClient(["10.0.0.1:8001", "10.0.0.2:8001"], load_balancing="pick_first")
    assert (spread.targets, spread.load_balancing) == (("ipv4:10.0.0.1:8001,10.0.0.2:8001",), "pick_first")
    single = te.Client("triton:8001", load_balancing="round_robin")
    assert (single.targets, single.load_balancing) == (("triton:8001",), "round_robin")


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"url": " "}, ValueError, "empty address"),
        ({"url": "a:1,,b:2"}, ValueError, "empty address"),
        ({"url": []}, ValueError, "empty address"),
        ({"url": ["a:1,b:2"]}, ValueError, "one address per list item"),
        ({"url": 8001}, TypeError, "url must be"),
        ({"url": ["http://a:8000", "b:8001"]}, ValueError, "mixes HTTP and gRPC"),
        ({"url": "dns:///triton:8001", "protocol": "http"}, ValueError, "gRPC target"),
        ({"url": ["a:1", "b:1"], "load_balancing": "random"}, ValueError, "load_balancing"),
        ({"url": "ipv4:replica-a:8001,10.0.0.2:8001"}, ValueError, "IP addresses only"),
        ({"url": "ipv6:[::1]:8001,[replica-b]:8001"}, ValueError, "IP addresses only"),
        ({"max_retries": -1}, ValueError, "max_retries"),
        ({"max_retries": 1.5}, ValueError, "max_retries"),
    ],
)
def test_bad_addresses_and_settings_are_refused(arguments: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        te.AsyncClient(**arguments)


def test_every_channel_carries_the_policy_and_keeps_the_message_limits() -> None:
    def channels(client: te.AsyncClient) -> list[GrpcTransport]:
        wire = client._connection.transport
        found = list(wire.transports) if isinstance(wire, BalancedTransport) else [wire]
        assert all(isinstance(transport, GrpcTransport) for transport in found)
        return found  # type: ignore[return-value]

    (single,) = channels(te.AsyncClient("dns:///triton-headless:8001"))
    assert single.target == "dns:///triton-headless:8001"
    options = dict(single.options)
    assert options["grpc.lb_policy_name"] == "round_robin"
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == 2**31 - 1
    per_host = channels(te.AsyncClient(["replica-a:8001", "replica-b:8001"], load_balancing="pick_first"))
    assert [(c.target, dict(c.options)["grpc.lb_policy_name"]) for c in per_host] == [
        ("replica-a:8001", "pick_first"),
        ("replica-b:8001", "pick_first"),
    ]
    assert all(dict(c.options)["grpc.max_send_message_length"] == 2**31 - 1 for c in per_host)


def test_max_retries_is_a_setting_of_both_clients() -> None:
    client = te.Client("localhost:1", max_retries=5)
    assert client.max_retries == 5
    client.max_retries = 0
    assert client._async._connection.max_retries == 0
    with pytest.raises(ValueError, match="max_retries"):
        client.max_retries = -2
    assert te.AsyncClient("localhost:1").max_retries == 2
    client.close()


# -- calls spread over in-process gRPC servers -----------------------------------------------


def text_response(request_id: str, text: str) -> Any:
    """Triton's last response of a request: text and finish reason, final flag."""
    response = service_pb2.ModelInferResponse(id=request_id)
    for name, value in ((TEXT_OUTPUT, text), (FINISH_REASON_OUTPUT, "stop")):
        response.outputs.add(name=name, datatype="BYTES").shape.append(1)
        response.raw_output_contents.append(bytes_element(value))
    response.parameters["triton_final_response"].bool_param = True
    return service_pb2.ModelStreamInferResponse(infer_response=response)


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Triton's gRPC service as far as the client uses it: the repository
    index and the stream, answering every request with `name` (or with the
    model error `error`). `requests` counts inference requests, as a Triton
    server's metrics would."""

    def __init__(self, name: str, error: str | None = None) -> None:
        self.name = name
        self.error = error
        self.requests = 0

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # gRPC's name
        return service_pb2.RepositoryIndexResponse(
            models=[service_pb2.RepositoryIndexResponse.ModelIndex(name="m", version="1", state="READY")]
        )

    async def ModelStreamInfer(self, requests: Any, context: Any) -> AsyncIterator[Any]:  # gRPC's name
        async for request in requests:
            self.requests += 1
            if self.error is not None:
                yield service_pb2.ModelStreamInferResponse(error_message=self.error)
            else:
                yield text_response(request.id, self.name)


@asynccontextmanager
async def grpc_servers(*servicers: FakeTriton) -> AsyncIterator[list[int]]:
    """Each servicer on its own port of this host (IPv4 and, where there is
    one, IPv6 loopback): the ports."""
    servers, ports = [], []
    for servicer in servicers:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        ports.append(server.add_insecure_port("localhost:0"))
        await server.start()
        servers.append(server)
    try:
        yield ports
    finally:
        for server in servers:
            await server.stop(None)


def by_name(ports: list[int]) -> list[str]:
    """Addresses by host name: a channel each, taken in turn by the client."""
    return [f"localhost:{port}" for port in ports]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def complete(client: te.AsyncClient) -> str:
    completion = await client.completions.create(model="m", prompt="x")
    return completion.choices[0].text


def test_ip_addresses_share_one_channel_and_grpc_balances_each_call() -> None:
    async def scenario() -> tuple[tuple[str, ...], list[str], list[int]]:
        a, b = FakeTriton("a"), FakeTriton("b")
        async with grpc_servers(a, b) as ports:
            addresses = [f"127.0.0.1:{port}" for port in ports]
            async with te.AsyncClient(addresses, max_retries=0) as client:
                # round_robin picks among the replicas connected so far: wait
                # until both have answered once.
                for _ in range(100):
                    if a.requests and b.requests:
                        break
                    await complete(client)
                a.requests = b.requests = 0
                texts = [await complete(client) for _ in range(10)]
                return client.targets, texts, [a.requests, b.requests]

    targets, texts, counts = asyncio.run(scenario())
    assert len(targets) == 1 and targets[0].startswith("ipv4:127.0.0.1:")
    assert counts == [5, 5]
    assert len(set(texts[0::2])) == len(set(texts[1::2])) == 1 and texts[0] != texts[1], texts


def test_host_names_get_a_channel_each_taken_in_turn_per_generation_call() -> None:
    async def scenario() -> tuple[tuple[str, ...], list[str], list[int]]:
        a, b = FakeTriton("a"), FakeTriton("b")
        async with grpc_servers(a, b) as ports, te.AsyncClient(by_name(ports), max_retries=0) as client:
            texts = []
            for number in range(6):
                texts.append(await complete(client))
                if number % 2 == 0:  # listings take turns of their own
                    await client.models.list()
            return client.targets, texts, [a.requests, b.requests]

    targets, texts, counts = asyncio.run(scenario())
    assert len(targets) == 2
    assert texts == ["a", "b"] * 3
    assert counts == [3, 3]


def test_a_refused_request_is_sent_again_to_the_next_replica() -> None:
    async def scenario() -> tuple[str, list[int]]:
        draining = FakeTriton("a", error="[unavailable:draining] the server is shutting down")
        serving = FakeTriton("b")
        async with grpc_servers(draining, serving) as ports, te.AsyncClient(by_name(ports)) as client:
            text = await complete(client)
            return text, [draining.requests, serving.requests]

    assert asyncio.run(scenario()) == ("b", [1, 1])


def test_pick_first_moves_on_from_a_replica_it_cannot_reach() -> None:
    async def scenario() -> tuple[list[str], int]:
        serving = FakeTriton("b")
        async with grpc_servers(serving) as (port,):
            url = f"localhost:{free_port()},localhost:{port}"  # nothing listens on the first
            async with te.AsyncClient(url, load_balancing="pick_first", max_retries=1) as client:
                texts = [await complete(client) for _ in range(3)]
                return texts, serving.requests

    assert asyncio.run(scenario()) == (["b", "b", "b"], 3)


def test_an_unreachable_server_fails_after_the_retries_within_seconds() -> None:
    async def scenario() -> float:
        async with te.AsyncClient(f"localhost:{free_port()}", timeout=10) as client:
            start = time.monotonic()
            with pytest.raises(te.APIConnectionError) as caught:
                await complete(client)
            assert not isinstance(caught.value, te.APITimeoutError)
            with pytest.raises(te.APIConnectionError):
                await client.models.list()
            return time.monotonic() - start

    assert asyncio.run(scenario()) < 5  # two calls, each two backoffs of at most 0.5 s and 1 s


# -- HTTP: a session per replica, in turn per request -----------------------------------------


@asynccontextmanager
async def http_servers(count: int) -> AsyncIterator[tuple[list[str], list[int]]]:
    """`count` Triton HTTP generate endpoints, each answering with its number:
    their URLs and the requests each has had."""
    requests = [0] * count

    def app_of(number: int) -> web.Application:
        async def generate_stream(request: web.Request) -> web.StreamResponse:
            requests[number] += 1
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            event = {TEXT_OUTPUT: str(number), FINISH_REASON_OUTPUT: "stop"}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
            await response.write_eof()
            return response

        app = web.Application()
        app.router.add_post("/v2/models/{model}/generate_stream", generate_stream)
        return app

    runners = []
    for number in range(count):
        runner = web.AppRunner(app_of(number))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
    try:
        yield [f"http://127.0.0.1:{runner.addresses[0][1]}" for runner in runners], requests
    finally:
        for runner in runners:
            await runner.cleanup()


def test_http_requests_go_to_the_replicas_in_turn() -> None:
    async def scenario() -> tuple[list[str], list[int]]:
        async with http_servers(2) as (urls, requests), te.AsyncClient(",".join(urls)) as client:
            return [await complete(client) for _ in range(4)], requests

    assert asyncio.run(scenario()) == (["0", "1", "0", "1"], [2, 2])


# -- which errors are retried ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (error_from_message("[unavailable:concurrency_limit] at the limit"), True),
        (error_from_message("[unavailable:engine_restarting] restarting"), True),
        (error_from_message("[unavailable:engine_down] the vLLM engine is not running"), True),
        (error_from_message("[unavailable:draining] the server is shutting down"), True),
        (error_from_message("Request for model 'tiny' is not ready"), True),
        (error_from_http_status(503, "[unavailable:draining] the server is shutting down"), True),
        (error_from_http_status(503, "Server not ready"), True),
        (error_from_http_status(429, "too many requests"), True),
        (error_from_http_status(502, "bad gateway"), True),
        (te.APIConnectionError("cannot reach the Triton gRPC endpoint"), True),
        (error_from_message("[rejected:hidden_size] wrong hidden size"), False),
        (error_from_message("unexpected inference input 'foo' for model 'tiny'"), False),
        (error_from_message("Request for unknown model: 'x' is not found"), False),
        (error_from_message("[internal:generation_failed] boom"), False),
        (error_from_http_status(400, "[rejected:too_long] prompt too long"), False),
        (error_from_http_status(404, "no such model"), False),
        (error_from_http_status(409, "conflict"), False),
        (error_from_http_status(500, "fault"), False),
        (te.APITimeoutError(), False),
    ],
)
def test_only_refusals_and_connection_failures_are_retried(error: Exception, retried: bool) -> None:
    assert is_retryable(error) is retried


def test_backoff_starts_at_half_a_second_doubles_and_stops_at_eight() -> None:
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (30, 8.0)]:
        delays = [backoff_delay(retry) for _ in range(200)]
        assert all(0.75 * ceiling <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jittered


# -- retry count, and never after output, through a scripted transport ---------------------------

UNAVAILABLE = "[unavailable:concurrency_limit] the model is at its concurrency limit"
Outcome = Exception | list[Delta] | tuple[list[Delta], Exception]


class ScriptedServer:
    """A transport whose n-th generation call has the n-th outcome: an error
    before any output, deltas, or deltas then an error."""

    def __init__(self, outcomes: Sequence[Outcome], listings: Sequence[Exception | None] = ()) -> None:
        self.outcomes = list(outcomes)
        self.listings = list(listings)
        self.attempts = 0
        self.listed = 0
        self.asked = 0

    async def generate(self, model: str, requests: list[GenerateRequest]) -> AsyncGenerator[Delta, None]:
        outcome = self.outcomes[self.attempts]
        self.attempts += 1
        deltas, error = (outcome, None) if isinstance(outcome, list) else ([], outcome)
        if isinstance(outcome, tuple):
            deltas, error = outcome
        for delta in deltas:
            yield delta
        if error is not None:
            raise error

    async def model_inputs(self, model: str) -> frozenset[str]:
        return frozenset({RETURN_MODEL_INFO_INPUT})

    async def list_models(self) -> list[tuple[str, str]]:
        self.listed += 1
        failure = self.listings.pop(0) if self.listings else None
        if failure is not None:
            raise failure
        return [("m", "READY")]

    async def model_info(self, model: str) -> dict[str, Any]:
        self.asked += 1
        raise error_from_message(UNAVAILABLE)

    async def close(self) -> None:
        pass


DONE = [Delta(0, "ok", "stop", prompt_tokens=1, completion_tokens=1)]
FIRST = [Delta(0, "partial", None)]


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoffs of milliseconds, so the scripted retries take no time."""
    monkeypatch.setattr(_retries, "INITIAL_DELAY_S", 0.001)


def create(server: ScriptedServer, max_retries: int = 2, timeout: float | None = None, **params: Any) -> Any:
    connection = Connection(server, "binary", timeout=timeout, max_retries=max_retries)
    return asyncio.run(AsyncCompletions(connection).create(model="m", prompt="x", **params))


def streamed(server: ScriptedServer, max_retries: int = 2) -> tuple[list[str], Exception | None]:
    async def run() -> tuple[list[str], Exception | None]:
        connection = Connection(server, "binary", timeout=None, max_retries=max_retries)
        stream = await AsyncCompletions(connection).create(model="m", prompt="x", stream=True)
        texts: list[str] = []
        try:
            async for chunk in stream:
                texts.append(chunk.choices[0].text)
        except te.APIError as exc:
            return texts, exc
        return texts, None

    return asyncio.run(run())


@pytest.mark.usefixtures("quick_backoff")
def test_a_refused_request_is_retried_until_it_is_served() -> None:
    server = ScriptedServer([error_from_message(UNAVAILABLE), te.APIConnectionError("reset"), DONE])
    assert create(server).choices[0].text == "ok"
    assert server.attempts == 3


@pytest.mark.usefixtures("quick_backoff")
@pytest.mark.parametrize("max_retries", [0, 1, 2, 4])
def test_max_retries_more_attempts_then_the_last_error(max_retries: int) -> None:
    server = ScriptedServer([error_from_message(UNAVAILABLE)] * 10)
    with pytest.raises(te.ServiceUnavailableError) as caught:
        create(server, max_retries=max_retries)
    assert caught.value.code == "concurrency_limit"
    assert server.attempts == max_retries + 1


@pytest.mark.usefixtures("quick_backoff")
def test_rejections_and_faults_are_never_retried() -> None:
    for error in [
        error_from_message("[rejected:bad_sampling] top_p must be in (0, 1]"),
        error_from_message("[internal:generation_failed] boom"),
        te.APITimeoutError(),
    ]:
        server = ScriptedServer([error, DONE])
        with pytest.raises(type(error)):
            create(server)
        assert server.attempts == 1


@pytest.mark.usefixtures("quick_backoff")
def test_nothing_is_retried_once_output_has_arrived() -> None:
    broken = te.APIConnectionError("the server closed the stream before the request finished")
    texts, error = streamed(ScriptedServer([(FIRST, broken), DONE]))
    assert (texts, error) == (["partial"], broken)
    server = ScriptedServer([(FIRST, error_from_message(UNAVAILABLE)), DONE])
    with pytest.raises(te.ServiceUnavailableError):
        create(server)  # not streamed: the delta was received all the same
    assert server.attempts == 1


@pytest.mark.usefixtures("quick_backoff")
def test_a_stream_is_retried_before_its_first_chunk() -> None:
    server = ScriptedServer([error_from_message(UNAVAILABLE), DONE])
    assert streamed(server) == (["ok"], None)
    assert server.attempts == 2


def test_no_backoff_is_slept_past_the_requests_timeout() -> None:
    """The first backoff (0.375 to 0.5 s) would outlast a 0.2 s timeout: the
    refusal itself is reported, at once, rather than a timeout later."""
    server = ScriptedServer([error_from_message(UNAVAILABLE), DONE])
    start = time.monotonic()
    with pytest.raises(te.ServiceUnavailableError):
        create(server, timeout=0.2)
    assert time.monotonic() - start < 0.2 and server.attempts == 1


@pytest.mark.usefixtures("quick_backoff")
def test_listings_retry_the_index_but_not_each_models_info() -> None:
    server = ScriptedServer([], listings=[te.APIConnectionError("reset")])
    connection = Connection(server, "binary", timeout=None, max_retries=2)
    models = asyncio.run(AsyncModels(connection).list())
    assert [model.id for model in models] == ["m"]
    assert (server.listed, server.asked) == (2, 1)  # a model that cannot answer is listed as it is
