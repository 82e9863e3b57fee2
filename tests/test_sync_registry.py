"""The blocking twin: same behaviour as the asyncio registry, safe across threads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from offload_registry.sync import SessionRegistry
from session_helpers import entry

ROOT = Path(__file__).resolve().parents[1]


def test_sync_resolve_agrees_with_the_seed_on_the_sample(
    sample_root: Path, sample_expected: list[dict[str, Any]]
) -> None:
    with SessionRegistry(sample_root) as reg:
        for want in sample_expected:
            m = reg.resolve(want["session_key"], want["real_session_id"]).manager
            assert sorted(m.processed_tool_call_ids) == want["processed"]
            assert sorted(m.confirmed_offload_ids) == want["confirmed"]
            assert sorted(m.deleted_offload_ids) == want["deleted"]
            assert m.entry_count == want["entry_count"]


def test_threads_resolving_one_key_share_one_manager(tmp_path: Path) -> None:
    with SessionRegistry(tmp_path) as reg:
        seen: list[Any] = []
        barrier = threading.Barrier(8)

        def worker() -> None:
            barrier.wait()
            seen.append(reg.resolve("agent:main:s1").manager)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == 8 and all(m is seen[0] for m in seen)


def test_threads_appending_and_claiming_lose_nothing_and_win_each_id_once(
    tmp_path: Path,
) -> None:
    won: list[str] = []
    with SessionRegistry(tmp_path) as reg:
        manager = reg.resolve("agent:main:s1").manager

        def worker(n: int) -> None:
            for i in range(40):
                manager.append_entries([entry(f"a_{n}_{i}"), entry(f"shared_{i}")])
                won.extend(manager.claim([f"c_{i}", f"c_{i + 1}"]))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert manager.entry_count == 6 * 40 + 40
    assert sorted(won) == sorted(f"c_{i}" for i in range(41))
    with SessionRegistry(tmp_path) as fresh:
        assert fresh.resolve("agent:main:s1").manager.entry_count == 280


CLAIMER = """
import json, sys
from offload_registry.sync import SessionRegistry
root, worker = sys.argv[1], int(sys.argv[2])
sys.stdin.readline()  # start together
won = []
with SessionRegistry(root) as reg:
    m = reg.resolve("agent:main:contested").manager
    for i in range(0, 200, 2):
        ids = [f"call_{i}", f"call{i + 1}", f"call_{(i * 7 + worker) % 200}"]
        won += m.claim(ids)
        m.append_entries([{"tool_call_id": f"w{worker}_{i}"}])
print(json.dumps(won))
"""


def test_four_processes_claiming_overlapping_ids_win_each_once(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(tmp_path), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    won = [i.replace("_", "") for out in outputs for i in json.loads(out)]
    assert Counter(won).most_common(1)[0][1] == 1
    assert sorted(set(won)) == sorted({f"call{i}" for i in range(200)})
    with SessionRegistry(tmp_path) as fresh:
        assert fresh.resolve("agent:main:contested").manager.entry_count == 400


def test_lock_free_hits_stay_correct_while_other_threads_evict(tmp_path: Path) -> None:
    keys = [f"agent:main:s{i}" for i in range(6)]
    errors: list[BaseException] = []
    with SessionRegistry(tmp_path, max_cached=2) as reg:
        barrier = threading.Barrier(4)

        def worker(offset: int) -> None:
            try:
                barrier.wait()
                for i in range(300):
                    key = keys[(i + offset) % len(keys)]
                    assert reg.resolve(key).session_key == key
                    got = reg.get(key)
                    assert got is None or got.session_key == key
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert reg.size <= 2


def test_hits_record_last_access_from_the_injected_clock(tmp_path: Path) -> None:
    now = [7]
    with SessionRegistry(tmp_path, clock_ms=lambda: now[0]) as reg:
        ctx = reg.resolve("agent:main:s1")
        assert ctx.last_access_ms == 7
        now[0] = 1_700_000_000_123
        assert reg.resolve("agent:main:s1") is ctx
        assert ctx.last_access_ms == 1_700_000_000_123
