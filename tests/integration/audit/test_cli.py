"""``handover audit ...`` run as a real subprocess on a node's data directory (SQLite)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.auditing import AuditEvent
from transfer.audit.log import AuditLog
from transfer.store.db import make_engine, migrate

ROOT = Path(__file__).resolve().parents[3]
HANDOVER = ROOT / ".venv" / "bin" / "handover"
KEK_HEX = "11" * 32


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 9, 7, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _run(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH: the venv's editable install maps ``transfer`` as a namespace
    # package on this machine, which hides ``transfer/__init__.py``; point at the tree.
    env = {**os.environ, "HANDOVER_KEK": KEK_HEX, "PYTHONPATH": str(ROOT)}
    cmd = [str(HANDOVER), "audit", *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture
async def node(tmp_path: Path) -> Path:
    data_dir = tmp_path / "node"
    url = f"sqlite+aiosqlite:///{data_dir / 'handover.db'}"
    engine = make_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    clock = Clock()
    log = AuditLog.open(url, bytes.fromhex(KEK_HEX), origin="localhost:8443/audit", clock=clock)
    try:
        for i in range(12):
            clock.now += timedelta(hours=1)
            await log.record(
                AuditEvent(
                    action="store.pupil.read" if i % 3 else "store.concern.add",
                    actor=f"staff-{i % 2}",
                    org="school-a",
                    targets={"pupil": "p1" if i < 8 else "p2"},
                    request_id=f"r{i}",
                )
            )
    finally:
        await log.close()
    return data_dir


async def test_verify_checkpoint_and_show(node: Path) -> None:
    res = _run("checkpoint", data_dir=node)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("localhost:8443/audit\n12\n")
    vkey = _run("checkpoint", "--vkey", data_dir=node).stdout.strip()
    assert vkey.startswith("localhost:8443/audit+")
    res = _run("verify", data_dir=node)
    assert res.returncode == 0, res.stderr
    assert "intact: 12 entries" in res.stdout

    shown = _run("show", "--pupil", "p1", data_dir=node).stdout.splitlines()
    assert len(shown) == 8 and shown[0].startswith("#0 2026-09-07T10:00:00.000000Z")
    out = _run("show", "--pupil", "p2", "--person", "staff-1", data_dir=node).stdout
    assert [line.split()[0] for line in out.splitlines()] == ["#9", "#11"]
    out = _run("show", "--action", "store.concern.*", data_dir=node).stdout
    assert [line.split()[0] for line in out.splitlines()] == ["#0", "#3", "#6", "#9"]
    out = _run(
        "show",
        "--since",
        "2026-09-07T12:00:00Z",
        "--until",
        "2026-09-07T14:00:00Z",
        "--json",
        data_dir=node,
    ).stdout
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [2, 3]


async def test_verify_names_a_deleted_entry(node: Path) -> None:
    assert _run("checkpoint", data_dir=node).returncode == 0
    with sqlite3.connect(node / "handover.db") as db:
        db.execute("DELETE FROM audit_entries WHERE seq = 4")
    res = _run("verify", data_dir=node)
    assert res.returncode == 7
    assert "entry #4 was removed" in res.stderr


async def test_verify_names_a_rollback_against_the_data_dir_checkpoint(node: Path) -> None:
    assert _run("checkpoint", data_dir=node).returncode == 0
    with sqlite3.connect(node / "handover.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    backup = (node / "handover.db").read_bytes()
    url = f"sqlite+aiosqlite:///{node / 'handover.db'}"
    log = AuditLog.open(url, bytes.fromhex(KEK_HEX))
    try:
        await log.record(AuditEvent("store.pupil.read", actor="staff-0"))
    finally:
        await log.close()
    assert _run("checkpoint", data_dir=node).returncode == 0
    for suffix in ("-wal", "-shm"):
        (node / f"handover.db{suffix}").unlink(missing_ok=True)
    (node / "handover.db").write_bytes(backup)  # restore yesterday's backup
    res = _run("verify", data_dir=node)
    assert res.returncode == 7
    assert "rolled back" in res.stderr and "size 13" in res.stderr


async def test_export_and_verify_export(node: Path, tmp_path: Path) -> None:
    vkey = _run("checkpoint", "--vkey", data_dir=node).stdout.strip()
    full, part = tmp_path / "full", tmp_path / "part"
    res = _run("export", str(full), data_dir=node)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in full.iterdir()) == [
        "checkpoint.note",
        "checkpoints",
        "entries.jsonl",
        "log.vkey",
        "proofs.json",
    ]
    res = _run("verify-export", str(full), "--vkey", vkey)
    assert res.returncode == 0, res.stderr
    assert "12 entries" in res.stdout

    res = _run("export", str(part), "--pupil", "p2", data_dir=node)
    assert res.returncode == 0, res.stderr
    res = _run("verify-export", str(part), "--vkey", vkey)
    assert res.returncode == 0 and "4 entries" in res.stdout, res.stderr

    # An edited entry is named: by the hash chain (full export), by its proof (filtered).
    for where, line, named in ((full, 5, "entry #5 was changed"), (part, -1, "entry #11")):
        lines = (where / "entries.jsonl").read_text().splitlines()
        assert '"staff-1"' in lines[line]
        lines[line] = lines[line].replace('"staff-1"', '"staff-0"')
        (where / "entries.jsonl").write_text("\n".join(lines) + "\n")
        res = _run("verify-export", str(where), "--vkey", vkey)
        assert res.returncode == 7
        assert named in res.stderr

    other = "localhost:8443/audit+00000000+" + vkey.split("+")[2]
    res = _run("verify-export", str(full), "--vkey", other)
    assert res.returncode == 7


async def test_show_names_who_acted(node: Path) -> None:
    """Each kind of actor in words: a member of staff by name, role and organisation, the
    operator, the node itself, another organisation's node, and an id nothing here knows."""
    from schemas.auditing import MemoryAudit
    from transfer.store.permissions import Role
    from transfer.store.service import Store

    url = f"sqlite+aiosqlite:///{node / 'handover.db'}"
    kek = bytes.fromhex(KEK_HEX)
    store = await Store.open(url, kek, MemoryAudit(), data_dir=node)
    try:
        await store.create_school(name="Harbourside Primary", urn="199001", laestab="8012000")
        sam = await store.bootstrap_staff(
            "199001", username="sam", display_name="Sam Patel", roles=[Role.STAFF, Role.DSL]
        )
    finally:
        await store.close()
    log = AuditLog.open(url, kek, origin="localhost:8443/audit")
    try:
        for actor in (sam.id, "operator", None, "peer:199001", "ghost-7"):
            await log.record(
                AuditEvent(action="test.who", actor=actor, org="199001", targets={"staff": sam.id})
            )
    finally:
        await log.close()
    res = _run("show", "--action", "test.who", data_dir=node)
    assert res.returncode == 0, res.stderr
    said = [line.split(" ok ", 1)[1] for line in res.stdout.splitlines()]
    assert said == [
        f"by {who}; org Harbourside Primary staff=Sam Patel (DSL)"
        for who in (
            "Sam Patel (DSL, Harbourside Primary)",
            "the operator (command line)",
            "the node itself (automatic)",
            "Harbourside Primary's node",
            "unknown (ghost-7)",
        )
    ]
    assert sam.id not in res.stdout
    rows = [
        json.loads(line)
        for line in _run(
            "show", "--action", "test.who", "--json", data_dir=node
        ).stdout.splitlines()
    ]
    assert [r["actor"] for r in rows] == [sam.id, "operator", None, "peer:199001", "ghost-7"]
    assert rows[0]["targets"] == {"staff": sam.id}


