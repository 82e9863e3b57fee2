"""The cold-resolve chart of ``scripts/benchmark.py --chart PATH.svg``: latency against session
size, log-log, from the journal (our full rebuild), from Redis, and one ``PING`` round trip as
the floor, each the median of a live worker's interleaved runs (async API; the sync API's Redis
line dotted). Needs matplotlib (the ``bench`` extra); draws with the Agg backend, no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_chart(live: list[dict[str, Any]], path: Path, subtitle: str) -> Path:
    """Draw ``bench_cold.bench_live``'s points into ``path`` (SVG, or by its suffix)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional (the bench extra)
    except ImportError:
        raise SystemExit("--chart needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    points = sorted(live, key=lambda p: p["entries"])
    sizes = [p["entries"] for p in points]

    def line(api: str, name: str) -> list[float]:
        return [p["apis"][api][name]["median_ms"] for p in points]

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot(sizes, line("async", "journal"), "o-", label="from the journal (full rebuild)")
    ax.plot(sizes, line("async", "redis"), "s-", label="from Redis")
    ax.plot(sizes, line("sync", "redis"), "s:", label="from Redis, sync API", alpha=0.7)
    ax.plot(sizes, line("async", "ping"), "--", color="grey", label="one PING round trip (floor)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("session size (journal entries)")
    ax.set_ylabel("cold resolve, median (ms)")
    ax.set_title("Cold resolve in a live worker (evicted from the near cache only)", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.text(0.01, 0.01, subtitle, fontsize=7, color="dimgrey")
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = path.suffix.lstrip(".").lower() or "svg"  # SVG for the README; PNG to look at
    fig.savefig(path, format=kind, metadata={"Date": None} if kind == "svg" else None)
    plt.close(fig)
    return path
