"""Install perf_analyzer (and genai-perf) under .cache/perf-tools, idempotently.

Nothing goes into the project's environment: the perf-analyzer wheel is
unpacked with `pip install --target`, genai-perf gets a venv of its own, and
`bin/perf_analyzer` is a wrapper that genai-perf finds through PATH.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ..paths import CACHE
from . import debian_runtime

TOOLS = Path(os.environ.get("PERF_TOOLS_DIR", CACHE / "perf-tools"))
BIN = TOOLS / "bin"
# Pinned for reproducible figures; 2.58-2.60 all need glibc 2.38.
PERF_ANALYZER_VERSION = os.environ.get("PERF_ANALYZER_VERSION", "2.60.0")
GENAI_PERF_VERSION = os.environ.get("GENAI_PERF_VERSION", "0.0.16")
GLIBC_NEEDED = (2, 38)
# genai-perf's runtime imports (it imports requests without declaring it), less
# perf-analyzer (on this platform PyPI resolves it to a 0.1.0 stub) and the
# plot/test extras that `profile` never imports.
GENAI_PERF_DEPS = (
    "jinja2",
    "numpy",
    "orjson",
    "pandas",
    "pillow",
    "plotly",
    "pyyaml",
    "requests",
    "rich",
    "soundfile",
    "transformers",
)


def pip(*args: str, python: str = sys.executable) -> None:
    subprocess.run([python, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def install_wheel(version: str = PERF_ANALYZER_VERSION) -> Path:
    """The perf_analyzer binary of the given wheel, unpacked once."""
    target = TOOLS / f"perf-analyzer-{version}"
    binary = target / "perf_analyzer" / "bin" / "perf_analyzer"
    if not binary.exists():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        # The wheels are tagged manylinux_2_38: pip hides them on an older glibc
        # unless told the platform, which in turn needs binary-only, no-deps.
        pip(
            "install",
            "--target",
            str(partial),
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            f"manylinux_2_38_{platform.machine()}",
            f"perf-analyzer=={version}",
        )
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    binary.chmod(0o755)
    return binary


def runs_plainly(binary: Path) -> bool:
    """Whether the host's own glibc and libstdc++ are new enough for `binary`."""
    if debian_runtime.glibc_version() < GLIBC_NEEDED:
        return False
    # A recent glibc can still come with a libstdc++ older than GLIBCXX_3.4.32.
    probe = subprocess.run([str(binary), "--version"], capture_output=True)
    return probe.returncode == 0


def launch_prefix(binary: Path) -> list[str]:
    """The argv that runs `binary`: itself, or through trixie's loader."""
    if runs_plainly(binary):
        return [str(binary)]
    lib = debian_runtime.ensure_runtime(TOOLS / f"debian-{debian_runtime.SUITE}")
    loader = lib / debian_runtime.host_arch().loader
    return [str(loader), "--library-path", str(lib), str(binary)]


def write_wrapper(prefix: list[str]) -> Path:
    wrapper = BIN / "perf_analyzer"
    text = (
        "#!/bin/sh\n"
        "# perf_analyzer from the perf-analyzer wheel (written by python -m tools.perf install)\n"
        f'exec {shlex.join(prefix)} "$@"\n'
    )
    BIN.mkdir(parents=True, exist_ok=True)
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
    wrapper.chmod(0o755)
    return wrapper


def ensure_perf_analyzer() -> Path:
    """Install what is missing and return the `perf_analyzer` wrapper."""
    wrapper = write_wrapper(launch_prefix(install_wheel()))
    check = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"{wrapper} does not run:\n{check.stdout}{check.stderr}")
    return wrapper


def ensure_genai_perf() -> Path:
    """genai-perf in its own venv; returns its executable."""
    venv = TOOLS / f"genai-perf-{GENAI_PERF_VERSION}"
    executable = venv / "bin" / "genai-perf"
    stamp, wanted = venv / ".installed", " ".join(GENAI_PERF_DEPS)
    if executable.exists() and stamp.exists() and stamp.read_text() == wanted:
        return executable
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip("install", "--no-deps", f"genai-perf=={GENAI_PERF_VERSION}", python=python)
    pip("install", *GENAI_PERF_DEPS, python=python)
    stamp.write_text(wanted)
    return executable


def tool_environment() -> dict[str, str]:
    """PATH with the wrapper first (genai-perf runs `perf_analyzer` from PATH);
    no hub look-ups, since tokenizers come from local directories."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env
