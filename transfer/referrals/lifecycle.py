"""A referral's lifecycle after its draft, through the referral state machine
(:data:`transfer.states.referral.REFERRAL`): sealing and sending it, taking it back,
the receipts and acknowledgements that come back, the hand-over of an offline bundle
and the agency's outcome.

Lifecycle: ``draft`` → ``sent`` → ``delivered`` → ``accepted`` (with the
agency's reference) or ``rejected`` (with a reason) → ``closed`` (outcome
recorded). Each step is timed in ``referral_events``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from keys.keyset import KeySet
from receivers.agencies import ENGLAND, check_addressee
from schemas.manifest import Recipient, Sender
from schemas.referrals import ReferralRecord
from transfer.age import Recipient as AgeRecipient
from transfer.age import X25519Recipient, parse_recipient
from transfer.errors import ConflictError, HandoverError, InputError, NotFoundError
from transfer.package.build import BuiltPackage
from transfer.referrals.base import LABELS, Outcome, ReferralsBase, Route, cap, check_line
from transfer.referrals.consent import check_send
from transfer.referrals.deadlines import alert_key
from transfer.referrals.package import seal_referral
from transfer.states.referral import REFERRAL, ReferralState
from transfer.states.referral import ReferralEvent as On
from transfer.store.permissions import Actor, PermissionDenied
from transfer.wording import plural


@dataclass(frozen=True)
class SealedReferral:
    """A referral package just written: what was built and the referral, now ``sent``."""

    built: BuiltPackage
    referral: ReferralRecord
    #: The agency's directory entry at the time of sealing.
    agency_name: str
    agency_org_id: str


class NothingSelectedError(InputError):
    """A referral with no chronology entry chosen is sent only when the DSL confirms it."""

    http_status = 422
    slug = "nothing-selected"
    title = "No chronology entry is chosen"


def check_selection(record: ReferralRecord, *, form_only: bool) -> None:
    """Refuse to seal a referral carrying no chronology entry unless ``form_only`` says the
    DSL means to send the form alone; refuse ``form_only`` when entries were chosen."""
    if not record.selection and not form_only:
        raise NothingSelectedError(
            "no chronology entry is chosen for this referral, so the agency would get the "
            "form alone: choose the entries it needs, or confirm sending the form only",
            detail={"selected": 0},
        )
    if record.selection and form_only:
        raise InputError(
            f"{len(record.selection)} chronology "
            f"{'entry is' if len(record.selection) == 1 else 'entries are'} chosen: "
            "remove them to send the form only, or send without asking for the form only"
        )


class ReferralLifecycle(ReferralsBase):
    """Sending a referral and recording what happens to it after."""

    # --------------------------------------------------------------- sending

    async def seal(
        self,
        actor: Actor,
        referral_id: str,
        out: BinaryIO,
        *,
        route: Route,
        recipients: Sequence[AgeRecipient] | None = None,
        package_id: uuid.UUID | None = None,
        form_only: bool = False,
    ) -> SealedReferral:
        """Write the referral's package to ``out`` and mark the referral ``sent``.

        A referral with no chronology entry chosen goes only with ``form_only`` (the
        DSL confirmed sending the form alone: :class:`NothingSelectedError` otherwise).
        Checks the consent rule (only the DSL sends without consent), builds
        the package from the selection with its redactions, signs it with the
        school's key and encrypts it to ``recipients`` (default: the agency's
        registered ``age1…`` recipient). On any error the referral stays a
        draft and ``out`` holds an unfinished age stream: discard it.
        """
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.sent", targets)
        record = await self.get(actor, referral_id)
        targets["pupil"] = record.pupil_id
        if record.state != ReferralState.DRAFT.value:
            raise ConflictError(
                f"this referral was already sealed and is {record.state}; "
                "to send again, start a new referral"
            )
        try:
            check_selection(record, form_only=form_only)
        except HandoverError as exc:
            await self._audit(
                "referral.sent", actor, actor.org_id, targets, "refused", reason=exc.slug
            )
            raise
        try:
            decision = check_send(actor, record.form.consent)
        except PermissionDenied:
            await self._audit(
                "referral.sent", actor, actor.org_id, targets, "refused", reason="consent"
            )
            raise
        entry = await self.directory.entry(record.agency_org_id)
        rule = check_addressee(record.form, entry.kind, entry.name)
        keyset: KeySet = await asyncio.to_thread(self.keys.load, actor.org_id)
        if recipients is None:
            agency_key = parse_recipient(entry.recipient)
            if not isinstance(agency_key, X25519Recipient):
                raise InputError(f"the directory's key for {entry.name} is not an age1 recipient")
            recipients = [agency_key]
        content = await self._check_content(actor, record, record.selection, record.redactions)
        pid = package_id or uuid.uuid4()
        try:
            built = await seal_referral(
                out,
                content,
                kind=rule.package_kind,
                sender=Sender(
                    org_id=keyset.org_id,
                    key_fingerprint=keyset.fingerprint,
                    signing_key_id=keyset.key_id_hex,
                ),
                recipient=Recipient(org_id=entry.org_id, key_fingerprint=entry.fingerprint),
                signer=keyset.minisign_secret_key(),
                recipients=recipients,
                package_id=pid,
                created_at=self.store.now(),
            )
        except Exception as exc:
            slug = getattr(exc, "slug", type(exc).__name__)
            await self._audit(
                "referral.sent", actor, actor.org_id, targets, "failed", reason=str(slug)
            )
            raise
        ring = self._ring()
        async with self._writing() as s:
            row = await self._row(s, actor, referral_id, lock=True)
            if not REFERRAL.can(ReferralState(row.state), On.SEAL):
                raise ConflictError("this referral was sent by someone else meanwhile")
            row.state = REFERRAL.step(ReferralState(row.state), On.SEAL).target
            row.route = route
            row.package_id = str(pid)
            row.ciphertext_sha256 = built.ciphertext_sha256
            row.manifest_sha256 = built.manifest_sha256
            row.sent_without_consent = not decision.with_consent
            row.consent_reason = decision.reason
            at = await self._event(s, row, "sent", actor, f"route={route} package={pid}")
            sent = await self._record(s, ring, row)
        documents = sum(1 for e in content.chronology if e.kind == "document")
        await self._audit(
            "referral.sent",
            actor,
            actor.org_id,
            {**targets, "package": str(pid), "agency": entry.org_id},
            kind=record.kind,
            route=route,
            consent=decision.audit_value,
            consent_reason=decision.reason,
            entries=len(content.chronology),
            documents=documents,
            ciphertext_sha256=built.ciphertext_sha256,
        )
        drew_on = [
            f"{e.kind} of {e.occurred_at.astimezone(ENGLAND).date().isoformat()} ({e.id})"
            for e in content.chronology
        ]
        summary = (
            f"{cap(LABELS[record.kind])} sent to {entry.name} ({route})"
            + ("" if decision.with_consent else ", without parental consent")
            + (
                f"; it drew on {plural(len(drew_on), 'entry')}: " + "; ".join(drew_on)
                if drew_on
                else ""
            )
        )
        if len(summary) > 2000:
            summary = summary[:1980].rsplit(";", 1)[0] + "; and more"
        await self._chronicle(actor, row, "referral.sent", summary, at)
        if self.alerts is not None and record.due_on is not None:
            await self.alerts.resolve(actor.org_id, alert_key(referral_id))
        return SealedReferral(
            built=built, referral=sent, agency_name=entry.name, agency_org_id=entry.org_id
        )

    async def unsend(self, actor: Actor | None, referral_id: str, *, reason: str) -> None:
        """Put a referral whose package never left (the route failed to take it) back to draft."""
        async with self._writing() as s:
            row = await self._row(s, actor, referral_id, lock=True)
            if not REFERRAL.can(ReferralState(row.state), On.UNSEND):
                return
            row.state = REFERRAL.step(ReferralState(row.state), On.UNSEND).target
            row.route = None
            row.package_id = None
            row.ciphertext_sha256 = None
            row.manifest_sha256 = None
            await self._event(s, row, "unsent", actor, reason[:100])
            org_id = row.org_id
        await self._audit(
            "referral.unsent", actor, org_id, {"referral": referral_id}, reason=reason[:100]
        )

    async def withdraw(self, actor: Actor, referral_id: str, *, reason: str) -> ReferralRecord:
        """A DSL takes back a sealed referral that never reached the agency: back to draft.

        Only from ``sent`` (a delivered referral is the agency's now). The
        caller has checked that the route let go of the package (the bundle
        destroyed, the portal link withdrawn, the outbox's send cancelled).
        ``reason`` goes into the child's chronology only (sealed), not the audit.
        """
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.withdrawn", targets)
        reason = check_line(reason, "the reason for taking it back", 500)
        current = await self.get(actor, referral_id)
        if current.state != ReferralState.SENT.value:
            raise ConflictError(
                f"this referral is {current.state}; only a referral that was sent and has not "
                "reached the agency can be taken back"
            )
        route = current.route or "unknown"
        await self.unsend(actor, referral_id, reason=f"withdrawn from route {route}")
        record = await self.get(actor, referral_id)
        if record.state != ReferralState.DRAFT.value:
            raise ConflictError("this referral moved on meanwhile; it was not taken back")
        await self._audit(
            "referral.withdrawn",
            actor,
            actor.org_id,
            {**targets, "pupil": record.pupil_id},
            route=route,
        )
        agency = await self._agency_name(record.agency_org_id)
        await self._chronicle(
            actor,
            record,
            "referral.withdrawn",
            f"{cap(LABELS[record.kind])} to {agency} taken back before it reached them "
            f"({route}): {reason}",
            record.updated_at,
        )
        return record

    # ------------------------------------------------------------- lifecycle

    async def _move(
        self,
        actor: Actor | None,
        referral_id: str,
        event: On,
        *,
        note: str = "",
        sealed: dict[str, str] | None = None,
        reference: str | None = None,
        at: datetime | None = None,
        package_id: str | None = None,
    ) -> tuple[ReferralRecord, datetime, bool]:
        """Apply ``event`` through the referral machine; (record, when, changed).

        A repeated event, or news older than the referral's state (a delivery after the
        agency accepted it), changes nothing; an event that does not apply raises
        :class:`IllegalTransition`. Each effect of the step is written to the referral's
        history. With ``package_id``, the referral must be the one sealed into that package.
        """
        ring = self._ring()
        async with self._writing() as s:
            row = await self._row(s, actor, referral_id, lock=True)
            if package_id is not None and row.package_id != package_id:
                raise NotFoundError("no referral was sealed into this package")
            step = REFERRAL.step(ReferralState(row.state), event)
            if not step.changes:
                return await self._record(s, ring, row), row.updated_at, False
            row.state = step.target
            if reference is not None:
                row.agency_reference = reference
            if sealed:
                await self._seal(s, ring, row, sealed)
            when = row.updated_at
            for effect in step.effects:
                when = await self._event(s, row, effect.removeprefix("referral."), actor, note)
            if at is not None:
                when = at
            record = await self._record(s, ring, row)
        return record, when, True

    async def record_delivery(
        self,
        referral_id: str,
        *,
        at: datetime | None = None,
        via: str = "node",
        package_id: str | None = None,
    ) -> ReferralRecord:
        """The agency has the package (a delivered receipt, a portal view or download).

        Idempotent, and no change once the referral is further on (accepted,
        rejected, closed), so a late or repeated delivery is harmless. With
        ``package_id``, :class:`NotFoundError` unless the referral was sealed
        into that package (the portal passes the pickup's package).
        """
        record, when, changed = await self._move(
            None,
            referral_id,
            On.DELIVER,
            note=f"via={via}",
            at=at,
            package_id=package_id,
        )
        if changed:
            await self._audit(
                "referral.delivered",
                None,
                record.org_id,
                {"referral": referral_id, "pupil": record.pupil_id},
                via=via,
            )
            name = await self._agency_name(record.agency_org_id)
            await self._chronicle(
                None,
                record,
                "referral.delivered",
                f"{cap(LABELS[record.kind])} delivered to {name} ({via})",
                when,
            )
        return record

    async def record_acknowledgement(
        self,
        referral_id: str,
        *,
        name: str,
        agency_reference: str,
        at: datetime | None = None,
        via: str = "portal",
        actor: Actor | None = None,
    ) -> ReferralRecord:
        """The agency accepted the referral: who (``name``) and its reference number.

        Called by the pickup portal (the agency user's acknowledgement), by the
        node route (an ``accepted`` receipt), and through :meth:`acknowledge`
        when a DSL records an acknowledgement received by phone or e-mail.
        Moves a ``sent`` or ``delivered`` referral to ``accepted``; repeating
        it with the same reference changes nothing.
        """
        name = check_line(name, "the name of who acknowledged it", 200)
        reference = check_line(agency_reference, "the agency's reference", 100)
        record, when, changed = await self._move(
            actor,
            referral_id,
            On.ACCEPT,
            note=f"via={via}",
            sealed={"acknowledged_by": name},
            reference=reference,
            at=at,
        )
        if not changed:
            if record.agency_reference != reference:
                raise ConflictError(
                    "this referral was already accepted under another agency reference"
                )
            return record
        await self._audit(
            "referral.accepted",
            actor,
            record.org_id,
            {"referral": referral_id, "pupil": record.pupil_id},
            via=via,
        )
        agency = await self._agency_name(record.agency_org_id)
        await self._chronicle(
            actor,
            record,
            "referral.accepted",
            f"{cap(LABELS[record.kind])} accepted by {agency} ({name}), "
            f"their reference {reference}",
            when,
        )
        return record

    async def acknowledge(
        self,
        actor: Actor,
        referral_id: str,
        *,
        name: str,
        agency_reference: str,
        via: str = "offline",
    ) -> ReferralRecord:
        """A DSL records the agency's acknowledgement received outside Handover."""
        await self._require_team(actor, "referral.accepted", {"referral": referral_id})
        await self.get(actor, referral_id)
        return await self.record_acknowledgement(
            referral_id, name=name, agency_reference=agency_reference, via=via, actor=actor
        )

    async def record_rejection(
        self,
        referral_id: str,
        *,
        reason: str,
        at: datetime | None = None,
        via: str = "node",
        actor: Actor | None = None,
    ) -> ReferralRecord:
        """The agency declined the referral, with its reason (sealed)."""
        reason = reason.strip()
        if not reason or len(reason) > 10_000:
            raise InputError("a rejection needs a reason of 1 to 10000 characters")
        if actor is not None:
            await self._require_team(actor, "referral.rejected", {"referral": referral_id})
        record, when, changed = await self._move(
            actor,
            referral_id,
            On.REJECT,
            note=f"via={via}",
            sealed={"rejection_reason": reason},
            at=at,
        )
        if changed:
            await self._audit(
                "referral.rejected",
                actor,
                record.org_id,
                {"referral": referral_id, "pupil": record.pupil_id},
                via=via,
            )
            agency = await self._agency_name(record.agency_org_id)
            await self._chronicle(
                actor,
                record,
                "referral.rejected",
                f"{cap(LABELS[record.kind])} rejected by {agency}: {reason}",
                when,
            )
        return record

    async def record_handover(
        self,
        actor: Actor,
        referral_id: str,
        *,
        to_whom: str,
        how: str,
        at: datetime | None = None,
    ) -> ReferralRecord:
        """The DSL records handing an offline bundle over: to whom, how, when."""
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.handed_over", targets)
        to_whom = check_line(to_whom, "who it was handed to", 200)
        how = check_line(how, "how it was handed over", 200)
        when = (at or self.store.now()).astimezone(UTC)
        current = await self.get(actor, referral_id)
        if current.route != "offline":
            raise ConflictError(
                "only an offline bundle's hand-over is recorded by hand; this referral went "
                f"{'by ' + current.route if current.route else 'nowhere yet'}"
            )
        handover = json.dumps({"to": to_whom, "how": how, "at": when.isoformat()})
        record, _, changed = await self._move(
            actor,
            referral_id,
            On.HAND_OVER,
            note="via=offline",
            sealed={"handover": handover},
            at=when,
        )
        if not changed:
            raise ConflictError("this bundle's hand-over is already recorded")
        await self._audit(
            "referral.handed_over", actor, actor.org_id, {**targets, "pupil": record.pupil_id}
        )
        agency = await self._agency_name(record.agency_org_id)
        await self._chronicle(
            actor,
            record,
            "referral.handed_over",
            f"Offline bundle of the {LABELS[record.kind]} handed to {to_whom} of {agency} ({how})",
            when,
        )
        return record

    async def record_outcome(
        self, actor: Actor, referral_id: str, outcome: Outcome
    ) -> ReferralRecord:
        """The agency's outcome (MASH RAG and decision; LADO meeting and outcome; crime ref)."""
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.outcome", targets)
        current = await self.get(actor, referral_id)
        if outcome.kind != current.kind:
            raise InputError(
                f"this is a {current.kind} referral; the outcome given is for a {outcome.kind} one"
            )
        record, when, _ = await self._move(
            actor,
            referral_id,
            On.OUTCOME,
            note=_outcome_note(outcome),
            sealed={"outcome": outcome.model_dump_json()},
        )
        await self._audit(
            "referral.outcome",
            actor,
            actor.org_id,
            {**targets, "pupil": record.pupil_id},
            kind=record.kind,
        )
        await self._chronicle(
            actor,
            record,
            "referral.outcome",
            f"Outcome of the {LABELS[record.kind]}: {_outcome_text(outcome)}",
            when,
        )
        return record


def _outcome_note(outcome: Outcome) -> str:
    if outcome.kind == "social_care":
        return f"rag={outcome.rag} decision={outcome.decision}"
    if outcome.kind == "lado":
        return f"outcome={outcome.outcome} dbs={outcome.dbs_referral}"
    return "crime_reference"


def _outcome_text(outcome: Outcome) -> str:
    if outcome.kind == "social_care":
        return f"MASH rating {outcome.rag.upper()}, decision {outcome.decision.replace('_', ' ')}"
    if outcome.kind == "lado":
        meeting = (
            f"strategy meeting {outcome.strategy_meeting_at.date().isoformat()}, "
            if outcome.strategy_meeting_at
            else ""
        )
        dbs = ", referred to the DBS" if outcome.dbs_referral else ""
        return f"{meeting}allegation {outcome.outcome}{dbs}"
    return f"crime reference {outcome.crime_reference}"
