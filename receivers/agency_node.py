"""Route 1: the agency runs a Handover node.

The referral is sealed straight into the outbox's directory and queued with
:meth:`transfer.exchange.outbox.Outbox.queue_file`: the same signed,
resumable delivery and signed receipts as school to school. The route listens
to the outbox's verified receipts (``Outbox.on_receipt``) and moves the
referral on:

- ``delivered`` → the referral is ``delivered``;
- ``accepted`` → ``accepted``, with the agency's reference (the receipt's
  ``reference``) and the name of the person who accepted it;
- ``rejected`` → ``rejected``, with the receipt's reason;
- ``viewed`` is kept by the outbox only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from pathlib import Path

from schemas.referrals import ReferralRecord
from transfer.errors import HandoverError, InputError, TransportError
from transfer.exchange.outbox import Outbox, OutgoingRecord
from transfer.receipts import SignedReceipt
from transfer.referrals.service import Referrals
from transfer.store.permissions import Actor

__all__ = ["AgencyNodeRoute"]

log = logging.getLogger("receivers.agency_node")

#: Used as the agency reference when an accepted receipt carries none.
NO_REFERENCE = "none given"


def _create(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


class AgencyNodeRoute:
    """Sends referrals to agencies with a node, and follows their receipts."""

    def __init__(self, referrals: Referrals, outbox: Outbox) -> None:
        self.referrals = referrals
        self.outbox = outbox

    def attach(self) -> None:
        """Follow the outbox's receipts (call once, when the node starts)."""
        if self.on_receipt not in self.outbox.on_receipt:
            self.outbox.on_receipt.append(self.on_receipt)

    async def send(
        self, actor: Actor, referral_id: str, *, form_only: bool = False
    ) -> ReferralRecord:
        """Seal the referral into the outbox and queue it for delivery to the agency's node.

        ``form_only``: the DSL confirmed sending a referral with no chronology entry.
        """
        record = await self.referrals.get(actor, referral_id)
        entry = await self.referrals.directory.entry(record.agency_org_id)
        if getattr(entry, "endpoint", None) is None:
            raise InputError(
                f"{entry.name} has no Handover node: send the referral through the pickup "
                "portal or as an offline bundle"
            )
        tmp = self.outbox.outgoing_dir / f".referral-{uuid.uuid4().hex}.part"
        try:
            fd = await asyncio.to_thread(_create, tmp)
        except OSError as exc:
            raise TransportError(f"cannot write in {tmp.parent}: {exc.strerror}") from None
        sealed = None
        try:
            with os.fdopen(fd, "wb") as out:
                sealed = await self.referrals.seal(
                    actor, referral_id, out, route="node", form_only=form_only
                )
                out.flush()
                os.fsync(out.fileno())
            await self.outbox.queue_file(
                actor,
                package_path=tmp,
                built=sealed.built,
                to_org_id=sealed.agency_org_id,
                pupil_ids=[record.pupil_id],
                kind=sealed.built.manifest.kind,
                via="referral",
            )
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if sealed is not None:
                reason = exc.slug if isinstance(exc, HandoverError) else type(exc).__name__
                await self.referrals.unsend(actor, referral_id, reason=f"not queued: {reason}")
            raise
        return sealed.referral

    async def on_receipt(self, record: OutgoingRecord, receipt: SignedReceipt) -> None:
        """Move the referral sealed into the receipt's package on (others are ignored)."""
        body = receipt.body
        found = await self.referrals.find_by_package(str(body.package_id))
        if found is None:
            return
        at = body.issued_at
        try:
            if body.kind == "delivered":
                await self.referrals.record_delivery(found.id, at=at, via="node")
            elif body.kind == "accepted":
                name = body.acted_by.name if body.acted_by is not None else body.receiver_org_id
                await self.referrals.record_acknowledgement(
                    found.id,
                    name=name,
                    agency_reference=body.reference or NO_REFERENCE,
                    at=at,
                    via="node",
                )
            elif body.kind == "rejected":
                await self.referrals.record_rejection(
                    found.id, reason=body.reason or "no reason given", at=at, via="node"
                )
        except HandoverError as err:
            log.error(
                "the %s receipt for referral %s could not move it on: %s",
                body.kind,
                found.id,
                err.diagnostics(),
            )
