"""Receipts for the packages this node sent: verified, kept and moving the state on, whether
the receiver pushed them or they were pulled (:class:`OutboxReceipts`, part of
:class:`transfer.exchange.outbox.Outbox`)."""

from __future__ import annotations

import builtins
import hmac
import logging
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy import exc as sa_exc

from keys import minisign
from keys.keyset import parse_key_id
from schemas.receipt import ReceiptBody, ReceiptDecodeError
from transfer.errors import (
    AuthenticationError,
    ConflictError,
    HandoverError,
    InputError,
    IntegrityError,
    NotFoundError,
)
from transfer.exchange.outbox.core import OutboxCore
from transfer.exchange.outbox.records import (
    PackageRow,
    _label,
    _p,
    _rowcount,
)
from transfer.exchange.tables import (
    outgoing_receipts,
)
from transfer.receipts import (
    ReceiptContradictionError,
    ReceiptError,
    SignedReceipt,
    contradicts_final,
    verify_receipt,
)
from transfer.states.outgoing import OUTGOING, Outgoing
from transfer.states.outgoing import OutgoingEvent as On

if TYPE_CHECKING:
    pass
    from transfer.store.base import AuditIntent


log = logging.getLogger("handover.outbox")

#: The machine's event for each kind of receipt (a receipt only ever moves an item forward).
_RECEIPT_EVENTS: Final = {
    "delivered": On.RECEIPT_DELIVERED,
    "viewed": On.RECEIPT_VIEWED,
    "accepted": On.RECEIPT_ACCEPTED,
    "rejected": On.RECEIPT_REJECTED,
}


class _RacedError(Exception):
    """The row changed between reading and writing it; the transaction is rolled back."""


def _receipt_from_json(value: object) -> SignedReceipt:
    """A signed receipt given in a peer's JSON answer (an object, or its JSON text)."""
    try:
        if isinstance(value, dict):
            return SignedReceipt.from_dict(value)
        if isinstance(value, str):
            return SignedReceipt.from_json(value.encode("utf-8"))
    except InputError as exc:
        raise ReceiptError(f"the other node sent a malformed receipt: {exc.message}") from None
    raise ReceiptError("the other node's answer holds no receipt")


