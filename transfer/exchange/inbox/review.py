"""The DSL's side of the inbox: list it, open a package (preview), reject one.

For the recipient organisation's DSL team (``Permission.RECEIVE_TRANSFER``):
:meth:`Review.list`, :meth:`Review.subjects` (who each open package is about, from its
manifest only), :meth:`Review.show` (verify the whole package and preview it, the
plaintext only in memory; the first view issues a **viewed** receipt) and
:meth:`Review.reject` (**rejected** receipt, with the reason; the ciphertext is deleted).
Accepting is :mod:`transfer.exchange.inbox.accepting`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from sqlalchemy import select, update

from schemas.manifest import Subject
from transfer.errors import ConflictError, HandoverError, InputError, IntegrityError, NotFoundError
from transfer.exchange.importing import PackageRecords
from transfer.exchange.inbox.core import InboxCore, moves, package_id_of, to_state
from transfer.exchange.inbox.models import (
    InboxPreview,
    IncomingSummary,
    PupilMatch,
    Via,
    is_referral,
    summary,
)
from transfer.exchange.inbox.reading import (
    PackageRead,
    Wanted,
    inspect_file,
    preview_documents,
    verify_collecting,
)
from transfer.exchange.inbox.receipts import Receipts, push_delivered_too, receipt_row
from transfer.exchange.tables import (
    ACCEPTED,
    DELIVERED,
    OPEN_STATES,
    RECEIVING,
    REFUSED,
    REJECTED,
    VIEWED,
    IncomingPackage,
)
from transfer.states.incoming import IncomingEvent
from transfer.store.base import AuditIntent
from transfer.store.permissions import Actor, Permission, PermissionDenied, require

log = logging.getLogger("handover.inbox")

_MAX_REASON = 500


class Review:
    """What the receiving organisation's DSL team does with its inbox, but accepting."""

    def __init__(self, core: InboxCore, receipts: Receipts) -> None:
        self.core = core
        self.receipts = receipts

    async def for_dsl(
        self, actor: Actor, package_id: str, action: str, via: Via
    ) -> IncomingPackage:
        """The package, if ``actor`` may see it: in their organisation's inbox, delivered."""
        targets = {"package": str(package_id)[:64]}
        try:
            require(actor, Permission.RECEIVE_TRANSFER)
        except PermissionDenied:
            await self.core.audit(action, actor, actor.org_id, targets, "refused", via=via)
            raise
        try:
            row = await self.core.row(package_id_of(package_id))
        except NotFoundError:
            raise NotFoundError("there is no such package in your inbox") from None
        if row.recipient_org_id != actor.org_id or row.state in (RECEIVING, REFUSED):
            raise NotFoundError("there is no such package in your inbox")
        return row

    async def list(
        self, actor: Actor, *, state: str | None = None, via: Via = "api"
    ) -> list[IncomingSummary]:
        """The organisation's delivered packages (newest first); ``state`` filters."""
        try:
            require(actor, Permission.RECEIVE_TRANSFER)
        except PermissionDenied:
            await self.core.audit(
                "transfer.inbox.list", actor, actor.org_id, {}, "refused", via=via
            )
            raise
        shown = (DELIVERED, VIEWED, ACCEPTED, REJECTED)
        if state is not None and state not in shown:
            raise InputError(f"state must be one of {', '.join(shown)}")
        async with self.core.sessions() as s:
            q = select(IncomingPackage).where(
                IncomingPackage.recipient_org_id == actor.org_id,
                IncomingPackage.state.in_([state] if state else list(shown)),
            )
            rows = (await s.scalars(q.order_by(IncomingPackage.delivered_at.desc()))).all()
        references = await self.receipts.references([r.id for r in rows if r.state == ACCEPTED])
        out = [summary(r, references.get(r.id)) for r in rows]
        await self.core.audit(
            "transfer.inbox.list", actor, actor.org_id, {}, count=len(out), via=via
        )
        return out

    async def subjects(
        self, actor: Actor, package_ids: Sequence[str], *, via: Via = "web"
    ) -> dict[str, Subject]:
        """Who each open package says it is about (its signed manifest's subject), for the
        inbox list: only the manifest is decrypted (in memory, in a worker thread), never
        the records. A package whose manifest no longer checks is left out (opening it in
        full says why). Audited with the number named, never the names."""
        try:
            require(actor, Permission.RECEIVE_TRANSFER)
        except PermissionDenied:
            await self.core.audit(
                "transfer.inbox.subjects", actor, actor.org_id, {}, "refused", via=via
            )
            raise
        wanted = [str(p)[:64] for p in package_ids]
        if not wanted:
            return {}
        async with self.core.sessions() as s:
            rows = (
                await s.scalars(
                    select(IncomingPackage).where(
                        IncomingPackage.id.in_(wanted),
                        IncomingPackage.recipient_org_id == actor.org_id,
                        IncomingPackage.state.in_(OPEN_STATES),
                    )
                )
            ).all()
        out: dict[str, Subject] = {}
        if not rows:
            return out
        keyset = await self.core.keyset(actor.org_id)
        sender_keys = await self.core.directory.sender_keys()
        for row in rows:
            try:
                verified = await asyncio.to_thread(
                    inspect_file, self.core.inbox_path(row.id), keyset, sender_keys
                )
            except (HandoverError, OSError) as err:
                log.info(
                    "the manifest of package %s could not be read for the inbox list: %s",
                    row.id,
                    getattr(err, "slug", type(err).__name__),
                )
                continue
            out[row.id] = verified.manifest.subject
        await self.core.audit(
            "transfer.inbox.subjects", actor, actor.org_id, {}, count=len(out), via=via
        )
        return out

    async def summary_of(self, package_id: str) -> IncomingSummary:
        row = await self.core.row(package_id)
        references = await self.receipts.references([row.id] if row.state == ACCEPTED else [])
        return summary(row, references.get(row.id))

    async def read_full(self, row: IncomingPackage, *, chronology: bool = False) -> PackageRead:
        """Verify the whole package (pass 1), keeping its records (within
        :attr:`record_limits`) and its documents' entries; the records are parsed in the
        worker thread too, never on the event loop."""
        keyset = await self.core.keyset(row.recipient_org_id)
        sender_keys = await self.core.directory.sender_keys()
        path = self.core.inbox_path(row.id)
        if not path.exists():
            raise IntegrityError(
                f"the package file of {row.id} is missing from the inbox; ask the sender to "
                "send it again"
            )
        # Is this file the package delivered? Verifying checks its signature and every
        # entry against the signed manifest, so the manifest delivered (its SHA-256 was
        # recorded at delivery, read from the bytes just checked against the offer's
        # SHA-256) means the contents delivered. Only a re-encryption of those same
        # contents would pass too, which needs the plaintext. The ciphertext, hashed once
        # already as it arrived, is hashed again only for a row without that record.
        by_manifest = bool(row.manifest_sha256)
        read = await asyncio.to_thread(
            functools.partial(
                verify_collecting,
                path,
                keyset,
                sender_keys,
                self.core.record_limits,
                Wanted(row.id, row.package_kind, chronology, row.sender_name),
                hash_ciphertext=not by_manifest,
            )
        )
        verified = read.verified
        if verified.ciphertext_size != row.size or (
            verified.manifest_sha256 != row.manifest_sha256
            if by_manifest
            else verified.ciphertext_sha256 != row.ciphertext_sha256
        ):
            raise IntegrityError(
                f"the package file of {row.id} is not the one delivered (its hash changed)"
            )
        return read

    async def show(self, actor: Actor, package_id: str, *, via: Via = "api") -> InboxPreview:
        """Verify the whole package and preview it; the first view sends a viewed receipt."""
        row = await self.for_dsl(actor, package_id, "transfer.viewed", via)
        targets = {"package": row.id}
        referral = is_referral(row.package_kind)
        # An accepted referral is kept for the agency's case work: it can be shown again.
        if row.state not in OPEN_STATES and not (referral and row.state == ACCEPTED):
            raise ConflictError(
                f"package {row.id} was {row.state}; its file is no longer kept"
                + (f" (see pupil {row.pupil_id})" if row.pupil_id else "")
            )
        try:
            read = await self.read_full(row, chronology=True)
        except HandoverError as err:
            await self.core.audit(
                "transfer.viewed", actor, actor.org_id, targets, "failed", reason=err.slug, via=via
            )
            raise
        records, form, chronology = read.records, read.form, read.chronology
        manifest = read.verified.manifest
        documents = preview_documents(read)
        match = None if referral else await self._match(actor, records, manifest.subject)
        intents: list[AuditIntent] = []
        if row.state == DELIVERED:
            signed = await self.receipts.sign(row, VIEWED, acted_by=actor)
            now = self.core.now()
            async with self.core.sessions() as s, s.begin():
                result = await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == row.id, *moves(IncomingEvent.VIEW))
                    .values(**to_state(IncomingEvent.VIEW), viewed_at=now)
                )
                if getattr(result, "rowcount", 0) == 1:
                    s.add(receipt_row(signed, True, now))
                    await push_delivered_too(s, row.id, now)
                    intents.append(
                        await self.core.intend(
                            s,
                            "receipt.issued",
                            actor,
                            actor.org_id,
                            {**targets, "receipt": str(signed.body.receipt_id)},
                            kind=VIEWED,
                            to=row.sender_org_id,
                            via=via,
                        )
                    )
                    intents.append(
                        await self.core.intend(
                            s,
                            "transfer.viewed",
                            actor,
                            actor.org_id,
                            targets,
                            sender=row.sender_org_id,
                            via=via,
                        )
                    )
            row = await self.core.row(row.id)
        if intents:
            await self.core.store.settle(*intents)
        else:
            await self.core.audit(
                "transfer.viewed", actor, actor.org_id, targets, sender=row.sender_org_id, via=via
            )
        return InboxPreview(
            package=await self.summary_of(row.id),
            subject=manifest.subject,
            manifest=manifest.model_dump(mode="json"),
            counts=records.counts(),
            pupil=records.pupil,
            chronology=chronology,
            documents=documents,
            match=match,
            referral=form,
            people=read.people,
            readable=read.readable,
        )

    async def _match(
        self, actor: Actor, records: PackageRecords, subject: Subject
    ) -> PupilMatch | None:
        from transfer.store.tables import Pupil

        upn = records.pupil.upn if records.pupil else subject.upn
        if not upn:
            return None
        async with self.core.sessions() as s:
            ours = await s.scalar(
                select(Pupil).where(Pupil.org_id == actor.org_id, Pupil.upn == upn.upper())
            )
        if ours is None:
            return None
        surname = records.pupil.surname if records.pupil else subject.surname
        forename = records.pupil.forename if records.pupil else subject.forename
        dob = records.pupil.dob if records.pupil else subject.dob

        def same(a: str, b: str) -> bool:
            return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()

        return PupilMatch(
            pupil_id=ours.id,
            matches=bool(
                ours.dob is not None
                and ours.dob == dob
                and same(ours.surname, surname)
                and same(ours.forename, forename)
            ),
            upn=ours.upn,
            surname=ours.surname,
            forename=ours.forename,
            dob=ours.dob.isoformat() if ours.dob else None,
        )

    async def reject(
        self, actor: Actor, package_id: str, reason: str, *, via: Via = "api"
    ) -> IncomingSummary:
        """Refuse the package with a reason; the rejected receipt is queued for the sender."""
        row = await self.for_dsl(actor, package_id, "transfer.rejected", via)
        reason = " ".join(reason.split())
        if not reason or len(reason) > _MAX_REASON:
            raise InputError(
                f"give a reason of 1 to {_MAX_REASON} characters (it goes to the sender)"
            )
        if row.state not in OPEN_STATES:
            raise ConflictError(f"package {row.id} was already {row.state}")
        signed = await self.receipts.sign(row, REJECTED, acted_by=actor, reason=reason)
        now = self.core.now()
        async with self.core.sessions() as s, s.begin():
            result = await s.execute(
                update(IncomingPackage)
                .where(IncomingPackage.id == row.id, *moves(IncomingEvent.REJECT))
                .values(**to_state(IncomingEvent.REJECT), decided_at=now, decided_by=actor.staff_id)
            )
            if getattr(result, "rowcount", 0) != 1:
                raise ConflictError(
                    f"package {row.id} was accepted or rejected by someone else meanwhile"
                )
            s.add(receipt_row(signed, True, now))
            await push_delivered_too(s, row.id, now)
            targets = {"package": row.id}
            intents = [
                await self.core.intend(
                    s,
                    "transfer.rejected",
                    actor,
                    actor.org_id,
                    targets,
                    sender=row.sender_org_id,
                    via=via,
                ),
                await self.core.intend(
                    s,
                    "receipt.issued",
                    actor,
                    actor.org_id,
                    {**targets, "receipt": str(signed.body.receipt_id)},
                    kind=REJECTED,
                    to=row.sender_org_id,
                    via=via,
                ),
            ]
        await self.core.store.settle(*intents)
        await asyncio.to_thread(self.core.inbox_path(row.id).unlink, True)
        return await self.summary_of(row.id)