async def test_verify_says_when_promised_entries_wait(node: Path) -> None:
    """A change committed just before a crash promised an entry not yet written: verify says
    so (and that serve writes it), instead of only "intact"; once written it verifies."""
    with sqlite3.connect(node / "handover.db") as db:
        db.execute(
            "INSERT INTO audit_intents (id, event, created_at) VALUES (?, ?, ?)",
            (
                "7d3f0c2e-1b7a-4c55-9a41-0f5e2d9c8b10",
                json.dumps(
                    {
                        "action": "transfer.received",
                        "org": "school-a",
                        "targets": {"package": "pk1"},
                        "outcome": "ok",
                        "detail": {},
                    }
                ),
                "2026-09-07 22:00:00.000000",
            ),
        )
    res = _run("verify", data_dir=node)
    assert res.returncode == 0, res.stderr
    assert "1 entry promised by changes committed just before a crash" in res.stdout
    url = f"sqlite+aiosqlite:///{node / 'handover.db'}"
    log = AuditLog.open(url, bytes.fromhex(KEK_HEX), origin="localhost:8443/audit")
    try:
        assert await log.replay_intents() == 1
    finally:
        await log.close()
    res = _run("verify", data_dir=node)
    assert res.returncode == 0, res.stderr
    assert "intact: 13 entries" in res.stdout and "promised" not in res.stdout
