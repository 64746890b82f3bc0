"""Witnessing: keep the audit-log checkpoints that counterparts' receipts carry.

Every receipt a receiving node issues carries its latest signed audit-log
checkpoint (``ReceiptBody.checkpoint``, covered by the receipt's signature).
When the sending node records a receipt, :class:`Witness` checks that
checkpoint with the receiver's audit-log verifier key from the directory
(``DirectoryEntry.audit_key``) and keeps it (``AuditLog.store_witnessed``).
A node that later rewrites or rolls back its own log then contradicts a
checkpoint its counterpart holds (see ``docs/audit-log.md``, "Witnessing").

The receipt itself has already been verified and recorded when this runs: a
checkpoint that cannot be kept never undoes it. Each outcome other than
"nothing new" is written to our audit log as ``audit.witness``: ``ok`` when the
checkpoint was kept, ``refused`` with a reason when it was not:

- ``no-audit-key``: the directory publishes no audit-log key for the issuer;
- ``bad-checkpoint``: it is malformed, not signed by that key, or for another log;
- ``origin-clash``: the issuer's log has our own log's name (a misconfigured node);
- ``conflict``: it contradicts a checkpoint of that log we already hold (a fork
  or a rollback). It is kept as evidence, logged as an error and, when alerts
  are wired, raised as an alert to the sending organisation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, cast

from transfer.audit.checkpoint import NoteError, Verifier
from transfer.audit.witnesses import WitnessConflict

if TYPE_CHECKING:
    from transfer.alerts import AlertLevel
    from transfer.audit.log import AuditLog
    from transfer.receipts import SignedReceipt

__all__ = ["AuditKeys", "Witness", "WitnessOutcome", "WitnessStatus", "witness_receipt"]

log = logging.getLogger("handover.witness")

WitnessStatus = Literal[
    "none",  # the receipt carries no checkpoint
    "not-kept",  # no audit-log key for the issuer in the directory
    "own-log",  # a checkpoint of this very node's log (both organisations on one node)
    "refused",  # it does not verify (or names our own log with another key)
    "conflict",  # it contradicts one we hold: kept as evidence
    "first",
    "same",
    "consistent",
    "unproven",
    "older",
]
#: Statuses for which the checkpoint is now held in ``audit_witnessed``.
KEPT: frozenset[str] = frozenset({"first", "same", "consistent", "unproven", "older", "conflict"})


#: ``Directory.audit_vkey_for``: an organisation's node's audit-log vkey, or None.
AuditKeys = Callable[[str], Awaitable[str | None]]


class AuditRecorder(Protocol):
    """``transfer.store.service.Store.record_event``."""

    async def record_event(
        self,
        action: str,
        actor: str | None,
        org: str | None,
        targets: dict[str, str] | None = None,
        outcome: Literal["ok", "refused", "failed"] = "ok",
        **detail: str | int | bool | None,
    ) -> None: ...


class AlertSink(Protocol):
    """``transfer.alerts.Alerts``, as far as witnessing needs it."""

    async def notify(
        self,
        org_id: str,
        *,
        key: str,
        level: AlertLevel,
        subject: str,
        message: str,
        pupil_id: str | None = None,
        ref: str | None = None,
    ) -> bool: ...


@dataclass(frozen=True)
class WitnessOutcome:
    """What became of one carried checkpoint."""

    status: WitnessStatus
    #: Why it was not kept (an audit reason), or None.
    reason: str | None = None
    origin: str | None = None
    size: int | None = None

    @property
    def kept(self) -> bool:
        return self.status in KEPT


class Witness:
    """Checks and keeps the checkpoints counterparts send, with an audited outcome."""

    def __init__(
        self,
        *,
        audit_log: AuditLog,
        vkey_for: AuditKeys,
        store: AuditRecorder,
        alerts: AlertSink | None = None,
    ) -> None:
        self.audit_log = audit_log
        self.vkey_for = vkey_for
        self.store = store
        self.alerts = alerts

    async def receipt(self, signed: SignedReceipt) -> WitnessOutcome:
        """Keep the checkpoint a verified receipt carries (the sender side calls this)."""
        body = signed.body
        return await self.checkpoint(
            body.receiver_org_id,
            body.checkpoint,
            our_org=body.sender_org_id,
            targets={"package": str(body.package_id), "receipt": str(body.receipt_id)},
        )

    async def on_receipt(self, record: object, signed: SignedReceipt) -> None:
        """An ``Outbox.on_receipt`` listener: :meth:`receipt`, for every new receipt."""
        await self.receipt(signed)

    async def checkpoint(
        self,
        from_org: str,
        note: str | None,
        *,
        since: int | None = None,
        proof: Sequence[bytes] = (),
        our_org: str | None = None,
        targets: dict[str, str] | None = None,
    ) -> WitnessOutcome:
        """Check ``note`` (a checkpoint of ``from_org``'s node's log) and keep it if it verifies.

        ``since``/``proof``: a consistency proof from a size we hold, when the sender
        gave one (``PeerCheckpoint``). Never raises for a checkpoint that cannot be
        kept: the outcome says why, and it is audited.
        """
        if note is None:
            return WitnessOutcome("none")
        where = dict(targets or {})
        where["peer"] = from_org

        async def refused(reason: str, **detail: str | int | None) -> WitnessOutcome:
            await self.store.record_event(
                "audit.witness",
                None,
                our_org,
                where,
                "refused",
                reason=reason,
                issuer=from_org,
                **detail,
            )
            log.warning("checkpoint from %s not kept: %s", from_org, reason)
            return WitnessOutcome("not-kept" if reason == "no-audit-key" else "refused", reason)

        vkey = await self.vkey_for(from_org)
        if vkey is None:
            return await refused("no-audit-key")
        try:
            theirs = Verifier.from_vkey(vkey)
        except NoteError as exc:
            return await refused("bad-audit-key", problem=exc.message[:200])
        ours = await self.audit_log.verifier()
        if theirs.name == ours.name:
            if theirs.public_key == ours.public_key:
                return WitnessOutcome("own-log", origin=ours.name)
            return await refused("origin-clash", origin=theirs.name)
        try:
            result = await self.audit_log.store_witnessed(
                note, vkey, from_org=from_org, since=since, proof=proof
            )
        except WitnessConflict as exc:
            return await self._conflict(from_org, our_org, where, theirs.name, exc)
        except NoteError as exc:
            return await refused("bad-checkpoint", origin=theirs.name, problem=exc.message[:200])
        status = cast(WitnessStatus, result.status)
        if status != "same":
            await self.store.record_event(
                "audit.witness",
                None,
                our_org,
                where,
                "ok",
                issuer=from_org,
                origin=result.origin,
                size=result.size,
                status=status,
                held_before=result.previous_size,
            )
        return WitnessOutcome(status, origin=result.origin, size=result.size)

    async def _conflict(
        self,
        from_org: str,
        our_org: str | None,
        where: dict[str, str],
        origin: str,
        exc: WitnessConflict,
    ) -> WitnessOutcome:
        await self.store.record_event(
            "audit.witness",
            None,
            our_org,
            where,
            "refused",
            reason="conflict",
            issuer=from_org,
            origin=origin,
            problem=exc.message[:300],
        )
        log.error("the audit log of %s contradicts itself: %s", from_org, exc.message)
        if self.alerts is not None and our_org is not None:
            await self.alerts.notify(
                our_org,
                key=f"audit-witness-conflict:{from_org}"[:200],
                level="info",
                subject=f"The audit log of {from_org} contradicts a checkpoint we hold",
                message=(
                    f"{exc.message}. Their node's log was rewritten or rolled back after it "
                    "signed the checkpoint we hold. Both checkpoints are kept as evidence; "
                    "tell their operator and your own, and keep the receipts."
                ),
            )
        return WitnessOutcome("conflict", "conflict", origin=origin)


async def witness_receipt(
    signed: SignedReceipt,
    *,
    audit_log: AuditLog,
    vkey_for: AuditKeys,
    store: AuditRecorder,
    alerts: AlertSink | None = None,
) -> WitnessOutcome:
    """Keep the checkpoint a verified receipt carries: :meth:`Witness.receipt`."""
    witness = Witness(audit_log=audit_log, vkey_for=vkey_for, store=store, alerts=alerts)
    return await witness.receipt(signed)
