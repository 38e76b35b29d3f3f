"""Models the tests and the default server use, built or converted locally:
`python -m tools.models.tiny` and `python -m tools.models.smollm2`."""

from __future__ import annotations

import subprocess
import sys

from ..paths import SMOLLM2_DIR, TINY_MODEL_DIR


def ensure_models(*, smollm2: bool = True) -> None:
    """Build the tiny model, and convert SmolLM2 unless told not to, where
    they are not there already."""
    wanted = [("tools.models.tiny", TINY_MODEL_DIR)]
    if smollm2:
        wanted.append(("tools.models.smollm2", SMOLLM2_DIR))
    for module, out in wanted:
        if not (out / "config.json").exists():
            subprocess.run([sys.executable, "-m", module, "--out", str(out)], check=True)
