"""Tampering directly in the database (SQLite and PostgreSQL) is detected and named."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.audit.conftest import event
from transfer.audit import merkle
from transfer.audit.entry import decode
from transfer.audit.log import AuditLog, TamperError
from transfer.errors import NotFoundError
from transfer.store.db import make_engine

N = 20


async def _sql(url: str, *statements: tuple[str, dict[str, Any]]) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for stmt, params in statements:
                await conn.execute(sa.text(stmt), params)
    finally:
        await engine.dispose()


async def _fill(log: AuditLog, n: int = N) -> None:
    for i in range(n):
        await log.record(event(i))


async def _tamper(log: AuditLog) -> TamperError:
    with pytest.raises(TamperError) as info:
        await log.verify()
    return info.value


async def test_an_intact_log_verifies_and_proves(log: AuditLog) -> None:
    await _fill(log)
    cp = await log.checkpoint()
    assert cp.size == N
    assert await log.verify() == N
    root = await log.root()
    assert root == cp.checkpoint.root
    for i in (0, 7, N - 1):
        body, leaf = await log.entry(i)
        assert merkle.leaf_hash(body) == leaf
        merkle.verify_inclusion(i, N, leaf, await log.inclusion_proof(i, N), root)
    with pytest.raises(NotFoundError):
        await log.inclusion_proof(0, N + 100)
    with pytest.raises(NotFoundError):
        await log.consistency_proof(N, N + 1)
    await _fill(log, 5)
    cp2 = await log.checkpoint()
    merkle.verify_consistency(
        N, N + 5, root, cp2.checkpoint.root, await log.consistency_proof(N, N + 5)
    )
    assert await log.verify() == N + 5


async def test_edit_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    await log.checkpoint()
    body, _ = await log.entry(5)
    forged = dataclasses.replace(decode(body), actor="someone-else").encode()
    await _sql(migrated_url, ("UPDATE audit_entries SET body = :b WHERE seq = 5", {"b": forged}))
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("changed", 5)
    assert "entry #5 was changed" in str(err)


async def test_edit_that_also_rewrites_the_stored_hash_is_named(
    log: AuditLog, migrated_url: str
) -> None:
    await _fill(log)
    body, _ = await log.entry(5)
    forged = dataclasses.replace(decode(body), outcome="refused").encode()
    await _sql(
        migrated_url,
        (
            "UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE seq = 5",
            {"b": forged, "h": merkle.leaf_hash(forged)},
        ),
    )
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("changed", 5)
    assert "entry #6 links to a different hash" in str(err)


async def test_edit_of_the_last_entry_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    body, _ = await log.entry(N - 1)
    forged = dataclasses.replace(decode(body), action="store.pupil.list").encode()
    await _sql(
        migrated_url,
        (
            "UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE seq = :s",
            {"b": forged, "h": merkle.leaf_hash(forged), "s": N - 1},
        ),
    )
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("changed", N - 1)


async def test_non_canonical_bytes_are_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    body, _ = await log.entry(3)
    await _sql(
        migrated_url,
        ("UPDATE audit_entries SET body = :b WHERE seq = 3", {"b": body.replace(b",", b", ", 1)}),
    )
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("changed", 3)


async def test_delete_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    await _sql(migrated_url, ("DELETE FROM audit_entries WHERE seq = 7", {}))
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("removed", 7)
    assert "entry #7 was removed" in str(err)


async def test_delete_and_renumber_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    await _sql(
        migrated_url,
        ("DELETE FROM audit_entries WHERE seq IN (7, 8)", {}),
        ("UPDATE audit_entries SET seq = seq + 1000 WHERE seq > 8", {}),
        ("UPDATE audit_entries SET seq = seq - 1002 WHERE seq > 1000", {}),
    )
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("removed", 7)
    assert "entries #7 to #8 were removed" in str(err)


async def test_insert_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    # A well-formed forged entry at position 9: right seq, right link, right hash.
    _, prev_leaf = await log.entry(8)
    body9, _ = await log.entry(9)
    forged = dataclasses.replace(decode(body9), prev=prev_leaf, actor="intruder").encode()
    assert decode(forged).seq == 9
    row = decode(forged)
    await _sql(
        migrated_url,
        ("UPDATE audit_entries SET seq = seq + 1000 WHERE seq >= 9", {}),
        ("UPDATE audit_entries SET seq = seq - 999 WHERE seq >= 1000", {}),
        (
            "INSERT INTO audit_entries"
            " (seq, body, leaf_hash, at, action, actor, org, pupil, person)"
            " VALUES (9, :b, :h, :at, :a, 'intruder', 'school-a', 'pupil-1', NULL)",
            {"b": forged, "h": merkle.leaf_hash(forged), "at": row.time, "a": row.action},
        ),
    )
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("inserted", 9)
    assert "inserted" in str(err)


async def test_insert_at_the_end_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    last_body, last_leaf = await log.entry(N - 1)
    forged = dataclasses.replace(decode(last_body), seq=N, prev=last_leaf).encode()
    row = decode(forged)
    await _sql(
        migrated_url,
        (
            "INSERT INTO audit_entries"
            " (seq, body, leaf_hash, at, action, actor, org, pupil, person)"
            " VALUES (:s, :b, :h, :at, :a, NULL, NULL, NULL, NULL)",
            {"s": N, "b": forged, "h": merkle.leaf_hash(forged), "at": row.time, "a": row.action},
        ),
    )
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("inserted", N)


async def test_reorder_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    await _sql(
        migrated_url,
        ("UPDATE audit_entries SET seq = -1 WHERE seq = 3", {}),
        ("UPDATE audit_entries SET seq = 3 WHERE seq = 4", {}),
        ("UPDATE audit_entries SET seq = 4 WHERE seq = -1", {}),
    )
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("reordered", 3)
    assert "reordered" in str(err) and "entry #4" in str(err)


async def test_truncate_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    await log.checkpoint()
    await _sql(migrated_url, ("DELETE FROM audit_entries WHERE seq >= 15", {}))
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("truncated", 15)
    assert "truncated" in str(err)


async def test_truncate_with_a_rewritten_head_contradicts_the_checkpoint(
    log: AuditLog, migrated_url: str
) -> None:
    await _fill(log)
    await log.checkpoint()
    compact = merkle.CompactRange()
    last = b""
    for i in range(15):
        _, last = await log.entry(i)
        compact.append(last)
    await _sql(
        migrated_url,
        ("DELETE FROM audit_entries WHERE seq >= 15", {}),
        (
            "UPDATE audit_head SET size = 15, compact = :c, last_leaf = :l",
            {"c": compact.encode(), "l": last},
        ),
    )
    err = await _tamper(log)
    assert err.kind == "rolled-back"
    assert "size 20" in str(err) and "only 15 entries" in str(err)


async def test_forged_checkpoint_row_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    cp = await log.checkpoint()
    await _sql(
        migrated_url,
        ("UPDATE audit_checkpoints SET note = :n", {"n": cp.note.replace("\n20\n", "\n19\n")}),
    )
    err = await _tamper(log)
    assert err.kind == "checkpoint"


_TABLES = ["audit_head", "audit_entries", "audit_nodes", "audit_checkpoints", "audit_witnessed"]


async def _snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                t: [dict(r._mapping) for r in await conn.execute(sa.text(f"SELECT * FROM {t}"))]
                for t in _TABLES
            }
    finally:
        await engine.dispose()


async def _restore(url: str, snap: dict[str, list[dict[str, Any]]]) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for t in _TABLES:
                await conn.execute(sa.text(f"DELETE FROM {t}"))
                if snap[t]:
                    cols = list(snap[t][0])
                    await conn.execute(
                        sa.text(
                            f"INSERT INTO {t} ({', '.join(cols)}) "
                            f"VALUES ({', '.join(':' + c for c in cols)})"
                        ),
                        snap[t],
                    )
    finally:
        await engine.dispose()


async def test_rollback_to_an_old_copy_is_named(
    open_log: Callable[..., AuditLog], migrated_url: str, tmp_path: Path
) -> None:
    log = open_log()
    try:
        await _fill(log, 10)
        await log.checkpoint()
        old = await _snapshot(migrated_url)
        await _fill(log, 5)
        later = await log.checkpoint()
        assert await log.verify() == 15
        await _restore(migrated_url, old)  # the database restored from an old backup
        # The old copy is self-consistent: only a checkpoint kept elsewhere shows it.
        bare = open_log(anchor=False)
        try:
            assert await bare.verify() == 10
            # ... a counterpart's copy of our checkpoint ...
            with pytest.raises(TamperError) as info:
                await bare.verify([("the checkpoint held by school-b", later.note)])
            assert info.value.kind == "rolled-back"
            assert "school-b" in str(info.value) and "size 15" in str(info.value)
        finally:
            await bare.close()
        # ... or the checkpoint file kept in the data directory, outside the database.
        err = await _tamper(log)
        assert err.kind == "rolled-back" and "checkpoint file" in str(err)
        # Rolled back and then written on: the same sizes now have other roots.
        await _fill(log, 7)
        err = await _tamper(log)
        assert err.kind == "contradicted" and "size 15" in str(err)
    finally:
        await log.close()


async def test_a_copy_of_our_checkpoint_handed_back_is_checked(
    open_log: Callable[..., AuditLog], migrated_url: str
) -> None:
    log = open_log(anchor=False)
    try:
        await _fill(log, 10)
        old = await _snapshot(migrated_url)
        await _fill(log, 3)
        ours = await log.checkpoint()
        await _restore(migrated_url, old)
        vkey = (await log.verifier()).vkey
        # A receipt from school-b carries back the checkpoint of ours it holds.
        await log.store_witnessed(ours.note, vkey, from_org="school-b")
        err = await _tamper(log)
        assert err.kind == "rolled-back" and "school-b" in str(err)
    finally:
        await log.close()


@pytest.mark.parametrize("tamper", ["none", "edit", "delete", "reorder", "checkpoint"])
async def test_large_log_path_with_worker_processes(
    log: AuditLog, migrated_url: str, monkeypatch: pytest.MonkeyPatch, tamper: str
) -> None:
    """verify() on a log of many chunks checks them in worker processes, with the same result."""
    import transfer.audit.verification as verification

    monkeypatch.setattr(verification, "VERIFY_CHUNK", 8)
    await log.append_many([event(i) for i in range(30)])
    await log.checkpoint()  # size 30: inside the fourth chunk
    await log.append_many([event(i) for i in range(30, 61)])
    await log.checkpoint()
    if tamper == "none":
        assert await log.verify() == 61
        return
    if tamper == "edit":
        body, _ = await log.entry(43)
        forged = dataclasses.replace(decode(body), actor="x").encode()
        await _sql(
            migrated_url, ("UPDATE audit_entries SET body = :b WHERE seq = 43", {"b": forged})
        )
        want = ("changed", 43)
    elif tamper == "delete":
        await _sql(migrated_url, ("DELETE FROM audit_entries WHERE seq = 17", {}))
        want = ("removed", 17)
    elif tamper == "reorder":
        await _sql(
            migrated_url,
            ("UPDATE audit_entries SET seq = -1 WHERE seq = 40", {}),
            ("UPDATE audit_entries SET seq = 40 WHERE seq = 52", {}),
            ("UPDATE audit_entries SET seq = 52 WHERE seq = -1", {}),
        )
        want = ("reordered", 40)
    else:
        # Rewrite entry 20 and everything after it consistently (hashes, links, head):
        # only the checkpoint at size 30 can tell.
        rows: list[tuple[int, bytes, bytes]] = []
        prev = (await log.entry(19))[1]
        compact = merkle.CompactRange()
        for i in range(61):
            body, leaf = await log.entry(i)
            if i >= 20:
                body = dataclasses.replace(decode(body), prev=prev, detail={"n": -i}).encode()
                leaf = merkle.leaf_hash(body)
                rows.append((i, body, leaf))
            compact.append(leaf)
            prev = leaf
        await _sql(
            migrated_url,
            *[
                (
                    "UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE seq = :s",
                    {"b": b, "h": h, "s": s},
                )
                for s, b, h in rows
            ],
            (
                "UPDATE audit_head SET compact = :c, last_leaf = :l",
                {"c": compact.encode(), "l": prev},
            ),
        )
        want = ("contradicted", 30)
    err = await _tamper(log)
    assert (err.kind, err.seq) == want, str(err)


async def test_a_row_with_a_negative_number_is_named(log: AuditLog, migrated_url: str) -> None:
    await _fill(log)
    body, leaf = await log.entry(0)
    row = decode(body)
    await _sql(
        migrated_url,
        (
            "INSERT INTO audit_entries (seq, body, leaf_hash, at, action)"
            " VALUES (-1, :b, :h, :at, :a)",
            {"b": body, "h": leaf, "at": row.time, "a": row.action},
        ),
    )
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("inserted", -1)


async def test_a_bad_event_fails_alone_in_a_group_commit(log: AuditLog) -> None:
    from schemas.auditing import AuditEvent
    from transfer.errors import InputError

    bad = AuditEvent(action="store.pupil.read", detail={"note": "x" * 600})
    results = await asyncio.gather(
        *(log.append(event(i)) for i in range(5)), log.append(bad), return_exceptions=True
    )
    assert sorted(r for r in results if isinstance(r, int)) == [0, 1, 2, 3, 4]
    assert isinstance(results[-1], InputError)
    assert await log.verify() == 5


# The search columns beside each entry (what ``audit show`` filters on) are copies of fields
# of the entry, not hashed: verify() compares every one with its entry.
_COLUMN_EDITS: dict[str, tuple[str, dict[str, Any]]] = {
    "pupil": ("UPDATE audit_entries SET pupil = 'pupil-2' WHERE seq = :s", {}),
    "person": ("UPDATE audit_entries SET person = 'staff-9' WHERE seq = :s", {}),
    "actor": ("UPDATE audit_entries SET actor = NULL WHERE seq = :s", {}),
    "action": ("UPDATE audit_entries SET action = 'store.pupil.list' WHERE seq = :s", {}),
    "org": ("UPDATE audit_entries SET org = 'school-b' WHERE seq = :s", {}),
    "at": (
        "UPDATE audit_entries SET at = :at WHERE seq = :s",
        {"at": datetime(2020, 1, 1, 12, 0, tzinfo=UTC)},
    ),
}


@pytest.mark.parametrize("column", list(_COLUMN_EDITS))
async def test_an_edited_search_column_is_named(
    log: AuditLog, migrated_url: str, column: str
) -> None:
    await _fill(log)
    await log.checkpoint()
    stmt, params = _COLUMN_EDITS[column]
    await _sql(migrated_url, (stmt, {**params, "s": 6}))
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("changed", 6), str(err)
    assert f"entry #6's {column!r} column was changed" in str(err)


@pytest.mark.parametrize("column", list(_COLUMN_EDITS))
async def test_an_edited_search_column_is_named_in_worker_processes(
    log: AuditLog, migrated_url: str, monkeypatch: pytest.MonkeyPatch, column: str
) -> None:
    import transfer.audit.verification as verification

    monkeypatch.setattr(verification, "VERIFY_CHUNK", 8)
    await log.append_many([event(i) for i in range(40)])
    stmt, params = _COLUMN_EDITS[column]
    await _sql(migrated_url, (stmt, {**params, "s": 29}))
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("changed", 29), str(err)
    assert repr(column) in str(err)


async def test_rows_moved_out_of_a_search_are_found_by_verify(
    log: AuditLog, migrated_url: str
) -> None:
    """The review's case: who has looked at this child's file?"""
    for i in range(10):
        await log.record(event(i, pupil="pupil-1" if i % 2 else "pupil-3"))
    assert [s.seq for s in await log.show(pupil="pupil-1")] == [1, 3, 5, 7, 9]
    await _sql(
        migrated_url, ("UPDATE audit_entries SET pupil = 'pupil-3' WHERE pupil = 'pupil-1'", {})
    )
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("changed", 1)
    assert "'pupil' column was changed" in str(err)


async def test_a_row_moved_into_a_search_is_refused_by_show(
    log: AuditLog, migrated_url: str
) -> None:
    for i in range(6):
        await log.record(event(i, pupil="pupil-1" if i < 3 else "pupil-3"))
    await _sql(migrated_url, ("UPDATE audit_entries SET pupil = 'pupil-1' WHERE seq = 4", {}))
    with pytest.raises(TamperError) as info:
        await log.show(pupil="pupil-1")
    assert (info.value.kind, info.value.seq) == ("changed", 4)
    assert [s.seq for s in await log.show(pupil="pupil-3")] == [3, 5]


@pytest.mark.parametrize("seq", [8, 16, 17])
async def test_a_row_removed_at_a_chunk_boundary_is_named_in_worker_processes(
    log: AuditLog, migrated_url: str, monkeypatch: pytest.MonkeyPatch, seq: int
) -> None:
    """A chunk that checks clean by itself but does not follow on is gone through row by row."""
    import transfer.audit.verification as verification

    monkeypatch.setattr(verification, "VERIFY_CHUNK", 8)
    await log.append_many([event(i) for i in range(30)])
    await _sql(migrated_url, ("DELETE FROM audit_entries WHERE seq = :s", {"s": seq}))
    err = await _tamper(log)
    assert (err.kind, err.seq) == ("removed", seq), str(err)
