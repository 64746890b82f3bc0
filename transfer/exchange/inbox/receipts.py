"""The signed receipts this node issues for the packages it receives.

Each receipt (delivered, viewed, accepted, rejected) is signed with the receiving
organisation's key and carries the audit log's latest checkpoint. The delivered receipt
goes back in the answer to ``complete``; the others are stored with ``push_state``
pending, for :mod:`transfer.exchange.receipt_push` to push to the sender's node, and
every receipt of a package is served to its sender on request.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.receipt import ReceiptActor, ReceiptBody, ReceiptKind
from transfer.exchange.inbox.core import InboxCore, own, package_id_of
from transfer.exchange.inbox.models import PeerCaller
from transfer.exchange.tables import (
    ACCEPTED,
    DELIVERED,
    PUSH_NONE,
    PUSH_PENDING,
    IncomingPackage,
    IssuedReceipt,
)
from transfer.receipts import SignedReceipt, sign_receipt
from transfer.store import people
from transfer.store.base import AuditIntent
from transfer.store.permissions import Actor


def _role_of(actor: Actor) -> str:
    return people.main_role(r.value for r in actor.roles) or "staff"


def receipt_row(signed: SignedReceipt, push: bool, now: datetime) -> IssuedReceipt:
    """The stored row of a signed receipt; ``push``: queued to push to the sender now."""
    return IssuedReceipt(
        id=str(signed.body.receipt_id),
        package_id=str(signed.body.package_id),
        kind=signed.body.kind,
        data=signed.to_json(),
        issued_at=signed.body.issued_at,
        push_state=PUSH_PENDING if push else PUSH_NONE,
        attempts=0,
        next_attempt_at=now if push else None,
    )


async def push_delivered_too(session: AsyncSession, package_id: str, now: datetime) -> None:
    """A later receipt is pushed: push the delivered one with it, in case the answer
    to ``complete`` that carried it never reached the sender (it keeps it once)."""
    await session.execute(
        update(IssuedReceipt)
        .where(
            IssuedReceipt.package_id == package_id,
            IssuedReceipt.kind == DELIVERED,
            IssuedReceipt.push_state == PUSH_NONE,
        )
        .values(push_state=PUSH_PENDING, next_attempt_at=now)
    )


class Receipts:
    """Issues, stores and finds the receipts of the packages received."""

    def __init__(self, core: InboxCore) -> None:
        self.core = core

    async def _checkpoint_text(self) -> str | None:
        if self.core.audit_log is None:
            return None
        return (await self.core.audit_log.checkpoint()).note

    async def sign(
        self,
        row: IncomingPackage,
        kind: ReceiptKind,
        *,
        acted_by: Actor | None = None,
        reason: str | None = None,
        manifest_sha256: str | None = None,
        reference: str | None = None,
    ) -> SignedReceipt:
        keyset = await self.core.keyset(row.recipient_org_id)
        body = ReceiptBody(
            receipt_id=uuid.uuid4(),
            kind=kind,
            package_id=uuid.UUID(row.id),
            package_kind=row.package_kind,
            sender_org_id=row.sender_org_id,
            receiver_org_id=row.recipient_org_id,
            receiver_key_id=keyset.key_id_hex,
            ciphertext_sha256=row.ciphertext_sha256,
            ciphertext_size=row.size,
            manifest_sha256=manifest_sha256,
            acted_by=(
                None
                if acted_by is None
                else ReceiptActor(
                    name=acted_by.display_name or acted_by.staff_id, role=_role_of(acted_by)
                )
            ),
            reason=reason,
            reference=reference,
            issued_at=self.core.now(),
            checkpoint=await self._checkpoint_text(),
        )
        return sign_receipt(body, keyset)

    async def delivered(self, row: IncomingPackage) -> SignedReceipt:
        """The one delivered receipt of a package (issued the first time it is asked for)."""
        async with self.core.sessions() as s:
            data = await s.scalar(
                select(IssuedReceipt.data).where(
                    IssuedReceipt.package_id == row.id, IssuedReceipt.kind == DELIVERED
                )
            )
        if data is not None:
            return SignedReceipt.from_json(bytes(data))
        # Only a package delivered by an earlier version lacks it (it was issued on demand).
        signed = await self.sign(row, DELIVERED)
        intent: AuditIntent | None = None
        try:
            async with self.core.sessions() as s, s.begin():
                existing = await s.scalar(
                    select(IssuedReceipt.id).where(
                        IssuedReceipt.package_id == row.id, IssuedReceipt.kind == DELIVERED
                    )
                )
                if existing is None:
                    s.add(receipt_row(signed, False, self.core.now()))
                    intent = await self.core.intend(
                        s,
                        "receipt.issued",
                        None,
                        row.recipient_org_id,
                        {"package": row.id, "receipt": str(signed.body.receipt_id)},
                        kind=DELIVERED,
                        to=row.sender_org_id,
                    )
        except sa_exc.IntegrityError:
            existing = "raced"
        if existing is not None or intent is None:
            return await self.delivered(row)
        await self.core.store.settle(intent)
        return signed

    async def for_sender(self, caller: PeerCaller, package_id: str) -> list[SignedReceipt]:
        """Every receipt issued for the package, oldest first (only to its sender)."""
        row = await self.core.row(package_id_of(package_id))
        own(row, caller)
        async with self.core.sessions() as s:
            rows = (
                await s.scalars(
                    select(IssuedReceipt.data)
                    .where(IssuedReceipt.package_id == row.id)
                    .order_by(IssuedReceipt.issued_at, IssuedReceipt.id)
                )
            ).all()
        return [SignedReceipt.from_json(bytes(d)) for d in rows]

    async def references(self, package_ids: Sequence[str]) -> dict[str, str]:
        """The reference given on accepting each package (read from its accepted receipt)."""
        out: dict[str, str] = {}
        if not package_ids:
            return out
        async with self.core.sessions() as s:
            rows = (
                await s.execute(
                    select(IssuedReceipt.package_id, IssuedReceipt.data).where(
                        IssuedReceipt.package_id.in_(list(package_ids)),
                        IssuedReceipt.kind == ACCEPTED,
                    )
                )
            ).all()
        for package_id, data in rows:
            reference = SignedReceipt.from_json(bytes(data)).body.reference
            if reference is not None:
                out[package_id] = reference
        return out
