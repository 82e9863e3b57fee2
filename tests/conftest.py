"""Shared fixtures: the seed's sample data root (copied, never written in place)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from redis_fixtures import private_redis_server, redis_server
from seed_sample import SAMPLE_DIR, expected_rows

__all__ = ["private_redis_server", "redis_server"]  # fixtures for every test module


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The seed's sample, read-only, shipped in ``tests/fixtures/seed-sample``."""
    if not (SAMPLE_DIR / "expected.jsonl").is_file():
        pytest.fail(f"the seed sample fixture is missing at {SAMPLE_DIR}")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_expected(sample_dir: Path) -> list[dict[str, Any]]:
    return expected_rows()


@pytest.fixture
def sample_root(sample_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the sample data root."""
    root = tmp_path / "root"
    shutil.copytree(sample_dir / "root", root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root
