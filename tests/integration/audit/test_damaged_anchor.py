"""A damaged checkpoint file (``audit/latest-checkpoint.note``) blocks no work; verify reports it.

Issue 17, item 9: two flipped bytes in the file stopped every checkpoint (so
``inbox show`` and ``inbox accept``, which issue receipts carrying one) with a
``UnicodeDecodeError``, and a signature of the wrong length raised PyNaCl's error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.audit.conftest import event
from tests.support.notes import with_signature_length
from transfer.audit.log import AuditLog, TamperError


def flip_two_bytes(path: Path) -> bytes:
    raw = bytearray(path.read_bytes())
    raw[5] ^= 0x80  # inside the origin line: no longer UTF-8
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    return bytes(raw)


def cut_signature(path: Path) -> bytes:
    path.write_text(with_signature_length(path.read_text(encoding="utf-8"), 63), encoding="utf-8")
    return path.read_bytes()


def truncate(path: Path) -> bytes:
    raw = path.read_bytes()[:40]
    path.write_bytes(raw)
    return raw


@pytest.mark.parametrize("damage", [flip_two_bytes, cut_signature, truncate])
async def test_a_damaged_checkpoint_file_blocks_nothing_and_verify_reports_it(
    open_log: Callable[..., AuditLog],
    tmp_path: Path,
    damage: Callable[[Path], bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    anchor = tmp_path / "data" / "audit" / "latest-checkpoint.note"
    log = open_log()
    try:
        for i in range(5):
            await log.append(event(i))
        await log.checkpoint()
        damaged = damage(anchor)
        # Work goes on: appends and new checkpoints (what receipts carry) succeed...
        for i in range(5, 9):
            await log.append(event(i))
        with caplog.at_level(logging.WARNING, logger="handover.audit"):
            stored = await log.checkpoint()
            await log.append(event(9))
            await log.checkpoint()
        assert stored.size == 9
        # ...the damaged file is left as it was (evidence), with one warning line.
        assert anchor.read_bytes() == damaged
        warnings = [r.getMessage() for r in caplog.records if r.name == "handover.audit"]
        assert len(warnings) == 1 and str(anchor) in warnings[0]
        # verify checks the whole log, then names the file and says the rest is intact.
        with pytest.raises(TamperError) as info:
            await log.verify()
        assert info.value.kind == "checkpoint"
        assert str(anchor) in info.value.message
        assert "The log itself is intact (10 entries" in info.value.message
        assert "move it aside" in info.value.message
        # Moved aside, the next checkpoint writes a new file and the log verifies.
        anchor.rename(anchor.with_name("damaged.note"))
        await log.checkpoint()
        assert anchor.exists()
        assert await log.verify() == 10
    finally:
        await log.close()


async def test_real_tampering_is_still_named_before_a_damaged_file(
    open_log: Callable[..., AuditLog], tmp_path: Path, migrated_url: str
) -> None:
    import sqlalchemy as sa

    from transfer.store.db import make_engine

    anchor = tmp_path / "data" / "audit" / "latest-checkpoint.note"
    log = open_log()
    try:
        for i in range(4):
            await log.append(event(i))
        await log.checkpoint()
        flip_two_bytes(anchor)
        engine = make_engine(migrated_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("DELETE FROM audit_entries WHERE seq = 3"))
        finally:
            await engine.dispose()
        with pytest.raises(TamperError) as info:
            await log.verify()
        assert info.value.kind != "checkpoint" and info.value.seq == 3
    finally:
        await log.close()
