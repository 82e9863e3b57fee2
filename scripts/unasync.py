#!/usr/bin/env python3
"""Generate the blocking twins in src/offload_registry/_sync/ from the asyncio code in _async/.

Token replacement, as httpcore does it: ``async def`` -> ``def``, ``await x`` -> ``x``,
``async with`` -> ``with``, ``__aenter__`` -> ``__enter__`` and so on. ``_primitives.py`` and
``__init__.py`` are hand-written in both packages and never generated.

    python scripts/unasync.py           # rewrite the generated files
    python scripts/unasync.py --check   # exit 1 when a generated file is stale (CI runs this)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "offload_registry"
SOURCE, TARGET = PACKAGE / "_async", PACKAGE / "_sync"
HAND_WRITTEN = {"__init__.py", "_primitives.py"}

REPLACEMENTS: list[tuple[str, str]] = [
    (r"\boffload_registry\._async\b", "offload_registry._sync"),
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncGenerator\b", "Generator"),
    (r"\bredis\.asyncio\b", "redis"),
    (r"\bFakeAsyncRedis\b", "FakeRedis"),
    (r"\baclose\b", "close"),
    (r"\bAsyncRetrying\b", "Retrying"),
    (r"\basynccontextmanager\b", "contextmanager"),
    (r"\bAbstractAsyncContextManager\b", "AbstractContextManager"),
]


def translate(source: str, name: str) -> str:
    for pattern, replacement in REPLACEMENTS:
        source = re.sub(pattern, replacement, source)
    header = (
        f"# GENERATED from src/offload_registry/_async/{name} by scripts/unasync.py. Do not edit.\n"
    )
    return header + source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail when a generated file is stale")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for path in sorted(SOURCE.glob("*.py")):
        if path.name in HAND_WRITTEN:
            continue
        wanted = translate(path.read_text(encoding="utf-8"), path.name)
        target = TARGET / path.name
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == wanted:
            continue
        stale.append(str(target.relative_to(PACKAGE.parent.parent)))
        if not args.check:
            target.write_text(wanted, encoding="utf-8")
    if args.check and stale:
        print(
            "stale generated files (run scripts/unasync.py):", *stale, sep="\n  ", file=sys.stderr
        )
        return 1
    for name in stale:
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
