"""Audit log: append rates on SQLite, proof time and full verification of a large log.

``HANDOVER_BENCH_AUDIT_SIZE`` sets the size of the large log (default 1,000,000).
``HANDOVER_BENCH_AUDIT_ONLY=serve`` runs only the rows measured while a node serves
API requests (``in-serve``: only those where the node is served in this process).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from schemas.auditing import AuditEvent
from transfer.audit import merkle
from transfer.audit.log import AuditLog
from transfer.commands.init import initialise, write_config
from transfer.config import CONFIG_FILE, load_config
from transfer.demo.procs import ServeProcess, free_port
from transfer.node import Node
from transfer.serving import serving
from transfer.store.db import make_engine, migrate
from transfer.transport.http import http_transport

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

#: The API load for the in-process rows: 8 connections, requests whose handlers append
#: audit entries (a staff list, a pupil read, a chronology read, a concern recorded) and
#: one that does not (``GET /session``); every request also updates its session row. On
#: SIGUSR1 it prints how many requests have completed (to count those in a window); on
#: SIGTERM it stops and prints the count per request kind and any failures.
_MIXED_LOAD = r"""
import asyncio, signal, ssl, sys, time
import aiohttp
from transfer.demo.api import StaffClient

PUPIL = {"surname": "Okafor", "forename": "Amara", "dob": "2014-11-03", "sex": "F"}

async def main(base, cafile, password):
    ctx = ssl.create_default_context(cafile=cafile)
    async with aiohttp.ClientSession() as http:
        admin, dsl = StaffClient(http, base, ctx), StaffClient(http, base, ctx)
        await admin.sign_in("100001", "admin", password)
        await admin.call("POST", "/staff", {"username": "dsl", "display_name": "Bench DSL",
                                            "roles": ["dsl"], "password": password})
        await dsl.sign_in("100001", "dsl", password)
        read = await admin.call("POST", "/pupils", {"upn": "H801200001001", **PUPIL})
        written = await admin.call("POST", "/pupils", {"upn": "X801200001002", **PUPIL})
        concern = {"pupil_ids": [written["id"]], "category": "bullying",
                   "happened_at": "2026-09-07T08:00:00Z", "account": "a bench concern"}
        await dsl.call("POST", "/concerns", {**concern, "pupil_ids": [read["id"]]})
        kinds = {
            "GET /staff": (admin, "GET", "/staff", None),
            "GET /pupils/{id}": (admin, "GET", f"/pupils/{read['id']}", None),
            "GET /pupils/{id}/chronology": (dsl, "GET", f"/pupils/{read['id']}/chronology", None),
            "POST /concerns": (dsl, "POST", "/concerns", concern),
            "GET /session": (admin, "GET", "/session", None),
        }
        plan = ["GET /staff", "GET /pupils/{id}", "GET /pupils/{id}/chronology"] * 2 + [
            "POST /concerns", "GET /session"]
        counts = dict.fromkeys(kinds, 0)
        failures = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(
            signal.SIGUSR1, lambda: print(sum(counts.values()), time.perf_counter(), flush=True))

        async def worker(kind):
            client, method, path, body = kinds[kind]
            while not stop.is_set():
                try:
                    await client.call(method, path, body)
                except Exception as exc:
                    failures.append(f"{kind}: {exc}")
                    stop.set()
                    return
                counts[kind] += 1

        print("ready", flush=True)
        await asyncio.gather(*(worker(k) for k in plan))
        print(" ".join(f"{k.replace(' ', '_')}={v}" for k, v in counts.items()), flush=True)
        print("failures", len(failures), *failures[:3], sep="\n", flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


@contextmanager
def _kek_env() -> Iterator[None]:
    """``HANDOVER_KEK`` set to the benchmark's key while the node is opened."""
    saved = os.environ.get("HANDOVER_KEK")
    os.environ["HANDOVER_KEK"] = KEK.hex()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HANDOVER_KEK", None)
        else:
            os.environ["HANDOVER_KEK"] = saved


async def _bench_node(data_dir: Path, password: str) -> str:
    """A fresh node (one school, its administrator, dev TLS on a free loopback port)."""
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
    with _kek_env():
        await initialise(
            data_dir,
            name="bench",
            schools=[("100001", "8012000", "Bench School")],
            agencies=[],
            admin="admin",
            admin_password=password,
        )
    return base


def _load_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


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
        stdout=subprocess.PIPE,
        text=True,
        env={**_load_env(), **serve.env},
    )


def _latency(lat: list[float]) -> str:
    lat = sorted(lat)
    return (
        f"per append median {_ms(statistics.median(lat))}, p99 {_ms(lat[int(len(lat) * 0.99)])}, "
        f"max {_ms(lat[-1])}"
    )


async def _appenders(log: AuditLog, n: int, callers: int) -> tuple[float, list[float]]:
    """``n`` entries appended by ``callers`` concurrent tasks; (seconds, each append's latency)."""
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
    return time.perf_counter() - t, lat


