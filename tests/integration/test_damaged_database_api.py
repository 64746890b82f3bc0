"""A database found damaged while the node serves: a 503 problem document and one log line.

Issue 17, item 7, at the HTTP edge: on SQLite the node's own file is overwritten
under it; on PostgreSQL the server itself reports ``data_corrupted`` (SQLSTATE
XX001) for the table sign-in reads, as it does for a damaged page.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from transfer.commands.init import initialise
from transfer.errors import DamagedStateError
from transfer.node import Node
from transfer.serving import serving
from transfer.store.db import damage_of, database_location
from transfer.transport.http import http_transport


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.fixture
async def data_dir(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    if not db_url.startswith("sqlite"):
        monkeypatch.setenv("HANDOVER_DATABASE__URL", db_url)
    data = tmp_path / "node"
    await initialise(
        data,
        name="t",
        schools=[("123456", "8012000", "Hillside")],
        agencies=[],
        admin=None,
        admin_password=None,
    )
    return data


async def _damage(node: Node, db_url: str) -> None:
    if db_url.startswith("sqlite"):
        # Every page but the schema's overwritten; new connections read the file afresh.
        await node.store.engine.dispose()
        db = node.data_dir / "handover.db"
        raw = db.read_bytes()
        db.write_bytes(raw[:4096] + bytes([0xA5]) * (len(raw) - 4096))
        return
    async with node.store.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "CREATE FUNCTION damaged() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'could not read block 0 in file \"base/16384/16385\"' "
                "USING ERRCODE = 'data_corrupted'; END $$"
            )
        )
        for table in ("staff", "pupils"):
            await conn.execute(sa.text(f"ALTER TABLE {table} RENAME TO {table}_pages"))
            # A one-time filter: evaluated as the table is read, even when it has no rows.
            await conn.execute(
                sa.text(
                    f"CREATE VIEW {table} AS SELECT * FROM {table}_pages WHERE (SELECT damaged())"
                )
            )


async def test_a_damaged_database_answers_503_naming_it(
    data_dir: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        await Node.open(data_dir, transport=http_transport) as node,
        serving(node, "127.0.0.1", 0) as running,
    ):
        ctx = ssl.create_default_context(cafile=str(data_dir / "tls" / "dev-cert.pem"))
        await asyncio.sleep(0.5)  # let the start-up sweeps finish on the intact database
        await _damage(node, db_url)
        body = {"org": "123456", "username": "nobody", "password": "not the password"}
        with caplog.at_level(logging.ERROR):
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{running.base_url}/api/v1/session", json=body, ssl=ctx) as r,
            ):
                status, doc = r.status, await r.json()
            # A scheduled sweep that meets the damage: one line too, no traceback.
            [job] = [j for j in running.scheduler.get_jobs() if j.name == "DeadlineSweep.run"]
            job.modify(next_run_time=datetime.now(UTC))
            for _ in range(600):
                if any("DeadlineSweep.run" in r.getMessage() for r in _runs(caplog)):
                    break
                await asyncio.sleep(0.05)
    assert status == 503, doc
    assert doc["type"] == "urn:handover:problem:damaged-state"
    where = database_location(node.config.database_url(data_dir))
    assert f"the database {where} is damaged" in doc["detail"]
    assert "Backup and restore" in doc["detail"]
    lines = [r for r in caplog.records if r.name == "transfer.api" and r.levelno == logging.ERROR]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "is damaged" in lines[0].getMessage()
    # Every sweep that met the damage (the start-up ones too, when they ran late): one line.
    runs = _runs(caplog)
    assert runs and all(r.exc_info is None and r.exc_text is None for r in runs)
    assert all("failed: the database" in r.getMessage() for r in runs)
    assert any("DeadlineSweep.run" in r.getMessage() for r in runs)


def _runs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The scheduler's records of failed runs (not a run cancelled when the node stops)."""
    return [
        r
        for r in caplog.records
        if r.name.startswith("apscheduler")
        and r.levelno >= logging.ERROR
        and ("raised an exception" in str(r.msg) or "failed:" in r.getMessage())
    ]


def test_postgres_damage_is_recognised_only_by_its_sqlstate() -> None:
    import asyncpg.exceptions as pg

    assert damage_of(pg.DataCorruptedError("could not read block 7")) == "could not read block 7"
    assert damage_of(pg.IndexCorruptedError("index is corrupted")) is not None
    assert damage_of(pg.UniqueViolationError("duplicate key")) is None
    assert damage_of(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")) is None  # not the driver's
    err = DamagedStateError("x")
    assert err.http_status == 503 and err.exit_code == 7
