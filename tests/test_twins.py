"""Only code that awaits is twinned: everything else lives once, outside ``_async``/``_sync``,
so the asyncio and blocking APIs share one class (one ``Anchor``, one ``TierStats``, one
``RedisPermissionError``) and an ``except`` or ``isinstance`` written for one matches both."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import offload_registry
from offload_registry import _async, _sync

# The classes that must exist twice, and why: each awaits (or is a Protocol of coroutines),
# except SessionCtx, which holds its twin's OffloadStateManager (a different type in each).
# ``_primitives.py`` is hand-written in both (asyncio futures and tasks vs threads).
PRIMITIVES = {"Pending", "SingleFlight"}
AWAITING = PRIMITIVES | {
    "InvalidationListener",
    "Lease",
    "LeaseKeeper",
    "NoSharedTier",
    "OffloadStateManager",
    "RedisTier",
    "SessionCtx",
    "SessionRegistry",
    "ShardListener",
    "SharedTier",
    "TierHealth",
}


def _classes(package: Path) -> dict[str, str]:
    """Every class defined at the top level of a module of ``package``, with its module."""
    found: dict[str, str] = {}
    for path in sorted(package.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                found[node.name] = path.name
    return found


def test_no_class_is_defined_in_both_twins_unless_it_awaits() -> None:
    twice = set(_classes(Path(_async.__file__).parent)) & set(_classes(Path(_sync.__file__).parent))
    assert twice == AWAITING


def test_every_class_listed_as_awaiting_really_awaits_or_holds_a_twin_type() -> None:
    source = {
        p.name: p.read_text(encoding="utf-8") for p in Path(_async.__file__).parent.glob("*.py")
    }
    for name, module in _classes(Path(_async.__file__).parent).items():
        if name not in AWAITING or name in PRIMITIVES | {"SessionCtx"}:
            continue
        tree = ast.parse(source[module])
        (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
        assert any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(node)), name


def test_the_shared_classes_are_one_object_seen_from_either_twin() -> None:
    from offload_registry._async import redis_tier as async_tier  # noqa: PLC0415
    from offload_registry._sync import redis_tier as sync_tier  # noqa: PLC0415

    for name in ("Anchor", "TierStats", "RedisPermissionError"):
        assert getattr(async_tier, name) is getattr(sync_tier, name), name
    assert offload_registry.RedisPermissionError is sync_tier.RedisPermissionError
    for info in pkgutil.iter_modules(_sync.__path__, "offload_registry._sync."):
        importlib.import_module(info.name)  # the blocking twin still imports cleanly


def test_no_two_classes_are_named_one_letter_apart_by_a_plural() -> None:
    """``SessionKey`` (a parsed session key, public) once stood beside ``SessionKeys`` (the
    Redis key names of a session): a reader could not tell them apart by name."""
    names: set[str] = set()
    for info in pkgutil.walk_packages(offload_registry.__path__, "offload_registry."):
        module = importlib.import_module(info.name)
        names.update(
            n
            for n, o in vars(module).items()
            if isinstance(o, type) and o.__module__ == module.__name__
        )
    assert sorted(n for n in names if n.endswith("s") and n[:-1] in names) == []
    assert "SessionKey" in names and "RedisSessionKeys" in names
