"""Two replicas (`python -m triton_embeds_replica`, each its own
tritonserver and vLLM engine) behind HAProxy: `./scripts/test.sh replicas`."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark this tier's tests `replicas` (the hook sees every collected item,
    so the other tiers' are left alone by path)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.replicas)