async def _in_serve(tmp: Path, callers_list: Sequence[int] = (16, 64)) -> list[str]:
    """Appends through the serving node's own audit log while it answers API calls.

    The node is served in this process by :func:`transfer.serving.serving`, the code
    ``handover serve`` runs; the appenders call ``node.audit_log``, the instance the
    request handlers append through; the API client is another process.
    """
    password = "a long enough pass phrase 42"  # a throw-away benchmark node
    data_dir = tmp / "served-here"
    await _bench_node(data_dir, password)
    rows: list[str] = []
    with _kek_env():
        node = await Node.open(data_dir, transport=http_transport)
    async with node, serving(node, "127.0.0.1") as running:
        log = node.audit_log
        load = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIXED_LOAD,
            running.base_url,
            str(data_dir / "tls" / "dev-cert.pem"),
            password,
            stdout=asyncio.subprocess.PIPE,
            env=_load_env(),
        )
        assert load.stdout is not None
        out = load.stdout
        try:
            ready = await asyncio.wait_for(out.readline(), 120)
            if ready.strip() != b"ready":
                raise RuntimeError(f"the API load did not start: {ready!r}")
            await asyncio.sleep(2.0)  # the load is running

            async def requests_done() -> tuple[int, float]:
                load.send_signal(signal.SIGUSR1)
                count, at = (await out.readline()).split()
                return int(count), float(at)

            # The load alone first: what the node answers, and appends, with no appenders.
            before, (r0, t0) = await log.size(), await requests_done()
            await asyncio.sleep(5.0)
            after, (r1, t1) = await log.size(), await requests_done()
            rows.append(
                f"| no appenders: the serving process answers {(r1 - r0) / (t1 - t0):,.0f} API "
                f"requests/s, whose handlers append {(after - before) / (t1 - t0):,.0f} "
                f"entries/s | {after - before:,} | (the load alone, for comparison) |"
            )
            for callers in callers_list:
                n = 20_000 if callers <= 16 else 40_000
                before, (r0, t0) = await log.size(), await requests_done()
                dt, lat = await _appenders(log, n, callers)
                after, (r1, t1) = await log.size(), await requests_done()
                by_requests = after - before - n
                rps = (r1 - r0) / (t1 - t0)
                rows.append(
                    f"| {callers} concurrent appenders in the serving process (`handover serve`'s "
                    f"code, its own `AuditLog`) while it answers {rps:,.0f} API requests/s whose "
                    f"handlers appended {by_requests:,} entries in the same {dt:.1f} s "
                    f"| {n} + {by_requests:,} | {n / dt:,.0f} entries/s from the appenders, "
                    f"{(n + by_requests) / dt:,.0f} entries/s in all; {_latency(lat)} |"
                )
                await asyncio.sleep(1.0)
        finally:
            if load.returncode is None:
                load.terminate()
            summary = (await asyncio.wait_for(out.read(), 60)).decode()
            await load.wait()
        if "failures\n0" not in summary:
            raise RuntimeError(f"the API load failed: {summary}")
        mix = ", ".join(kind.replace("_", " ") for kind in summary.split("\n", 1)[0].split())
        assert await log.verify() == await log.size()
    rows.append(
        f"| (the whole run's requests by kind: {mix}; `verify()` of the log afterwards "
        f"equals its size) | | |"
    )
    return rows


async def _under_serve(tmp: Path) -> list[str]:
    """Appends from this process while a real ``handover serve`` on the same SQLite
    database answers API calls: several writer processes on one SQLite file."""

    password = "a long enough pass phrase 42"  # a throw-away benchmark node
    data_dir = tmp / "served"
    base = await _bench_node(data_dir, password)
    cert = data_dir / "tls" / "dev-cert.pem"
    serve = ServeProcess(
        "bench", data_dir, base, tmp / "serve.log", ca_file=cert, env={"HANDOVER_KEK": KEK.hex()}
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
        dt, lat = await _appenders(log, n, callers)
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
    served = after - before - n
    rps = int(requests) / float(seconds)
    return [
        f"| several writer processes on one SQLite file: {callers} concurrent appenders in the "
        f"benchmark process (a second `AuditLog.for_node`) while `handover serve` (another "
        f"process, same database) answers {rps:,.0f} API requests/s (8 connections, "
        f"`GET /staff` and `GET /session` as a signed-in administrator) and appends "
        f"{served:,} entries of its own | {n} | {n / dt:,.0f} entries/s; {_latency(lat)} |"
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
    only = os.environ.get("HANDOVER_BENCH_AUDIT_ONLY")
    with tempfile.TemporaryDirectory(prefix="handover-bench-audit-") as d:
        tmp = Path(d)
        if only == "serve":  # the rows "while the node serves", nothing else
            return "\n".join([*await _in_serve(tmp), *await _under_serve(tmp)])
        if only == "in-serve":
            return "\n".join(await _in_serve(tmp))
        appends = await _appends(tmp)
        appends += await _in_serve(tmp)
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
            "The rows in the serving process serve a fresh node in the benchmark process with "
            "`transfer.serving.serving` (what `handover serve` runs: same application, "
            "scheduler and `AuditLog`); an API client in another process keeps 8 connections "
            "busy (staff list, pupil and chronology reads, a concern recorded, the session), "
            "and the appenders call the node's own `node.audit_log`. The last row is several "
            "writer processes on one SQLite file, which queue on its single write lock: "
            "PostgreSQL is the configuration for several writer processes.",
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
