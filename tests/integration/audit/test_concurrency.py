"""Several OS processes appending to one database get one total order: no gaps, no duplicates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tests.integration.audit.conftest import KEK
from transfer.audit.entry import decode
from transfer.audit.log import AuditLog
from transfer.store.db import make_engine

ROOT = Path(__file__).resolve().parents[3]
PROCESSES = 4
EACH = 60


def _run_appenders(url: str, start: Path) -> dict[str, list[int]]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.audit.appender",
                url,
                f"p{n}",
                str(EACH),
                str(start),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    start.touch()  # all processes start appending at once
    given: dict[str, list[int]] = {}
    for n, p in enumerate(procs):
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        given[f"p{n}"] = json.loads(out)
    return given


async def test_concurrent_appends_from_several_processes(migrated_url: str, tmp_path: Path) -> None:
    given = _run_appenders(migrated_url, tmp_path / "go")
    total = PROCESSES * EACH
    every = sorted(s for seqs in given.values() for s in seqs)
    assert every == list(range(total)), "sequence numbers must be 0..n-1, each exactly once"

    engine = make_engine(migrated_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(sa.text("SELECT seq, body FROM audit_entries ORDER BY seq"))
            ).all()
            head = (await conn.execute(sa.text("SELECT size FROM audit_head"))).scalar_one()
    finally:
        await engine.dispose()
    assert head == total
    assert [r.seq for r in rows] == list(range(total))
    entries = [decode(bytes(r.body)) for r in rows]
    assert [e.seq for e in entries] == list(range(total))
    # Each process's appends are in the log exactly once, at the positions it was told.
    for tag, seqs in given.items():
        mine = {e.seq for e in entries if e.actor == tag}
        assert mine == set(seqs)
        assert len({e.request_id for e in entries if e.actor == tag}) == EACH

    log = AuditLog.open(migrated_url, KEK, origin="school-a.example/audit")
    try:
        assert await log.verify() == total
        await log.checkpoint()
        assert await log.verify() == total
    finally:
        await log.close()
