"""A draft left by a process killed while building it (issue 17, item 3).

It used to block the pupil's file for an hour, with ``send`` saying "cancel it first" and
``cancel`` saying "draft, so it cannot be cancelled". A draft now carries a build lease its
builder renews; once that has run out, the draft is removed at start-up and by the delivery
sweep, removed by a new ``send`` it blocks, and can be cancelled; while its build runs, both
say the same thing: it is being built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.exchange.outbox_support import RECEIVER, Sending, sending
from transfer.errors import ConflictError
from transfer.exchange.sweeps import deliver_due
from transfer.exchange.tables import outgoing_packages


async def _crashed_draft(s: Sending) -> str:
    """A draft as a builder killed mid-build leaves it (its build file half written)."""
    other = s.second_outbox(worker="killed-builder")
    entry = await s.directory.entry(RECEIVER)
    package_id = "0b6c8f0e-6f3a-4d7e-9a59-7f8a0c1d2e3f"
    await other._insert_draft(
        s.school.dsl, package_id, entry, "leaver_file", [s.pupil_id], s.store.now()
    )
    s.outbox.outgoing_dir.mkdir(parents=True, exist_ok=True)
    (s.outbox.outgoing_dir / f"{package_id}.age.tmp").write_bytes(b"age-encryption.org/v1\n")
    return package_id


async def _state(s: Sending, package_id: str) -> str | None:
    async with s.store.sessions() as session:
        return (
            await session.execute(
                sa.select(outgoing_packages.c.state).where(outgoing_packages.c.id == package_id)
            )
        ).scalar_one_or_none()


async def test_while_it_is_built_send_and_cancel_say_the_same(db_url: str, tmp_path: Path) -> None:
    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        draft = await _crashed_draft(s)
        with pytest.raises(ConflictError, match="being built right now") as sent:
            await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        with pytest.raises(ConflictError, match="being built right now") as cancelled:
            await s.outbox.cancel(dsl, draft)
        assert "cancel it then" in sent.value.message and "cancel" in cancelled.value.message
        assert await s.outbox.discard_stale_drafts() == 0  # its builder may still be alive
        assert await _state(s, draft) == "draft"


async def test_a_new_send_removes_the_crashed_draft_and_goes(db_url: str, tmp_path: Path) -> None:
    async with sending(db_url, tmp_path) as s:
        draft = await _crashed_draft(s)
        s.school.clock.advance(seconds=s.outbox.lease.total_seconds() + 1)  # nobody renewed it
        rec = await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, RECEIVER)
        assert rec.state == "queued"
        assert await _state(s, draft) is None
        assert not (s.outbox.outgoing_dir / f"{draft}.age.tmp").exists()
        interrupted = [
            e
            for e in s.school.audit.events
            if e.action == "transfer.queued" and e.detail.get("reason") == "interrupted"
        ]
        assert [e.targets["package"] for e in interrupted] == [draft]


async def test_a_crashed_draft_can_be_cancelled(db_url: str, tmp_path: Path) -> None:
    async with sending(db_url, tmp_path) as s:
        draft = await _crashed_draft(s)
        s.school.clock.advance(seconds=s.outbox.lease.total_seconds() + 1)
        record = await s.outbox.cancel(s.school.dsl, draft)
        assert record.state == "cancelled"
        assert not (s.outbox.outgoing_dir / f"{draft}.age.tmp").exists()
        rec = await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, RECEIVER)
        assert rec.state == "queued"


async def test_the_delivery_sweep_removes_crashed_drafts(db_url: str, tmp_path: Path) -> None:
    async with sending(db_url, tmp_path) as s:
        draft = await _crashed_draft(s)
        await deliver_due(s.outbox)
        assert await _state(s, draft) == "draft"
        s.school.clock.advance(seconds=s.outbox.lease.total_seconds() + 1)
        await deliver_due(s.outbox)
        assert await _state(s, draft) is None
