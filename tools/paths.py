"""Where things live in a checkout."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("VENV", ROOT / ".venv"))
CACHE = ROOT / ".cache"
MODELS = ROOT / "models"
MODEL_REPOSITORY = ROOT / "model_repository"
SHIPPED_MODEL = MODEL_REPOSITORY / "vllm_model"
TINY_MODEL_DIR = MODELS / "tiny-llama"
SMOLLM2_DIR = MODELS / "SmolLM2-135M-Instruct"
RESULTS = ROOT / "benchmark-results"
