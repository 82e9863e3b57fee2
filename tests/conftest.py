"""Shared fixtures: the seed's sample data root (copied, never written in place)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from redis_fixtures import private_redis_server, redis_server

__all__ = ["private_redis_server", "redis_server"]  # fixtures for every test module

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLE = SHARED / "seed" / "sample"


def _find_sample() -> Path:
    # CI clones the repo next to a copy of shared/, as in the workspace; allow an override.
    override = os.environ.get("OFFLOAD_REGISTRY_SAMPLE")
    return Path(override) if override else SAMPLE


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    path = _find_sample()
    if not (path / "expected.jsonl").exists():
        pytest.fail(f"the seed sample fixture is missing at {path} (set OFFLOAD_REGISTRY_SAMPLE)")
    return path


@pytest.fixture(scope="session")
def sample_expected(sample_dir: Path) -> list[dict[str, Any]]:
    lines = (sample_dir / "expected.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture
def sample_root(sample_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the sample data root."""
    root = tmp_path / "root"
    shutil.copytree(sample_dir / "root", root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root
