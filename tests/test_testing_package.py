"""``offload_registry.testing`` is a public harness the library itself never depends on."""

from __future__ import annotations

import ast
from pathlib import Path

import offload_registry
from offload_registry import testing
from offload_registry.testing import server

PACKAGE = Path(offload_registry.__file__).parent
# The one library module allowed to use the harness: the command that runs it.
USES_THE_HARNESS = {"cli/simulate_cmd.py"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_library_module_imports_the_testing_harness() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith("testing/") or name in USES_THE_HARNESS:
            continue
        if any(
            m == "offload_registry.testing" or m.startswith("offload_registry.testing.")
            for m in _imports(path)
        ):
            offenders.append(name)
    assert offenders == []


def test_the_testing_package_exports_the_server_api() -> None:
    for name in testing.__all__:
        assert getattr(testing, name) is getattr(server, name), name
    assert {"RedisServerProcess", "ServerOptions", "find_server_binary", "free_port"} <= set(
        testing.__all__
    )
