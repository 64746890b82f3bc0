"""Concern store: record a concern, read a 1,000-entry chronology, import a 1,000-pupil CTF.

Two stores on each engine (SQLite file, and a PostgreSQL server started here):
a school (450 pupils, 50,000 concerns each with an action) and a local
authority's node (150 schools of 450 pupils, 1,000,000 concerns each with an
action). ``HANDOVER_BENCH_SCALE`` (default 1) scales the number of schools
and concerns for a quick run; the chronology (1,000 entries) and the CTF
(1,000 pupils) keep their sizes.

The bulk of the data is seeded in batches straight into the tables, sealed
with the store's own code (``KeyRing`` for the pupil data keys,
``aead.seal`` with ``field_aad`` for each field), because a million
``record_concern`` calls would take hours. Everything that is measured goes
through :class:`transfer.store.service.Store` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import os
import pstats
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from keys import aead
from schemas.auditing import AuditEvent
from schemas.records import NewAction, NewConcern, NewContact, NewPupil, NewTriage
from transfer.identifiers import upn_check_letter
from transfer.store.keyring import KeyRing, field_aad
from transfer.store.organisations import DEFAULT_CATEGORIES
from transfer.store.permissions import Actor, Role
from transfer.store.service import Store
from transfer.store.tables import (
    Action,
    Concern,
    ConcernPupil,
    Pupil,
    PupilKey,
    SealedField,
)

KEK = bytes(range(32))
SCALE = float(os.environ.get("HANDOVER_BENCH_SCALE", "1"))
PUPILS_PER_SCHOOL = 450
CHRONOLOGY_ENTRIES = 1000
CTF_PUPILS = 1000
SAMPLES = 200
BATCH = 10_000
T0 = datetime(2019, 9, 2, 8, 0, tzinfo=UTC)

ACCOUNT = (
    "At morning break the pupil told the class teacher that an older child on the bus had "
    "taken their lunch money again and pushed them against the window; a bruise was seen on "
    "the upper arm. The pupil was upset and asked that their parent not be told yet. Teacher "
    "reassured the pupil and passed this on to the DSL before the end of break."
)
PEOPLE = "Class teacher; older pupil on the bus (not named)"
ACTION = "DSL to speak to the pupil and the bus escort this week; review in a fortnight."
CATEGORIES = [(k, restricted) for k, (_, restricted) in DEFAULT_CATEGORIES.items()]


class _DiscardAudit:
    """The store's audit sink for the benchmark (the audit log has its own benchmark)."""

    async def record(self, event: AuditEvent) -> None:
        return None


@dataclass
class _Org:
    org_id: str
    dsl: Actor
    staff: Actor
    admin: Actor
    pupils: list[str] = field(default_factory=list)


def _upn(la_estab: str, year: int, serial: int) -> str:
    body = f"{la_estab}{year:02d}{serial:03d}"
    return upn_check_letter(body) + body


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# ------------------------------------------------------------------ PostgreSQL


def _pg_bindir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists():
            return cand
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    """A throw-away server with PostgreSQL's default durability (fsync on), as a non-root user."""
    bindir = _pg_bindir()
    run_as = "postgres" if os.geteuid() == 0 else None
    user = run_as or pwd.getpwuid(os.geteuid()).pw_name
    prefix = ["runuser", "-u", run_as, "--"] if run_as else []
    tmp = Path(tempfile.mkdtemp(prefix="handover-bench-pg-"))
    if run_as:
        shutil.chown(tmp, user=run_as)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    data = tmp / "data"
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            user,
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    opts = f"-h 127.0.0.1 -p {port} -k {tmp} -c shared_buffers=512MB -c max_wal_size=4GB"
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(tmp / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        yield f"postgresql+asyncpg://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
            env=env,
        )
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------- seeding


async def _school(store: Store, n: int) -> _Org:
    urn = f"{110000 + n}"
    await store.create_school(name=f"School {n}", urn=urn, laestab=f"801{2000 + n:04d}")
    actors = []
    for name, role in (("dsl", Role.DSL), ("staff", Role.STAFF), ("admin", Role.ADMINISTRATOR)):
        rec = await store.bootstrap_staff(urn, username=name, display_name=name, roles=[role])
        actors.append(await store.actor_for(rec.id))
    return _Org(urn, dsl=actors[0], staff=actors[1], admin=actors[2])


