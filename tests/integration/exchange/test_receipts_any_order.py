"""Every receipt the receiver issued reaches the sender, whatever the order of arrival.

Issue 17, item 2: when the answer to ``complete`` (carrying the delivered receipt) is lost
and a later receipt arrives first, the package jumped to viewed or accepted and the
delivered receipt was never fetched. A package that reaches its final state without every
earlier receipt is now pulled once more; the receiver pushes its delivered receipt with the
first later one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.exchange.outbox_support import RECEIVER, sending
from transfer.errors import TransportError


@pytest.mark.parametrize("final", ["accepted", "rejected"])
async def test_final_receipt_first_then_the_earlier_ones_are_pulled(
    db_url: str, tmp_path: Path, final: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        rec = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)

        # The receiver stores the package and answers with its delivered receipt, but the
        # answer never reaches the sender.
        async def lost(row: object, value: object) -> None:
            raise TransportError("the connection was cut before the answer came")

        monkeypatch.setattr(s.outbox, "_accept_delivery", lost)
        assert await s.outbox.deliver_due() == 1
        monkeypatch.undo()
        assert (await s.outbox.get(dsl, rec.id)).state == "queued"
        assert s.peer.stored == {rec.id: 1}

        # The receiver's DSL opens it and decides; the final receipt is pushed first.
        s.peer.receipt(rec.id, "viewed")
        last = (
            s.peer.receipt(rec.id, "accepted", manifest_sha256=rec.manifest_sha256)
            if final == "accepted"
            else s.peer.receipt(rec.id, "rejected", reason="Not our pupil")
        )
        assert await s.outbox.take_receipt(last) is True
        got = await s.outbox.get(dsl, rec.id)
        assert got.state == final and [r.kind for r in got.receipts] == [final]

        # The receipt sweep fetches the ones it lacks, once.
        assert await s.outbox.pull_receipts() == 2
        got = await s.outbox.get(dsl, rec.id)
        assert got.state == final
        assert sorted(r.kind for r in got.receipts) == sorted(["delivered", "viewed", final])
        asked = len(s.peer.requests)
        assert await s.outbox.pull_receipts() == 0
        assert len(s.peer.requests) == asked  # nothing more to ask for


async def test_a_package_with_every_receipt_is_not_pulled_again(
    db_url: str, tmp_path: Path
) -> None:
    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        rec = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        assert await s.outbox.deliver_due() == 1
        await s.outbox.take_receipt(s.peer.receipt(rec.id, "viewed"))
        accepted = s.peer.receipt(rec.id, "accepted", manifest_sha256=rec.manifest_sha256)
        assert await s.outbox.take_receipt(accepted) is True
        asked = len(s.peer.requests)
        assert await s.outbox.pull_receipts() == 0
        assert len(s.peer.requests) == asked


async def test_viewed_first_then_the_delivered_one_is_pulled(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        rec = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)

        async def lost(row: object, value: object) -> None:
            raise TransportError("the connection was cut before the answer came")

        monkeypatch.setattr(s.outbox, "_accept_delivery", lost)
        await s.outbox.deliver_due()
        monkeypatch.undo()
        assert await s.outbox.take_receipt(s.peer.receipt(rec.id, "viewed")) is True
        assert (await s.outbox.get(dsl, rec.id)).state == "viewed"
        assert await s.outbox.pull_receipts() == 1
        kinds = [r.kind for r in (await s.outbox.get(dsl, rec.id)).receipts]
        assert sorted(kinds) == ["delivered", "viewed"]
