"""The receiving DSL's inbox: preview, accept with import and provenance, mismatch, reject,
permissions, and the receipt-push sweep with back-off."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.records import ConcernRecord, DocumentRef, NewPupil, TriageRecord
from tests.integration.exchange.inbox_support import (
    DOCUMENT,
    RECEIVER,
    SENDER,
    Rig,
    receiving_node,
    upn,
)
from transfer.errors import ConflictError, IntegrityError, NotFoundError, TransportError
from transfer.exchange.importing import PupilMismatchError
from transfer.exchange.inbox.review import Review
from transfer.exchange.receipt_push import ReceiptPusher
from transfer.exchange.tables import IncomingPackage, IssuedReceipt
from transfer.receipts import SignedReceipt, verify_receipt
from transfer.store.permissions import PermissionDenied


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        yield r


def _verified(rig: Rig, data: bytes) -> SignedReceipt:
    return verify_receipt(
        data, public_key=rig.receiver_keys.minisign_public_key, receiver_org_id=RECEIVER
    )


async def _receipts(rig: Rig, pid: str) -> list[tuple[str, str, SignedReceipt]]:
    from sqlalchemy import select

    async with rig.store.sessions() as s:
        rows = (
            await s.scalars(
                select(IssuedReceipt)
                .where(IssuedReceipt.package_id == pid)
                .order_by(IssuedReceipt.issued_at)
            )
        ).all()
    return [(r.kind, r.push_state, _verified(rig, bytes(r.data))) for r in rows]


async def test_preview_then_accept_imports_everything_with_provenance(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    pid, data, _ = await rig.deliver(pupil)
    dsl = rig.receiver_dsl

    preview = await rig.inbox.show(dsl, pid)
    assert preview.subject.upn == upn(1) and preview.subject.surname == "Okafor"
    assert preview.counts["concerns"] == 1 and preview.counts["documents"] == 1
    assert preview.match is None  # no pupil with this UPN here yet
    kinds = sorted(e.kind for e in preview.chronology)
    assert kinds == ["action", "concern", "contact", "document", "triage"]
    concern = next(e.record for e in preview.chronology if e.kind == "concern")
    assert isinstance(concern, ConcernRecord) and concern.account.startswith("Said she")
    assert [(d.filename, d.size) for d in preview.documents] == [("Body map.pdf", len(DOCUMENT))]
    assert preview.package.state == "viewed"
    # Viewing twice sends one viewed receipt.
    await rig.inbox.show(dsl, pid)
    receipts = await _receipts(rig, pid)
    # The delivered receipt is pushed with the first later one (in case the answer to
    # "complete" that carried it never reached the sender).
    assert [(k, p) for k, p, _ in receipts] == [("delivered", "pending"), ("viewed", "pending")]
    assert receipts[1][2].body.acted_by is not None
    assert receipts[1][2].body.acted_by.name == "Rita Dee"

    outcome = await rig.inbox.accept(dsl, pid)
    assert outcome.new_pupil and outcome.matched_by == "new"
    assert outcome.package.state == "accepted" and outcome.package.pupil_id == outcome.pupil_id
    ours = await rig.store.get_pupil(dsl, outcome.pupil_id)
    assert (ours.org_id, ours.upn, ours.dob) == (RECEIVER, upn(1), date(2014, 11, 3))
    chronology = await rig.store.chronology(dsl, outcome.pupil_id)
    imported = [e for e in chronology if e.kind != "event"]
    assert sorted(e.kind for e in imported) == kinds
    for entry in imported:
        prov = entry.record.provenance  # type: ignore[union-attr]
        assert prov is not None, entry.kind
        assert (prov.source_org_id, prov.package_id) == (SENDER, pid)
        assert prov.source_org_name == "Harbourside Primary"
    new_concern = next(e.record for e in imported if e.kind == "concern")
    assert isinstance(new_concern, ConcernRecord)
    assert new_concern.pupil_ids == (outcome.pupil_id,) and new_concern.account == concern.account
    assert new_concern.provenance is not None
    assert new_concern.provenance.original_id == concern.id
    assert len(new_concern.body_map) == 1 and new_concern.body_map[0].description == "bruise"
    triage = next(e.record for e in imported if e.kind == "triage")
    assert isinstance(triage, TriageRecord) and triage.concern_id == new_concern.id
    doc = next(e.record for e in imported if e.kind == "document")
    assert isinstance(doc, DocumentRef) and doc.filename == "Body map.pdf"
    _, chunks = await rig.store.read_document(dsl, doc.id)
    assert b"".join([c async for c in chunks]) == DOCUMENT
    # Stored encrypted: the document's plaintext is nowhere on disk, nor is the package.
    for f in rig.data_dir.rglob("*"):
        if f.is_file():
            assert DOCUMENT[:4096] not in f.read_bytes(), f
    assert not (rig.data_dir / "inbox" / f"{pid}.age").exists()

    receipts = await _receipts(rig, pid)
    assert [(k, p) for k, p, _ in receipts][-1] == ("accepted", "pending")
    accepted = receipts[-1][2].body
    assert accepted.manifest_sha256 == preview.package.manifest_sha256
    assert accepted.ciphertext_sha256 == hashlib.sha256(data).hexdigest()
    assert accepted.acted_by is not None and accepted.acted_by.role == "dsl"
    assert [e.outcome for e in rig.events("transfer.accepted")] == ["ok"]
    assert rig.events("transfer.viewed") and rig.events("receipt.issued")
    for e in rig.audit.events:  # no safeguarding text in the audit trail
        assert "scared" not in repr(e) and "bruise" not in repr(e)
    # Accepting twice is a conflict, and so is a preview of a file no longer kept.
    with pytest.raises(ConflictError):
        await rig.inbox.accept(dsl, pid)
    with pytest.raises(ConflictError):
        await rig.inbox.show(dsl, pid)


async def test_a_mismatch_is_refused_showing_both_until_the_dsl_chooses(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    dsl = rig.receiver_dsl
    # Our pupil with the same UPN but another date of birth.
    admin = dsl  # the DSL team may manage pupils
    ours = await rig.store.create_pupil(
        admin,
        NewPupil(upn=upn(1), surname="Okafor", forename="Amara", dob=date(2014, 12, 3), sex="F"),
    )
    preview = await rig.inbox.show(dsl, pid)
    assert preview.match is not None and not preview.match.matches
    with pytest.raises(PupilMismatchError) as caught:
        await rig.inbox.accept(dsl, pid)
    err = caught.value
    assert "2014-11-03" in err.message and "2014-12-03" in err.message
    detail: Mapping[str, Any] = err.detail
    assert detail["our_pupil"]["id"] == ours.id
    assert await rig.store.list_concerns(dsl, pupil_id=ours.id) == []
    assert rig.events("transfer.accepted", "refused")
    assert (rig.data_dir / "inbox" / f"{pid}.age").exists()
    assert not list((rig.data_dir / "documents" / RECEIVER).glob("*/*"))

    outcome = await rig.inbox.accept(dsl, pid, pupil_id=ours.id)
    assert outcome.pupil_id == ours.id and not outcome.new_pupil
    assert outcome.matched_by == "chosen"
    assert len(await rig.store.list_concerns(dsl, pupil_id=ours.id)) == 1


async def test_create_new_after_a_mismatch_makes_a_second_pupil(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    dsl = rig.receiver_dsl
    await rig.store.create_pupil(
        dsl, NewPupil(upn=upn(1), surname="Other", forename="Name", dob=date(2014, 11, 3), sex="M")
    )
    outcome = await rig.inbox.accept(dsl, pid, create_new=True)
    created = await rig.store.get_pupil(dsl, outcome.pupil_id)
    assert outcome.new_pupil and created.upn is None and created.surname == "Okafor"


async def test_a_matching_pupil_receives_the_file(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    dsl = rig.receiver_dsl
    ours = await rig.store.create_pupil(
        dsl,
        NewPupil(upn=upn(1), surname="OKAFOR", forename="amara", dob=date(2014, 11, 3), sex="F"),
    )
    outcome = await rig.inbox.accept(dsl, pid)
    assert (outcome.pupil_id, outcome.matched_by, outcome.new_pupil) == (ours.id, "upn", False)


async def test_reject_with_a_reason_and_permissions(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    with pytest.raises(PermissionDenied):
        await rig.inbox.show(rig.receiver_staff, pid)
    with pytest.raises(PermissionDenied):
        await rig.inbox.list(rig.receiver_staff)
    assert rig.events("transfer.viewed", "refused")
    # The sending school's DSL cannot see the receiver's inbox.
    with pytest.raises(NotFoundError):
        await rig.inbox.show(rig.school.dsl, pid)
    assert await rig.inbox.list(rig.school.dsl) == []
    with pytest.raises(NotFoundError):
        await rig.inbox.accept(rig.receiver_dsl, str(uuid.uuid4()))

    summary = await rig.inbox.reject(rig.receiver_dsl, pid, "  Not our pupil:   wrong school ")
    assert summary.state == "rejected" and summary.decided_by == rig.receiver_dsl.staff_id
    kinds = await _receipts(rig, pid)
    assert kinds[-1][0] == "rejected" and kinds[-1][2].body.reason == "Not our pupil: wrong school"
    assert not (rig.data_dir / "inbox" / f"{pid}.age").exists()
    with pytest.raises(ConflictError):
        await rig.inbox.accept(rig.receiver_dsl, pid)
    with pytest.raises(ConflictError):
        await rig.inbox.reject(rig.receiver_dsl, pid, "again")
    # The sender pulls every receipt over the protocol.
    status, body, _ = await rig.call("GET", f"/peer/v1/packages/{pid}/receipts")
    assert status == 200
    assert [r["receipt"]["kind"] for r in body["receipts"]] == ["delivered", "rejected"]
    # Only the sender may pull them.
    status, _, _ = await rig.call(
        "GET", f"/peer/v1/packages/{pid}/receipts", keyset=rig.receiver_keys
    )
    assert status == 404


class FlakyPeer:
    """A sender's node that is down for the first ``down`` pushes."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls: list[tuple[str, str, str, str, Mapping[str, Any] | None]] = []

    async def request_json(
        self,
        from_org: str,
        to_org: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.calls.append((from_org, to_org, method, path, body))
        if len(self.calls) <= self.down:
            raise TransportError("the sender's node is not answering")
        return {"recorded": True}


async def test_receipt_push_retries_with_back_off_then_delivers(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    await rig.inbox.reject(rig.receiver_dsl, pid, "Not our pupil")
    peer = FlakyPeer(down=2)
    clock = {"now": rig.store.now()}
    pusher = ReceiptPusher(
        store=rig.store, client=peer, config=rig.services.config, clock=lambda: clock["now"]
    )
    # The rejected receipt, and the delivered one with it (the first later receipt carries
    # it too, in case the answer to "complete" was lost).
    assert await pusher.push_due() == 0
    assert len(peer.calls) == 2
    kinds = []
    for from_org, to_org, method, path, body in peer.calls:
        assert (from_org, to_org, method, path) == (RECEIVER, SENDER, "POST", "/peer/v1/receipts")
        assert body is not None
        kinds.append(body["receipt"]["receipt"]["kind"])
        _verified(rig, SignedReceipt.from_dict(body["receipt"]).to_json())
    assert sorted(kinds) == ["delivered", "rejected"]
    # Not due again at once (back-off), due within the cap.
    assert await pusher.push_due() == 0 and len(peer.calls) == 2
    clock["now"] += timedelta(seconds=rig.services.config.transfer.retry_base_seconds + 1)
    assert await pusher.push_due() == 2
    assert await pusher.push_due() == 0 and len(peer.calls) == 4
    states = [(k, p) for k, p, _ in await _receipts(rig, pid)]
    assert states == [("delivered", "pushed"), ("rejected", "pushed")]
    pushed = rig.events("receipt.pushed")
    assert [e.outcome for e in pushed] == ["failed", "failed", "ok", "ok"]


async def test_a_package_file_swapped_between_the_two_passes_is_not_imported(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepting reads the package twice (verify, then import). If the file is replaced
    by another package (here: a later one from the same school for the same pupil) after
    the first pass, the import stops: the receipt would name a manifest that is not the
    one imported."""
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    later, _, _ = await rig.deliver(pupil)
    core = rig.inbox  # the facade is the inbox's core: its paths
    original = Review.read_full

    async def then_swap(self: Review, row: Any, **kw: Any) -> Any:
        read = await original(self, row, **kw)
        if row.id == pid:
            core.inbox_path(pid).write_bytes(core.inbox_path(later).read_bytes())
        return read

    monkeypatch.setattr(Review, "read_full", then_swap)
    with pytest.raises(IntegrityError) as info:
        await rig.inbox.accept(rig.receiver_dsl, pid)
    assert "changed while it was imported" in str(info.value)
    async with rig.store.sessions() as s:
        row = await s.get(IncomingPackage, pid)
    assert row is not None and (row.state, row.pupil_id) == ("delivered", None)
    assert [k for k, _, _ in await _receipts(rig, pid)] == ["delivered"]
    assert "ok" not in [e.outcome for e in rig.events("transfer.accepted")]
    # Read again, the file is found not to be the package delivered.
    with pytest.raises(IntegrityError) as info:
        await rig.inbox.show(rig.receiver_dsl, pid)
    assert "is not the one delivered" in str(info.value)


async def test_a_package_recorded_without_its_manifest_hash_is_checked_by_its_ciphertext(
    rig: Rig,
) -> None:
    """A row with no manifest SHA-256 (none was recorded at delivery) is checked against
    the ciphertext's SHA-256 instead: the file is hashed again as it is read."""
    from sqlalchemy import update

    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    later, _, _ = await rig.deliver(pupil)
    async with rig.store.sessions() as s, s.begin():
        await s.execute(
            update(IncomingPackage)
            .where(IncomingPackage.id.in_([pid, later]))
            .values(manifest_sha256=None)
        )
    assert (await rig.inbox.show(rig.receiver_dsl, pid)).package.state == "viewed"
    rig.inbox.inbox_path(pid).write_bytes(rig.inbox.inbox_path(later).read_bytes())
    with pytest.raises(IntegrityError) as info:
        await rig.inbox.show(rig.receiver_dsl, pid)
    assert "is not the one delivered" in str(info.value)
    assert (await rig.inbox.show(rig.receiver_dsl, later)).package.state == "viewed"


async def test_a_stored_file_of_another_size_than_delivered_is_refused(rig: Rig) -> None:
    """The size received is checked as well as the manifest when the file is read again."""
    from sqlalchemy import update

    pupil = await rig.make_pupil_file()
    pid, data, _ = await rig.deliver(pupil)
    async with rig.store.sessions() as s, s.begin():
        await s.execute(
            update(IncomingPackage).where(IncomingPackage.id == pid).values(size=len(data) + 1)
        )
    with pytest.raises(IntegrityError) as info:
        await rig.inbox.show(rig.receiver_dsl, pid)
    assert "is not the one delivered" in str(info.value)
