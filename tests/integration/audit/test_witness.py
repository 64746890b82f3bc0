"""Witnessing: each side keeps the other's checkpoints and catches a fork or rollback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.audit.conftest import KEK, FakeClock, event
from transfer.audit import merkle
from transfer.audit.checkpoint import Checkpoint, NoteError, Signer, sign_checkpoint
from transfer.audit.log import AuditLog, PeerCheckpoint, TamperError, WitnessConflict
from transfer.store.db import make_engine, migrate


async def _new_log(tmp_path: Path, name: str) -> AuditLog:
    url = f"sqlite+aiosqlite:///{tmp_path / name / 'handover.db'}"
    engine = make_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return AuditLog.open(url, KEK, origin=f"{name}.example/audit", clock=FakeClock())


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[AuditLog, AuditLog]]:
    a = await _new_log(tmp_path, "school-a")
    b = await _new_log(tmp_path, "school-b")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _send(sender: AuditLog, receiver: AuditLog, org: str) -> str:
    """What the receipt code does: sender attaches its checkpoint, receiver stores it."""
    since = await receiver.held_size(sender.origin)
    carried = PeerCheckpoint.from_json((await sender.for_peer(since)).to_json())
    vkey = (await sender.verifier()).vkey
    result = await receiver.store_witnessed(
        carried.note, vkey, from_org=org, since=carried.since, proof=carried.proof
    )
    return result.status


async def test_checkpoints_travel_both_ways_and_extend_consistently(
    pair: tuple[AuditLog, AuditLog],
) -> None:
    a, b = pair
    for i in range(5):
        await a.record(event(i))
    assert await _send(a, b, "school-a") == "first"
    assert await _send(a, b, "school-a") == "same"
    for i in range(9):
        await a.record(event(i))
    assert await _send(a, b, "school-a") == "consistent"
    await b.record(event(0))
    assert await _send(b, a, "school-b") == "first"
    assert await b.held_size(a.origin) == 14
    held = await b.witnessed(a.origin)
    assert [w["size"] for w in held] == [5, 14]
    assert await b.verify() == 1  # re-checks the witnessed chain too


async def test_a_forked_log_is_caught_by_its_counterpart(
    pair: tuple[AuditLog, AuditLog], tmp_path: Path
) -> None:
    a, b = pair
    for i in range(6):
        await a.record(event(i))
    await _send(a, b, "school-a")
    # school-a's operator rewrites history: a different log with the same key and size.
    signer = await a.signer()
    forged = sign_checkpoint(Checkpoint(signer.name, 6, merkle.leaf_hash(b"rewritten")), signer)
    with pytest.raises(WitnessConflict, match="different root for size 6"):
        await b.check_witness(forged, signer.verifier.vkey, from_org="school-a")
    assert len(await b.witnessed(a.origin)) == 1  # check_witness stores nothing
    with pytest.raises(WitnessConflict, match="different root for size 6"):
        await b.store_witnessed(forged, signer.verifier.vkey, from_org="school-a")
    statuses = [w["status"] for w in await b.witnessed(a.origin)]
    assert statuses == ["first", "conflict"]  # kept as evidence


async def test_a_bad_consistency_proof_is_caught(pair: tuple[AuditLog, AuditLog]) -> None:
    a, b = pair
    for i in range(4):
        await a.record(event(i))
    await _send(a, b, "school-a")
    for i in range(4):
        await a.record(event(i))
    carried = await a.for_peer(4)
    bad = [bytes(32), *carried.proof[1:]]
    with pytest.raises(WitnessConflict, match="consistency proof"):
        await b.store_witnessed(
            carried.note,
            (await a.verifier()).vkey,
            from_org="school-a",
            since=4,
            proof=bad,
        )


async def test_a_checkpoint_signed_by_another_key_is_refused(
    pair: tuple[AuditLog, AuditLog],
) -> None:
    a, b = pair
    await a.record(event(0))
    carried = await a.for_peer(None)
    impostor = Signer(a.origin, bytes(32))
    with pytest.raises(NoteError):
        await b.store_witnessed(carried.note, impostor.verifier.vkey, from_org="school-a")


async def test_altering_a_held_checkpoint_is_caught_by_verify(
    pair: tuple[AuditLog, AuditLog], tmp_path: Path
) -> None:
    a, b = pair
    for i in range(3):
        await a.record(event(i))
    await _send(a, b, "school-a")
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'school-b' / 'handover.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE audit_witnessed SET size = 2"))
    finally:
        await engine.dispose()
    with pytest.raises(TamperError, match="school-a"):
        await b.verify()
