"""Locate the tritonserver bundled in the nvidia-pytriton wheel and install the
python-backend stub that matches this interpreter.

Triton's python backend looks for `triton_python_backend_stub` next to
`libtriton_python.so`; the wheel ships one stub per Python version in a side
folder. The backend must stay inside the wheel's tree: its RPATH points at
Triton's own libraries there.

Prints the paths as shell assignments when run with --print-env.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def triton_home() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("nvidia-pytriton is not installed: run scripts/bootstrap.sh")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def install_stub(home: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    source = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not source.exists():
        sys.exit(f"the Triton wheel has no python-backend stub for Python {version}")
    target = home / "backends" / "python" / "triton_python_backend_stub"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copy2(source, target)
    target.chmod(0o755)
    (home / "bin" / "tritonserver").chmod(0o755)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.server.install", description=__doc__)
    parser.add_argument("--print-env", action="store_true")
    args = parser.parse_args()
    home = triton_home()
    install_stub(home)
    if args.print_env:
        print(f"TRITON_HOME={home}")
        print(f"TRITONSERVER={home / 'bin' / 'tritonserver'}")
        print(f"TRITON_BACKEND_DIR={home / 'backends'}")


if __name__ == "__main__":
    main()
