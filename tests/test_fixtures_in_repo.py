"""A clone is all the suite needs: its fixtures ship inside the repository.

The seed's sample lives in ``tests/fixtures/seed-sample`` (with the README saying where it came
from); no test looks for it, or for anything else, outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

from seed_sample import SAMPLE_DIR, SAMPLE_ROOT, expected_rows

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# An absolute path literal (``Path("/work/...")``) or a ``shared`` directory beside the clone
# (``... / "shared" / ...``): both only exist on the machine that wrote the test.
OUTSIDE = re.compile(r"""Path\(\s*[rb]?["']/|/\s*["']shared["']|["']shared["']\s*/""")


def test_the_seed_sample_ships_inside_the_repository_with_its_readme() -> None:
    assert SAMPLE_DIR.is_relative_to(TESTS / "fixtures")
    assert (SAMPLE_DIR / "README.md").read_text(encoding="utf-8").startswith("# A sample data root")
    rows = expected_rows()
    assert rows, "expected.jsonl holds no session"
    for row in rows:
        assert (SAMPLE_ROOT / row["agent_name"]).is_dir(), row["session_key"]


def test_every_sample_agent_has_the_state_file_the_seed_wrote() -> None:
    agents = sorted(p.name for p in SAMPLE_ROOT.iterdir() if p.is_dir())
    assert agents  # an empty root would leave the state.json tests with nothing to check
    assert agents == sorted(p.parent.name for p in SAMPLE_ROOT.glob("*/state.json"))


def test_no_test_names_a_path_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line) and path != Path(__file__).resolve()
    ]
    assert offenders == []
