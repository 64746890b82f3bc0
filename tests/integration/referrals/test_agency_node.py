"""Route 1: a referral queued in the real outbox, delivered over a real socket to a peer node
(the outbox tests' protocol peer on 127.0.0.1), its signed receipts moving the referral on."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

from receivers.agency_node import AgencyNodeRoute
from schemas.receipt import ReceiptActor, ReceiptBody
from tests.integration.exchange.outbox_support import RECEIVER, sending
from tests.support.referrals import mash_form
from transfer.age import X25519Identity, decrypt_stream
from transfer.directory.document import entry_from_keyset
from transfer.receipts import sign_receipt
from transfer.referrals.forms import parse_form
from transfer.referrals.service import Referrals


async def test_referral_to_an_agency_node_end_to_end(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'handover.db'}"
    async with sending(db_url, tmp_path) as s:
        agency = s.peer.keyset
        s.directory.by_id[RECEIVER] = entry_from_keyset(
            agency, name="Bristol MASH", kind="social_care", endpoint=s.peer.url
        )
        referrals = Referrals(s.store, s.keys, s.directory)
        route = AgencyNodeRoute(referrals, s.outbox)
        route.attach()
        route.attach()  # once only
        assert s.outbox.on_receipt.count(route.on_receipt) == 1
        dsl = s.school.dsl
        draft = await referrals.draft(
            dsl, pupil_id=s.pupil_id, agency_org_id=RECEIVER, form=parse_form(mash_form())
        )
        s.school.clock.advance(minutes=1)
        sent = await route.send(dsl, draft.id, form_only=True)
        assert sent.state == "sent" and sent.route == "node"
        package_id = sent.package_id
        assert package_id is not None
        assert not list(s.outbox.outgoing_dir.glob(".referral-*"))  # the outbox took it over
        queued = await s.outbox.get(dsl, package_id)
        assert queued.state == "queued" and queued.kind == "referral_social_care"

        # Delivered over the socket; the delivered receipt moves the referral on.
        s.school.clock.advance(minutes=1)
        assert await s.outbox.deliver_due() == 1
        assert (await referrals.get(dsl, draft.id)).state == "delivered"
        held = bytes(s.peer.uploads[package_id].data)
        out = io.BytesIO()
        decrypt_stream(
            io.BytesIO(held), out, [X25519Identity.from_private_bytes(agency.encryption.secret)]
        )
        assert b"Amara disclosed being hit at home." in out.getvalue()
        assert b"Said she was scared to go home." not in out.getvalue()  # not selected

        # The agency's DSL accepts it with their reference: pulled over the socket.
        up = s.peer.uploads[package_id]
        body = ReceiptBody(
            receipt_id=uuid.uuid4(),
            kind="accepted",
            package_id=uuid.UUID(package_id),
            package_kind="referral_social_care",
            sender_org_id=up.sender,
            receiver_org_id=agency.org_id,
            receiver_key_id=agency.key_id_hex,
            ciphertext_sha256=up.sha256,
            ciphertext_size=up.size,
            manifest_sha256=queued.manifest_sha256,
            acted_by=ReceiptActor(name="Mo Triage", role="dsl"),
            reference="MASH-2026-0091",
            issued_at=datetime.now(UTC),
        )
        up.receipts.append(sign_receipt(body, agency))
        s.school.clock.advance(minutes=1)
        assert await s.outbox.pull_receipts() == 1
        accepted = await referrals.get(dsl, draft.id)
        assert accepted.state == "accepted"
        assert accepted.agency_reference == "MASH-2026-0091"
        assert accepted.acknowledged_by == "Mo Triage"
        assert [e.action for e in accepted.events] == ["drafted", "sent", "delivered", "accepted"]
        kinds = [
            e.record.kind  # type: ignore[union-attr]
            for e in await s.store.chronology(dsl, s.pupil_id)
            if e.kind == "event" and e.record.kind.startswith("referral.")  # type: ignore[union-attr]
        ]
        assert kinds == [
            "referral.drafted",
            "referral.sent",
            "referral.delivered",
            "referral.accepted",
        ]


async def test_an_agency_without_a_node_is_refused_and_the_draft_kept(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'handover.db'}"
    async with sending(db_url, tmp_path) as s:
        s.directory.by_id[RECEIVER] = entry_from_keyset(
            s.peer.keyset, name="Bristol MASH", kind="social_care", endpoint=None
        )
        referrals = Referrals(s.store, s.keys, s.directory)
        route = AgencyNodeRoute(referrals, s.outbox)
        dsl = s.school.dsl
        draft = await referrals.draft(
            dsl, pupil_id=s.pupil_id, agency_org_id=RECEIVER, form=parse_form(mash_form())
        )
        try:
            await route.send(dsl, draft.id)
        except Exception as exc:
            assert "has no Handover node" in str(exc)
        else:
            raise AssertionError("sent to an agency without a node")
        assert (await referrals.get(dsl, draft.id)).state == "draft"
