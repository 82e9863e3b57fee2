"""Every exception lives in ``errors.py``, is drawn in its docstring tree, and is exported."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import offload_registry
from offload_registry import errors, sync
from offload_registry._async.lease import Lease as AsyncLease
from offload_registry._sync.lease import Lease as SyncLease
from offload_registry.config import TierOptions
from offload_registry.disk.fsutil import FsyncPolicy

# A private control-flow signal, caught inside the invalidation listener and never raised to a
# caller; each such class is named here, so a new one is a decision, not an accident.
_PRIVATE_SIGNALS = {"offload_registry.store.records._Resubscribe"}


def _package_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in any module of the package, by qualified name."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(offload_registry.__path__, "offload_registry."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("offload_registry")
            ):
                found[f"{obj.__module__}.{obj.__name__}"] = obj
    return found


def _tree() -> dict[str, str | None]:
    """The docstring tree of ``errors.py``: each class name mapped to its drawn parent."""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^    ((?:[│ ]   )*)(?:[├└]── )?([A-Z]\w+(?:Error|NotFound))\b", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4 + (1 if "── " in line[: match.start(2)] else 0)
        del stack[depth:]
        parents[match.group(2)] = stack[-1] if stack else None
        stack.append(match.group(2))
    return parents


def test_every_exception_is_defined_in_errors_and_exported_from_the_package() -> None:
    found = _package_exceptions()
    assert found, "the walk found no exception at all"
    for qualified, cls in found.items():
        if qualified in _PRIVATE_SIGNALS:
            continue
        assert cls.__module__ == "offload_registry.errors", f"{qualified} lives outside errors.py"
        assert getattr(offload_registry, cls.__name__, None) is cls, qualified
        assert cls.__name__ in offload_registry.__all__, qualified


def test_the_docstring_tree_draws_every_exception_under_its_real_base() -> None:
    tree = _tree()
    defined = {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    }
    assert set(tree) == set(defined)
    for name, parent in tree.items():
        cls = defined[name]
        library_bases = [b for b in cls.__bases__ if b.__module__ == "offload_registry.errors"]
        if parent is None:
            assert library_bases == [], name
        else:
            assert library_bases == [defined[parent]], f"{name} is drawn under {parent}"


def test_the_public_types_a_caller_passes_or_receives_are_exported() -> None:
    assert offload_registry.Lease is AsyncLease and sync.Lease is SyncLease
    assert offload_registry.TierOptions is TierOptions
    assert offload_registry.FsyncPolicy is FsyncPolicy
    assert {"Lease", "TierOptions", "FsyncPolicy"} <= set(offload_registry.__all__)


_DRAWN_CLASS = r"^    [│├└─ ]*([A-Z]\w+(?:Error|NotFound))(?: \((\w+(?:, \w+)*)\))?"


def _drawn_builtin_bases() -> dict[str, set[str]]:
    """The ``(ValueError)``-style builtin bases drawn after each class name in the tree."""
    drawn: dict[str, set[str]] = {}
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(_DRAWN_CLASS, line)
        if match:
            drawn[match.group(1)] = set(match.group(2).split(", ")) if match.group(2) else set()
    return drawn


def test_the_docstring_tree_draws_each_builtin_base() -> None:
    drawn = _drawn_builtin_bases()
    assert set(drawn) == set(_tree())
    for name, bases in drawn.items():
        cls = getattr(errors, name)
        builtin = {b.__name__ for b in cls.__bases__ if b.__module__ == "builtins"}
        assert bases == builtin, f"{name}: drawn with {bases or 'no'} builtin base, has {builtin}"
