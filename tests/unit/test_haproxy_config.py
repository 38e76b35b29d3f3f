"""The HAProxy configuration in front of replicas: the committed examples
are what tools.server.haproxy renders, and HAProxy accepts them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools.paths import ROOT
from tools.server.haproxy import EXAMPLE, Mode, ReplicaAddress, Settings, check_config, render

EXAMPLES = {"http": ROOT / "deploy/haproxy/haproxy.cfg", "tcp": ROOT / "deploy/haproxy/haproxy-tcp.cfg"}
HAVE_HAPROXY = shutil.which("haproxy") is not None or Path("/usr/sbin/haproxy").exists()


@pytest.mark.parametrize("mode", ["http", "tcp"])
def test_the_committed_example_is_the_rendered_one(mode: Mode) -> None:
    expected = render(Settings(EXAMPLE.replicas, mode=mode), example=True)
    command = "python -m tools.server.haproxy --example" + (" --mode tcp" if mode == "tcp" else "")
    assert EXAMPLES[mode].read_text() == expected, f"regenerate it: {command} > {EXAMPLES[mode]}"


def test_mode_http_balances_calls_over_http2_and_checks_ready() -> None:
    text = render(Settings((ReplicaAddress("10.0.0.1", 8001, 8003), ReplicaAddress("10.0.0.2", 8001, 8003))))
    assert "    bind :8001 proto h2\n" in text
    assert "    mode http\n" in text and "    balance roundrobin\n" in text
    assert "    option httpchk GET /ready\n" in text and "    http-check expect status 200\n" in text
    # HAProxy reads the body (the replica's JSON saying ready) before closing.
    assert '    http-check expect rstring "\\"ready\\": *true"\n' in text
    assert (
        "    server r2 10.0.0.2:8001 proto h2 check-proto h1 check port 8003 inter 500ms fall 1 rise 2\n"
        in text
    )
    for timeout in ("client 1h", "server 1h", "tunnel 1h"):
        assert f"    timeout {timeout}\n" in text


def test_mode_tcp_balances_connections() -> None:
    text = render(Settings((ReplicaAddress("10.0.0.1", 8001, 8003),), mode="tcp", stats_port=None))
    assert "    mode tcp\n" in text and "    bind :8001\n" in text
    assert "proto h2" not in text and "frontend stats" not in text
    assert "    server r1 10.0.0.1:8001 check port 8003 inter 500ms fall 1 rise 2\n" in text


@pytest.mark.skipif(not HAVE_HAPROXY, reason="haproxy is not installed (scripts/install-system-tools.sh)")
@pytest.mark.parametrize("mode", ["http", "tcp"])
def test_haproxy_accepts_the_examples(mode: str) -> None:
    check_config(EXAMPLES[mode])


@pytest.mark.skipif(not HAVE_HAPROXY, reason="haproxy is not installed (scripts/install-system-tools.sh)")
def test_haproxy_refuses_a_broken_configuration(tmp_path: Path) -> None:
    broken = tmp_path / "broken.cfg"
    broken.write_text(EXAMPLES["http"].read_text().replace("balance roundrobin", "balance sideways"))
    with pytest.raises(ValueError, match="balance only supports"):
        check_config(broken)


def test_replica_addresses_parse() -> None:
    assert ReplicaAddress.parse("replica-a.llm.svc:8001:8003") == ReplicaAddress(
        "replica-a.llm.svc", 8001, 8003
    )
    for bad in ("replica-a:8001", "replica-a:grpc:8003", ":8001:8003"):
        with pytest.raises(ValueError, match="HOST:GRPC_PORT:HEALTH_PORT"):
            ReplicaAddress.parse(bad)
