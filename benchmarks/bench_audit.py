"""Audit log: append rates on SQLite, proof time and full verification of a large log.

``HANDOVER_BENCH_AUDIT_SIZE`` sets the size of the large log (default 1,000,000).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transfer.audit import merkle
from transfer.audit.log import AuditLog
from transfer.auditing import AuditEvent
from transfer.commands.init import initialise, write_config
from transfer.config import CONFIG_FILE, load_config
from transfer.demo.procs import ServeProcess, free_port
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


_LOAD = r"""
import asyncio, ssl, sys, time
from pathlib import Path
import aiohttp
from transfer.demo.api import StaffClient

async def main(base, cafile, password, stop):
    ctx = ssl.create_default_context(cafile=cafile)
    async with aiohttp.ClientSession() as http:
        staff = StaffClient(http, base, ctx)
        await staff.sign_in("100001", "admin", password)
        print("ready", flush=True)
        count = 0
        t = time.perf_counter()

        async def worker(path):
            nonlocal count
            while not Path(stop).exists():
                await staff.call("GET", path)
                count += 1

        await asyncio.gather(*(worker(p) for p in ("/staff", "/session") * 4))
        print(count, time.perf_counter() - t, flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


def _start_load(
    serve: ServeProcess, cert: Path, password: str, stop: Path
) -> subprocess.Popen[str]:
    """Wait for the node's TLS certificate and API, then start the API load process."""
    deadline = time.monotonic() + 60
    while not cert.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    serve.wait_ready(60)
    return subprocess.Popen(
        [sys.executable, "-c", _LOAD, serve.base_url, str(cert), password, str(stop)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, **serve.env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip


async def _under_serve(tmp: Path) -> list[str]:
    """Appends while a real ``handover serve`` on the same SQLite database answers API calls."""

    kek_hex = KEK.hex()
    password = "a long enough pass phrase 42"  # a throw-away benchmark node
    data_dir = tmp / "served"
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    write_config(data_dir, "bench")
    cfg = data_dir / CONFIG_FILE
    cfg.write_text(
        cfg.read_text(encoding="utf-8")
        .replace('base_url = "https://localhost:8443"', f'base_url = "{base}"')
        .replace("port = 8443", f"port = {port}"),
        encoding="utf-8",
    )
    saved = os.environ.get("HANDOVER_KEK")
    os.environ["HANDOVER_KEK"] = kek_hex
    try:
        await initialise(
            data_dir, name="bench", schools=[("100001", "8012000", "Bench School")],
            agencies=[], admin="admin", admin_password=password,
        )  # fmt: skip
    finally:
        if saved is None:
            os.environ.pop("HANDOVER_KEK", None)
        else:
            os.environ["HANDOVER_KEK"] = saved
    cert = data_dir / "tls" / "dev-cert.pem"
    serve = ServeProcess(
        "bench", data_dir, base, tmp / "serve.log", ca_file=cert, env={"HANDOVER_KEK": kek_hex}
    )
    stop = tmp / "stop-load"
    serve.start()
    load: subprocess.Popen[str] | None = None
    log = AuditLog.for_node(data_dir, load_config(data_dir), KEK)
    try:
        load = await asyncio.to_thread(_start_load, serve, cert, password, stop)
        assert load.stdout is not None
        ready = await asyncio.to_thread(load.stdout.readline)
        if ready.strip() != "ready":
            raise RuntimeError(f"the API load did not start: {ready!r} ({serve.log_tail()})")
        await asyncio.sleep(1.0)  # the load is running
        before = await log.size()
        n, callers = 6000, 16
        queue = list(range(n))
        lat: list[float] = []

        async def caller() -> None:
            while queue:
                e = _event(queue.pop())
                t0 = time.perf_counter()
                await log.record(e)
                lat.append(time.perf_counter() - t0)

        t = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        dt = time.perf_counter() - t
        after = await log.size()
        stop.touch()
        out, _ = await asyncio.to_thread(load.communicate, None, 60)
        requests, seconds = out.split()
        assert await log.verify() == await log.size()
    finally:
        stop.touch()
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        serve.stop()
        await log.close()
    lat.sort()
    served = after - before - n
    rps = int(requests) / float(seconds)
    return [
        f"| {callers} concurrent callers while `handover serve` (another process, same "
        f"database) answers {rps:,.0f} API requests/s (8 connections, `GET /staff` and "
        f"`GET /session` as a signed-in administrator) and appends {served:,} entries of its own "
        f"| {n} | {n / dt:,.0f} entries/s; per append median {_ms(statistics.median(lat))}, "
        f"p99 {_ms(lat[int(len(lat) * 0.99)])}, max {_ms(lat[-1])} |"
    ]


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
        if os.environ.get("HANDOVER_BENCH_AUDIT_ONLY") == "serve":
            return "\n".join(await _under_serve(tmp))
        appends += await _under_serve(tmp)
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
