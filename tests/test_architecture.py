"""The house rules of the source tree (issue 14): small modules, one home per class.

Checked on the hand-written code only: ``_sync/`` is generated from ``_async/`` (its classes
share their twins' names on purpose, and its size follows theirs).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import offload_registry

PACKAGE = Path(offload_registry.__file__).parent
GENERATED = "_sync/"
MAX_LINES = 600


def _hand_written_modules() -> list[str]:
    return sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if not path.relative_to(PACKAGE).as_posix().startswith(GENERATED)
    )


MODULES = _hand_written_modules()


def _class_names(module: str) -> set[str]:
    """Every class statement in the module, nested ones included."""
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"), filename=module)
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def test_the_walk_sees_the_package() -> None:
    assert "errors.py" in MODULES and "_async/registry.py" in MODULES
    assert not any(module.startswith(GENERATED) for module in MODULES)


def test_no_class_name_is_defined_in_two_modules() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for module in MODULES:
        for name in _class_names(module):
            homes[name].append(module)
    defined_twice = {name: where for name, where in sorted(homes.items()) if len(where) > 1}
    assert defined_twice == {}


# One case per module, so a failing run names every module over the limit, not just the first.
@pytest.mark.parametrize("module", MODULES)
def test_no_hand_written_module_exceeds_the_line_limit(module: str) -> None:
    lines = len((PACKAGE / module).read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (limit {MAX_LINES}): split it"