class OutboxReceipts(OutboxCore):
    """Take, verify and pull receipts."""

    # ------------------------------------------------------------------ receipts

    async def record_receipt(self, signed: SignedReceipt) -> None:
        """Verify a receipt for one of our packages and record it (see :meth:`take_receipt`)."""
        await self.take_receipt(signed)

    async def take_receipt(self, signed: SignedReceipt) -> bool:
        """Verify a receipt for one of our packages and record it; move the state on.

        Idempotent: a receipt already held changes nothing (returns False).
        Returns True when the receipt is new. A receipt that does not verify,
        or is not for a package this node sent to its issuer, is refused
        (:class:`~transfer.errors.IntegrityError` or :class:`NotFoundError`),
        audited as ``receipt.refused``, and changes nothing; so is a receipt that
        contradicts the package's final state (a rejected receipt for a package
        already accepted, or the other way round:
        :class:`~transfer.receipts.ReceiptContradictionError`).
        """
        body = signed.body
        package_id = str(body.package_id)
        row = await self._row(package_id)
        if row is None:
            await self.store.record_event(
                "receipt.refused",
                None,
                None,
                {"package": package_id, "receipt": str(body.receipt_id)},
                "refused",
                reason="unknown-package",
                issuer=body.receiver_org_id,
            )
            raise NotFoundError(f"this node sent no package {package_id}")
        try:
            await self._verify(row, signed)
        except HandoverError as exc:
            await self._audit(
                "receipt.refused",
                None,
                row,
                "refused",
                reason=exc.slug,
                receipt=str(body.receipt_id),
                receipt_kind=body.kind,
            )
            raise
        new_state = body.kind
        for _ in range(3):
            try:
                stored = await self._store_receipt(signed, row)
            except _RacedError:
                continue  # another process moved the state at the same moment: look again
            except sa_exc.IntegrityError:
                stored = None  # another process stored this receipt at the same moment
            except ReceiptContradictionError as exc:
                await self._audit(
                    "receipt.refused",
                    None,
                    row,
                    "refused",
                    reason=exc.slug,
                    receipt=str(body.receipt_id),
                    receipt_kind=body.kind,
                )
                raise
            break
        else:
            raise ConflictError(
                "the package kept changing while the receipt was being recorded; send it again"
            )
        if stored is None:
            return False
        moved, intents = stored
        await self.store.settle(*intents)
        if moved:
            await self._chronology(
                None,
                row.pupils,
                new_state,
                _receipt_summary(row, body),
                package_id,
                body.issued_at,
            )
        record = await self._record(await self._held(package_id))
        for listener in list(self.on_receipt):
            try:
                await listener(record, signed)
            except Exception:
                log.exception("a receipt listener failed for package %s", package_id)
        return True

    async def _store_receipt(
        self, signed: SignedReceipt, row: PackageRow
    ) -> tuple[bool, builtins.list[AuditIntent]] | None:
        """Keep the receipt, move the state on and promise their audit entries, in one
        transaction.

        None: the receipt was already held. Otherwise whether the state moved, and the
        audit entries to settle. A package that reaches a final state without holding
        every earlier receipt the receiver may have issued (the delivered one, whose
        answer was lost; the viewed one, pushed later) is due for one more pull.
        """
        body = signed.body
        package_id = str(row.id)
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            exists = (
                await s.execute(
                    select(outgoing_receipts.c.receipt_id).where(
                        outgoing_receipts.c.receipt_id == str(body.receipt_id)
                    )
                )
            ).first()
            if exists is not None:
                return None
            await s.execute(
                insert(outgoing_receipts).values(
                    receipt_id=str(body.receipt_id),
                    package_id=package_id,
                    kind=body.kind,
                    issued_at=body.issued_at,
                    received_at=now,
                    body=signed.body_bytes,
                    signature=signed.signature_text,
                )
            )
            current = (
                await s.execute(select(_p.c.state).where(_p.c.id == package_id))
            ).scalar_one()
            event = _RECEIPT_EVENTS[body.kind]
            if not OUTGOING.can(Outgoing(current), event) and contradicts_final(current, body.kind):
                # Raised inside the transaction: the receipt inserted above is rolled back.
                raise ReceiptContradictionError(
                    f"package {package_id} was already {current} by the receiver; a "
                    f"{body.kind} receipt for it contradicts that, so it was refused and not "
                    "kept (the attempt is in the audit log)"
                )
            moved = False
            step = (
                OUTGOING.step(Outgoing(current), event)
                if OUTGOING.can(Outgoing(current), event)
                else None  # a draft's receipt (it cannot have been sent): kept, no move
            )
            if step is not None and step.changes:
                values: dict[str, Any] = {
                    "state": step.target.value,
                    "state_changed_at": now,
                    "next_attempt_at": None,
                    "failure_reason": None,
                    # Out of the queue: no delivery attempt holds it any more.
                    "claimed_by": None,
                    "lease_until": None,
                }
                if OUTGOING.is_final(step.target):
                    held = await s.execute(
                        select(outgoing_receipts.c.kind).where(
                            outgoing_receipts.c.package_id == package_id
                        )
                    )
                    missing = not {"delivered", "viewed"} <= set(held.scalars())
                    values.update(next_pull_at=now if missing else None, pulls=0)
                done = await s.execute(
                    update(_p).where(_p.c.id == package_id, _p.c.state == current).values(**values)
                )
                if _rowcount(done) != 1:
                    raise _RacedError
                moved = True
            await s.execute(
                self._event(
                    package_id, f"receipt.{body.kind}", body.kind if moved else current, now
                )
            )
            verified = await self._intend(
                s,
                "receipt.verified",
                None,
                row,
                receipt=str(body.receipt_id),
                receipt_kind=body.kind,
                issued_at=body.issued_at.isoformat(),
            )
            intents = [verified]
            if moved:
                intents.append(
                    await self._intend(
                        s, f"transfer.{body.kind}", None, row, receipt=str(body.receipt_id)
                    )
                )
        return moved, intents

    async def _verify(self, row: PackageRow, signed: SignedReceipt) -> None:
        body = signed.body
        if row.state == "draft" or row.ciphertext_sha256 is None:
            raise ConflictError("the package this receipt names has not been queued yet")
        if body.sender_org_id != row.org_id or body.package_kind != row.kind:
            raise IntegrityError(
                "the receipt does not match the package sent (sender or kind differ)"
            )
        not_theirs = IntegrityError(
            f"the receipt is signed with key {body.receiver_key_id}, which is not a key of "
            f"{row.to_name} ({row.to_org_id}) in the directory"
        )
        try:
            entry, raw = await self.directory.signer(body.receiver_key_id, body.issued_at)
        except AuthenticationError:  # the directory's UnknownSignerError: no one's key
            raise not_theirs from None
        if entry.org_id != row.to_org_id:
            raise not_theirs
        public = minisign.PublicKey(key_id=parse_key_id(body.receiver_key_id), key=raw)
        verify_receipt(
            signed,
            public_key=public,
            package_id=UUID(row.id),
            ciphertext_sha256=row.ciphertext_sha256,
            receiver_org_id=row.to_org_id,
        )
        if body.ciphertext_size != row.ciphertext_size:
            raise IntegrityError("the receipt names a different package size from the one sent")
        if (
            body.kind == "accepted"
            and row.manifest_sha256 is not None
            and not hmac.compare_digest(str(body.manifest_sha256), row.manifest_sha256)
        ):
            raise IntegrityError(
                "the accepted receipt names a different manifest from the one sent"
            )

    def stored_receipt(self, body: bytes, signature: str) -> SignedReceipt:
        """A held receipt as a :class:`SignedReceipt` (its exact signed bytes)."""
        try:
            parsed = ReceiptBody.from_bytes(body)
        except ReceiptDecodeError as exc:
            raise IntegrityError(f"a stored receipt is damaged: {exc}") from None
        return SignedReceipt(body=parsed, body_bytes=body, signature_text=signature)

    async def pull_receipts(self, *, limit: int = 50) -> int:
        """Ask receivers for the receipts of packages that may still lack some.

        Packages delivered and not yet accepted or rejected, and those that reached
        accepted or rejected without holding every earlier receipt (``next_pull_at``
        set by :meth:`_store_receipt`; cleared by the first pull that is answered).
        A fall-back to receipts pushed by the receiver: each package is asked
        again after a growing pause. Returns how many new receipts were recorded.
        """
        now = self._now()
        async with self.store.sessions() as s:
            rows = (
                await s.execute(
                    select(_p)
                    .where(
                        or_(
                            and_(
                                _p.c.state.in_(("delivered", "viewed")),
                                or_(_p.c.next_pull_at.is_(None), _p.c.next_pull_at <= now),
                            ),
                            and_(
                                _p.c.state.in_(("accepted", "rejected")),
                                _p.c.next_pull_at <= now,
                            ),
                        )
                    )
                    .order_by(_p.c.next_pull_at, _p.c.id)
                    .limit(limit)
                )
            ).all()
        due = [PackageRow.of(r) for r in rows]
        base = max(self.config.transfer.sweep_seconds, self.config.transfer.retry_base_seconds)
        recorded = 0
        for row in due:
            pulls = row.pulls + 1
            async with self.store.sessions() as s, s.begin():
                await s.execute(
                    update(_p)
                    .where(_p.c.id == row.id)
                    .values(pulls=pulls, next_pull_at=self._delay(pulls, base))
                )
            try:
                answer = await self.client.request_json(
                    row.org_id, row.to_org_id, "GET", f"/peer/v1/packages/{row.id}/receipts"
                )
            except HandoverError as exc:
                log.info("package %s: cannot pull receipts yet (%s)", row.id, exc.message)
                continue
            items = answer.get("receipts")
            if not isinstance(items, list):
                log.warning("package %s: the receiver's receipt list is malformed", row.id)
                continue
            # Oldest first: a delivered receipt is recorded before the ones that follow it.
            for item in items[:100]:
                try:
                    if await self.take_receipt(_receipt_from_json(item)):
                        recorded += 1
                except HandoverError as exc:
                    log.warning("package %s: a pulled receipt was refused: %s", row.id, exc.message)
            if row.state in ("accepted", "rejected"):
                # The receiver answered after its final word: it has nothing more to give.
                async with self.store.sessions() as s, s.begin():
                    await s.execute(
                        update(_p)
                        .where(_p.c.id == row.id, _p.c.state.in_(("accepted", "rejected")))
                        .values(next_pull_at=None)
                    )
        return recorded


def _receipt_summary(row: PackageRow, body: ReceiptBody) -> str:
    label, to = _label(row.kind), row.to_name
    who = f" by {body.acted_by.name} ({body.acted_by.role})" if body.acted_by else ""
    if body.kind == "delivered":
        return f"{label} delivered to {to} (signed receipt verified)"
    if body.kind == "viewed":
        return f"{label} opened at {to}{who}"
    if body.kind == "accepted":
        return f"{label} accepted by {to}{who}"
    return f"{label} rejected by {to}{who}: {body.reason}"[:1000]
