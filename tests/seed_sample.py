"""The seed's sample data root, shipped with the tests (``tests/fixtures/seed-sample``).

A clone is all the suite needs: nothing here looks outside the repository. The sample is data
written by the seed's own code (see its README); tests read it in place and copy it before
writing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLE_DIR = Path(__file__).resolve().parent / "fixtures" / "seed-sample"
SAMPLE_ROOT = SAMPLE_DIR / "root"
SAMPLE_EXPECTED = SAMPLE_DIR / "expected.jsonl"


def expected_rows() -> list[dict[str, Any]]:
    """What the seed's ``resolve`` returned for each sample key, one dict per line.

    Raises ``FileNotFoundError`` when the fixture is missing: a missing fixture fails the
    tests that need it, it never skips them.
    """
    lines = SAMPLE_EXPECTED.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
