"""Audit log: append rates on SQLite, proof time and full verification of a large log.

``HANDOVER_BENCH_AUDIT_SIZE`` sets the size of the large log (default 1,000,000).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from transfer.audit import merkle
from transfer.audit.log import AuditLog
from transfer.auditing import AuditEvent
from transfer.store.db import make_engine, migrate

KEK = bytes(range(32))
SIZE = int(os.environ.get("HANDOVER_BENCH_AUDIT_SIZE", "1000000"))


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        action="store.pupil.read",
        actor=f"staff-{i % 40}",
        org="school-a",
        targets={"pupil": f"pupil-{i % 1000}", "concern": f"concern-{i}"},
        request_id=f"req-{i}",
        detail={"n": i},
    )


async def _new_log(path: Path) -> AuditLog:
    url = f"sqlite+aiosqlite:///{path}"
    engine = make_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return AuditLog.open(url, KEK, origin="bench.example/audit")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def _appends(tmp: Path) -> list[str]:
    rows: list[str] = []
    log = await _new_log(tmp / "appends.db")
    try:
        n = 300
        t = time.perf_counter()
        for i in range(n):
            await log.append(_event(i))
        dt = time.perf_counter() - t
        rows.append(
            f"| one caller, one durable commit per entry (`await log.record(e)` in a loop) "
            f"| {n} | {n / dt:,.0f} entries/s ({_ms(dt / n)} each) |"
        )
        for callers in (16, 64):
            n = 6000
            queue = list(range(n))

            async def caller(queue: list[int]) -> None:
                while queue:
                    await log.record(_event(queue.pop()))

            t = time.perf_counter()
            await asyncio.gather(*(caller(queue) for _ in range(callers)))
            dt = time.perf_counter() - t
            rows.append(
                f"| {callers} concurrent callers (requests), group commit, each durable on return "
                f"| {n} | {n / dt:,.0f} entries/s |"
            )
        n, batch = 20_000, 500
        t = time.perf_counter()
        for j in range(0, n, batch):
            await log.append_many([_event(i) for i in range(j, j + batch)])
        dt = time.perf_counter() - t
        rows.append(
            f"| `append_many`, {batch} entries per transaction | {n} | {n / dt:,.0f} entries/s |"
        )
        assert await log.verify() == await log.size()
    finally:
        await log.close()
    return rows


async def _large(tmp: Path) -> list[str]:
    log = await _new_log(tmp / "large.db")
    rows: list[str] = []
    try:
        t = time.perf_counter()
        batch = 5000
        for j in range(0, SIZE, batch):
            await log.append_many([_event(i) for i in range(j, min(j + batch, SIZE))])
        build = time.perf_counter() - t
        rows.append(
            f"| build the log ({SIZE:,} entries, `append_many` of {batch}) | {build:.1f} s |"
        )
        cp = await log.checkpoint()
        root = cp.checkpoint.root
        rng = random.Random(7)
        times: list[float] = []
        for _ in range(200):
            i = rng.randrange(SIZE)
            t = time.perf_counter()
            proof = await log.inclusion_proof(i, SIZE)
            times.append(time.perf_counter() - t)
            _, leaf = await log.entry(i)
            merkle.verify_inclusion(i, SIZE, leaf, proof, root)
        times.sort()
        rows.append(
            f"| inclusion proof, random entry (200 runs) | median {_ms(statistics.median(times))}, "
            f"p95 {_ms(times[189])}, max {_ms(times[-1])} |"
        )
        ctimes: list[float] = []
        for _ in range(100):
            old = rng.randrange(1, SIZE)
            t = time.perf_counter()
            cproof = await log.consistency_proof(old, SIZE)
            ctimes.append(time.perf_counter() - t)
            merkle.verify_consistency(old, SIZE, await log.root(old), root, cproof)
        ctimes.sort()
        rows.append(
            f"| consistency proof, random old size (100 runs) | median "
            f"{_ms(statistics.median(ctimes))}, p95 {_ms(ctimes[94])}, max {_ms(ctimes[-1])} |"
        )
        t = time.perf_counter()
        assert await log.verify() == SIZE
        rows.append(
            f"| `verify()` from scratch (re-hash every entry, chain, head, checkpoint) "
            f"| {time.perf_counter() - t:.1f} s |"
        )
    finally:
        await log.close()
    return rows


async def _main() -> str:
    with tempfile.TemporaryDirectory(prefix="handover-bench-audit-") as d:
        tmp = Path(d)
        appends = await _appends(tmp)
        large = await _large(tmp)
    return "\n".join(
        [
            "## Audit log (`benchmarks/bench_audit.py`)",
            "",
            "SQLite on local disk, WAL, `synchronous=FULL` (every commit is fsynced).",
            "",
            "| append mode | entries | rate |",
            "|---|---|---|",
            *appends,
            "",
            f"A log of {SIZE:,} entries:",
            "",
            "| operation | time |",
            "|---|---|",
            *large,
        ]
    )


def run() -> str:
    return asyncio.run(_main())


if __name__ == "__main__":
    print(run())
