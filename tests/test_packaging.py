"""Packaging says what is true: floors that are tested, one version, the license, README code.

The floor versions themselves are exercised by ``scripts/run-tests.sh`` (a venv with
``tests/floors/constraints.txt`` and the floor smoke suite against a real Redis); here we check
that the constraints pin exactly the floors ``pyproject.toml`` declares, so the two cannot drift.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
CONSTRAINTS = REPO / "tests" / "floors" / "constraints.txt"
RUNTIME_EXTRAS = ("memory", "embedded", "metrics")  # what an application installs
# Pinned although not declared by us: the floor that our floor of a dependency brings in.
TRANSITIVE = {"hiredis": "redis[hiredis] 6.0 requires hiredis>=3.0.0"}

REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def declared_floors() -> dict[str, str]:
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in RUNTIME_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    floors = {}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        assert match, f"{requirement!r}: every runtime dependency needs a plain >= floor"
        floors[canonical(match[1])] = match[2]
    return floors


def pinned() -> dict[str, str]:
    pins = {}
    for raw in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def test_the_floor_constraints_pin_every_runtime_dependency_at_its_declared_floor() -> None:
    floors, pins = declared_floors(), pinned()
    assert {name: release(v) for name, v in pins.items() if name in floors} == {
        name: release(v) for name, v in floors.items()
    }
    assert set(pins) - set(floors) == set(TRANSITIVE)


def test_the_version_has_one_source() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "offload_registry.__version__"
    init = (REPO / "src" / "offload_registry" / "__init__.py").read_text(encoding="utf-8")
    # setuptools reads the attribute statically: it must stay a plain string literal.
    assigned = [
        node.value.value
        for node in ast.parse(init).body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert len(assigned) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", assigned[0])


def test_the_license_file_matches_the_declared_license() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def readme_python_blocks() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)


def test_every_readme_python_block_is_valid_python() -> None:
    blocks = readme_python_blocks()
    assert blocks
    for block in blocks:
        if block.startswith(("import ", "from ")):  # a whole program: compiles as it stands
            compile(block, "README.md", "exec")
        else:  # a fragment of a coroutine (it may await): compiles inside one
            compile("async def fragment():\n" + textwrap.indent(block, "    "), "README", "exec")


def test_the_readme_quickstart_program_runs_as_written(tmp_path: Path) -> None:
    program = next(b for b in readme_python_blocks() if "asyncio.run(" in b)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['call_2', 'call_3'] True\n"
    assert any(tmp_path.rglob("offload-s1.jsonl"))  # it wrote under its own data root


def test_every_extra_the_readme_installs_exists() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = {
        extra
        for group in re.findall(r"offload-registry\[([a-z0-9,-]+)\]", readme)
        for extra in group.split(",")
    }
    assert set(RUNTIME_EXTRAS) <= named  # the Install section shows each one
    assert named <= set(PYPROJECT["project"]["optional-dependencies"])