async def _insert(conn: AsyncConnection, model: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(insert(model), rows)
        rows.clear()


async def _seed(store: Store, schools: int, concerns: int) -> list[_Org]:
    """``schools`` schools of 450 pupils and ``concerns`` concerns (each with an action)."""
    orgs = [await _school(store, n) for n in range(schools)]
    ring = KeyRing(KEK)
    rng = random.Random(7)
    now = datetime.now(UTC)
    keys: dict[str, bytes] = {}
    async with store.sessions() as s:
        for n, org in enumerate(orgs):
            pupils: list[dict[str, Any]] = []
            pkeys: list[dict[str, Any]] = []
            for i in range(PUPILS_PER_SCHOOL):
                pid = str(uuid.uuid4())
                sealed = await ring.new_pupil_key(s, org.org_id, pid)
                keys[pid] = await ring.pupil_key(s, pid)
                pupils.append(
                    {
                        "id": pid,
                        "org_id": org.org_id,
                        "upn": _upn(f"801{2000 + n:04d}", 14, i),
                        "surname": f"Surname{i}",
                        "forename": f"Forename{i}",
                        "dob": date(2012 + i % 5, 1 + i % 12, 1 + i % 28),
                        "sex": "MF"[i % 2],
                        "year_group": str(2 + i % 5),
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                pkeys.append({"pupil_id": pid, "sealed_key": sealed, "created_at": now})
                org.pupils.append(pid)
            conn = await s.connection()
            await _insert(conn, Pupil, pupils)
            await _insert(conn, PupilKey, pkeys)
        await s.commit()

    rows: dict[Any, list[dict[str, Any]]] = {
        Concern: [],
        ConcernPupil: [],
        Action: [],
        SealedField: [],
    }
    async with store.engine.connect() as conn:
        for c in range(concerns):
            org = orgs[c % len(orgs)]
            pid = rng.choice(org.pupils)
            key = keys[pid]
            cid, aid = str(uuid.uuid4()), str(uuid.uuid4())
            category, restricted = CATEGORIES[c % len(CATEGORIES)]
            when = T0 + timedelta(minutes=7 * c)
            rows[Concern].append(
                {
                    "id": cid,
                    "org_id": org.org_id,
                    "category_key": category,
                    "restricted": restricted,
                    "happened_at": when,
                    "recorded_at": when + timedelta(hours=1),
                    "recorded_by": org.staff.staff_id,
                    "status": "open",
                }
            )
            rows[ConcernPupil].append({"concern_id": cid, "pupil_id": pid})
            rows[Action].append(
                {
                    "id": aid,
                    "concern_id": cid,
                    "created_at": when + timedelta(hours=2),
                    "created_by": org.dsl.staff_id,
                }
            )
            for table, rid, name, value in (
                ("concerns", cid, "account", ACCOUNT),
                ("concerns", cid, "location", "Bus bay"),
                ("concerns", cid, "people_involved", PEOPLE),
                ("actions", aid, "text", ACTION),
            ):
                rows[SealedField].append(
                    {
                        "record_table": table,
                        "record_id": rid,
                        "pupil_id": pid,
                        "field": name,
                        "sealed": aead.seal(key, value.encode(), field_aad(table, name, rid, pid)),
                    }
                )
            if len(rows[Concern]) >= BATCH or c == concerns - 1:
                for model, batch in rows.items():
                    await _insert(conn, model, batch)
                await conn.commit()
    return orgs


async def _chronology_pupil(store: Store, org: _Org) -> str:
    """A pupil with exactly 1,000 chronology entries, written through the store's API."""
    p = await store.create_pupil(
        org.admin,
        NewPupil(
            upn=_upn(f"801{2000:04d}", 15, 999),
            surname="Long",
            forename="Chronology",
            dob=date(2013, 5, 5),
            sex="F",
        ),
    )
    for i in range(CHRONOLOGY_ENTRIES // 4):
        when = T0 + timedelta(days=i)
        c = await store.record_concern(
            org.staff,
            NewConcern(
                pupil_ids=(p.id,),
                category="bullying",
                happened_at=when,
                account=ACCOUNT,
                location="Bus bay",
                people_involved=PEOPLE,
            ),
        )
        await store.triage_concern(org.dsl, c.id, NewTriage(decision="monitor", reason=ACTION))
        await store.add_action(org.dsl, c.id, NewAction(text=ACTION))
        await store.add_contact(
            org.dsl, c.id, NewContact(agency="Early help", contacted_at=when, outcome=ACTION)
        )
    return p.id


def _ctf(urn: str, laestab: str) -> bytes:
    pupils = "".join(
        f"""
    <Pupil><UPN>{_upn(laestab, 20, i)}</UPN><Surname>Surname{i}</Surname>
      <Forename>Forename{i}</Forename><DOB>2015-0{1 + i % 9}-1{i % 10}</DOB><Sex>{"MF"[i % 2]}</Sex>
      <BasicDetails><NCyearActual>6</NCyearActual></BasicDetails></Pupil>"""
        for i in range(CTF_PUPILS)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<CTfile><Header><DocumentName>Common Transfer File</DocumentName><CTFversion>24.0</CTFversion>
  <DateTime>2026-07-20T14:32:05</DateTime><SupplierID>Bench</SupplierID>
  <SourceSchool><LEA>{laestab[:3]}</LEA><Estab>{laestab[3:]}</Estab><URN>{urn}</URN>
    <SchoolName>Bench School</SchoolName><AcademicYear>2025</AcademicYear></SourceSchool>
</Header><CTFpupilData>{pupils}
</CTFpupilData></CTfile>
""".encode()


# ----------------------------------------------------------------- measuring


async def _timed(n: int, op: Callable[[], Awaitable[object]]) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await op()
        out.append(time.perf_counter() - t)
    return out


async def _profiled_share(n: int, op: Callable[[], Awaitable[object]]) -> float:
    """Share of the time of ``op`` spent in ``aead.seal``/``aead.unseal`` (cProfile)."""
    prof = cProfile.Profile()
    prof.enable()
    t = time.perf_counter()
    for _ in range(n):
        await op()
    total = time.perf_counter() - t
    prof.disable()
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    sealing = sum(
        v[3]
        for (filename, _line, name), v in stats.items()
        if filename.endswith(os.path.join("transfer", "aead.py")) and name in ("seal", "unseal")
    )
    return float(sealing / total)


@dataclass
class _Result:
    label: str
    seed_seconds: float
    record: list[float]
    chronology: list[float]
    chronology_frozen: list[float]
    ctf: list[float]
    share_record: float
    share_chronology: float
    share_ctf: float
    db_bytes: int | None


async def _measure(url: str, label: str, schools: int, concerns: int, tmp: Path) -> _Result:
    store = await Store.open(url, KEK, _DiscardAudit(), data_dir=tmp / f"data-{label}")
    try:
        t = time.perf_counter()
        orgs = await _seed(store, schools, concerns)
        seed_seconds = time.perf_counter() - t
        org = orgs[0]
        chron = await _chronology_pupil(store, org)
        entries = await store.chronology(org.dsl, chron)
        if len(entries) != CHRONOLOGY_ENTRIES:
            raise RuntimeError(f"expected {CHRONOLOGY_ENTRIES} entries, got {len(entries)}")
        rng = random.Random(11)

        async def record() -> object:
            pid = rng.choice(org.pupils)
            return await store.record_concern(
                org.staff,
                NewConcern(
                    pupil_ids=(pid,),
                    category="behaviour",
                    happened_at=T0,
                    account=ACCOUNT,
                    location="Hall",
                    people_involved=PEOPLE,
                ),
            )

        async def read() -> object:
            return await store.chronology(org.dsl, chron)

        await _timed(5, read)
        record_t = await _timed(SAMPLES, record)
        chron_t = await _timed(SAMPLES, read)
        gc.collect()
        gc.freeze()
        try:
            frozen_t = await _timed(SAMPLES, read)
        finally:
            gc.unfreeze()
        share_record = await _profiled_share(50, record)
        share_chron = await _profiled_share(20, read)

        ctf_t: list[float] = []
        shares_ctf: list[float] = []
        for k in range(3):
            n = 900 + k
            urn, laestab = f"{110000 + n}", f"801{2000 + n:04d}"
            new = await _school(store, n)
            data = _ctf(urn, laestab)

            async def imp(new: _Org = new, data: bytes = data) -> object:
                return await store.import_ctf(new.admin, data)

            if k < 2:
                ctf_t += await _timed(1, imp)
            else:
                shares_ctf.append(await _profiled_share(1, imp))
        db_bytes = None
        if url.startswith("sqlite"):
            path = Path(url.split("///", 1)[1])
            db_bytes = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        return _Result(
            label,
            seed_seconds,
            record_t,
            chron_t,
            frozen_t,
            ctf_t,
            share_record,
            share_chron,
            shares_ctf[0],
            db_bytes,
        )
    finally:
        await store.close()


def _row(r: _Result) -> str:
    size = f"{r.db_bytes / 1e9:.2f} GB" if r.db_bytes is not None else "n/a"
    return (
        f"| {r.label} | {_ms(_pct(r.record, 0.5))} / {_ms(_pct(r.record, 0.99))} "
        f"| {_ms(_pct(r.chronology, 0.5))} / {_ms(_pct(r.chronology, 0.99))} "
        f"| {_ms(_pct(r.chronology_frozen, 0.5))} / {_ms(_pct(r.chronology_frozen, 0.99))} "
        f"| {statistics.median(r.ctf):.2f} s "
        f"| {r.share_record:.0%} / {r.share_chronology:.0%} / {r.share_ctf:.0%} "
        f"| {r.seed_seconds:.0f} s | {size} |"
    )


async def _all(tmp: Path, pg_url: str) -> list[_Result]:
    school_concerns = max(1000, int(50_000 * SCALE))
    la_schools = max(2, round(150 * SCALE))
    la_concerns = max(2000, int(1_000_000 * SCALE))
    out = []
    for engine in ("SQLite", "PostgreSQL"):
        for size, schools, concerns in (
            ("school", 1, school_concerns),
            ("local authority", la_schools, la_concerns),
        ):
            name = f"bench_{size.split()[0]}"
            if engine == "PostgreSQL":
                await _create_database(pg_url, name)
                url = pg_url.rsplit("/", 1)[0] + f"/{name}"
            else:
                url = f"sqlite+aiosqlite:///{tmp / name / 'handover.db'}"
            label = (
                f"{engine}, {size}: {schools} x {PUPILS_PER_SCHOOL} pupils, {concerns:,} concerns"
            )
            print(f"  {label} ...", file=sys.stderr, flush=True)
            out.append(await _measure(url, label, schools, concerns, tmp))
            print(_row(out[-1]), file=sys.stderr, flush=True)
    return out


async def _create_database(admin_url: str, name: str) -> None:
    from sqlalchemy import text

    from transfer.store.db import make_engine

    engine = make_engine(admin_url)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


def run() -> str:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="handover-bench-store-") as d, _postgres() as pg:
        results = asyncio.run(_all(Path(d), pg))
    minutes = (time.perf_counter() - started) / 60
    lines = [
        "## Concern store: record, chronology, CTF import (SQLite and PostgreSQL)",
        "",
        f"`HANDOVER_BENCH_SCALE={SCALE:g}` (1 = the full sizes); the whole run took "
        f'{minutes:.1f} min. Command: `.venv/bin/python -c "from benchmarks import '
        'bench_store; print(bench_store.run())"`.',
        "",
        "| store | record a concern p50 / p99 | 1,000-entry chronology p50 / p99 "
        "| same, after `gc.freeze()` | CTF import, 1,000 new pupils (median of 2) "
        "| sealing share: record / chronology / CTF | bulk seeding | database size |",
        "|---|---|---|---|---|---|---|---|",
        *(_row(r) for r in results),
        "",
        f"- **Record a concern**: `Store.record_concern` by a member of staff, one pupil, "
        f"{len(ACCOUNT)}-character account, {SAMPLES} calls one after another, each its own "
        "committed transaction (SQLite `synchronous=FULL` in WAL mode; PostgreSQL with its "
        "default `fsync=on`, `synchronous_commit=on`). The audit sink discards events here "
        "(the audit log's own cost is in its section).",
        f"- **Chronology**: `Store.chronology` by the DSL for a pupil with 250 concerns, each "
        f"with a triage decision, an action and an external contact (1,000 entries, 1,750 "
        f"sealed fields), {SAMPLES} reads after 5 warm-up reads. The third column is the same "
        "loop after `gc.collect(); gc.freeze()`: without it, CPython's full (generation 2) "
        "collections, which walk every object the process holds, land inside about one read "
        "in ten and make its p99; see `docs/store.md`.",
        "- **CTF import**: `Store.import_ctf` of a 1,000-pupil file into a new, empty school "
        "in the same store (one transaction; each pupil gets a data key).",
        "- **Sealing share**: run under `cProfile`; the time inside `aead.seal` and "
        "`aead.unseal` (fields, and the data- and organisation-key unwraps) divided by the "
        "wall time of the same calls (50 records, 20 chronology reads, 1 CTF import). cProfile "
        "slows Python code more than the C code under AES-GCM, so these shares are, if "
        "anything, low.",
        "- **Bulk seeding**: pupils, data keys, concerns, their pupil links, one action each "
        f"and the four sealed fields per concern are inserted in batches of {BATCH:,} "
        "concerns with SQLAlchemy Core, sealed with the store's own `KeyRing` and "
        "`aead.seal`/`field_aad` (the same bytes `record_concern` writes); seeding a million "
        "concerns through `record_concern` one transaction at a time would take hours. The "
        "1,000-entry chronology and everything measured go through the `Store` API.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
