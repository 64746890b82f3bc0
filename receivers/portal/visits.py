"""The agency's visit: the link's sign-in, the session, the referral page and the
acknowledgement of receipt."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import (
    Any,
)

from sqlalchemy import select, update

from receivers.portal import tokens
from receivers.portal.contracts import (
    clean_text,
)
from receivers.portal.core import LOCKED_TEXT, PortalCore, in_states
from receivers.portal.errors import (
    LinkLocked,
    PortalSessionEnded,
    WrongPortalCode,
)
from receivers.portal.reading import (
    list_documents,
    read_records,
    record_title,
)
from receivers.portal.records import (
    LinkInfo,
    PortalVisit,
    RecordView,
    ReferralView,
)
from receivers.portal.tables import PortalAgencyUser, PortalPickup, PortalSession
from schemas import jsontext
from transfer.age import X25519Identity
from transfer.auth import codes
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
)
from transfer.states.pickup import PICKUP
from transfer.states.pickup import PickupEvent as On

log = logging.getLogger("receivers.portal")


class Visits(PortalCore):
    """The agency's side: signing in with the link, reading the referral, acknowledging it."""

    async def link_info(self, token: str) -> LinkInfo:
        """What the sign-in page shows for ``token``; raises for an unusable link."""
        async with self.store.sessions() as s:
            row = await self._by_token(s, token)
            self._check_usable(row)
            user = await s.get(PortalAgencyUser, row.email)
        org = await self.store.get_organisation(row.org_id)
        return LinkInfo(
            pickup_id=row.id,
            sender_name=org.name,
            agency_name=row.agency_name,
            expires_at=row.expires_at,
            totp_available=user is not None and user.totp_sealed is not None,
        )

    async def sign_in(
        self,
        token: str,
        *,
        passcode: str | None = None,
        totp: str | None = None,
        ip: str | None = None,
    ) -> str:
        """Check the link and a passcode (or an authenticator code); the session secret.

        An attempt is counted *before* the code is checked, so parallel guesses
        cannot exceed the limit; a right code clears the count.
        """
        if (passcode is None) == (totp is None):
            raise InputError("enter the passcode or a code from your authenticator app")
        async with self.store.sessions() as s, s.begin():
            row = await self._by_token(s, token, lock=True)
            self._check_usable(row)
            # An atomic increment: on SQLite the SELECT above takes no lock, so a
            # read-modify-write would lose parallel attempts and let them pass the limit.
            await s.execute(
                update(PortalPickup)
                .where(PortalPickup.id == row.id)
                .values(failed_count=PortalPickup.failed_count + 1)
                .execution_options(synchronize_session=False)
            )
            attempt = int(
                await s.scalar(select(PortalPickup.failed_count).where(PortalPickup.id == row.id))
                or 0
            )
            user = await s.get(PortalAgencyUser, row.email)
        if attempt > self.settings.max_attempts:
            await self._lock(row, ip)
            raise LinkLocked(LOCKED_TEXT)
        if passcode is not None:
            ok = await asyncio.to_thread(tokens.verify_passcode, row.passcode_hash, passcode)
            via = "passcode"
        else:
            ok = await self._check_totp(user, totp or "")
            via = "totp"
        if not ok:
            left = self.settings.max_attempts - attempt
            async with self.store.sessions() as s, s.begin():
                self._event(s, row.id, "passcode_failed", ip=ip, who=row.email, what=via)
            await self._audit("portal.passcode_failed", None, row, "refused", ip=ip, via=via)
            if left <= 0:
                await self._lock(row, ip)
                raise LinkLocked(LOCKED_TEXT)
            what = "passcode" if via == "passcode" else "code from your authenticator app"
            raise WrongPortalCode(
                f"that {what} is not right; {left} more {'try' if left == 1 else 'tries'} "
                "before the link locks"
            )
        identity = tokens.unseal_identity(
            self._kek,
            token,
            purpose="pickup",
            record_id=row.id,
            sealed=row.identity_sealed or b"",
        )
        secret = tokens.new_session_secret()
        session_id = str(uuid.uuid4())
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalPickup).where(PortalPickup.id == row.id).values(failed_count=0)
            )
            s.add(
                PortalSession(
                    id=session_id,
                    secret_hash=tokens.session_secret_hash(secret),
                    pickup_id=row.id,
                    via=via,
                    ip=ip and ip[:64],
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + timedelta(hours=self.settings.session_max_hours),
                    opened=False,
                    identity_sealed=tokens.seal_identity(
                        self._kek,
                        secret,
                        purpose="session",
                        record_id=session_id,
                        data=identity,
                    ),
                )
            )
        return secret

    async def _lock(self, row: PortalPickup, ip: str | None) -> None:
        """Lock the link (once: in the states the machine locks from); the caller refuses."""
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            result = await s.execute(
                update(PortalPickup)
                .where(PortalPickup.id == row.id, in_states(PICKUP.sources(On.LOCK), now))
                .values(locked_at=now)
                .execution_options(synchronize_session=False)
            )
            newly = bool(getattr(result, "rowcount", 0))
            if newly:
                await self._end_sessions(s, row.id, now)
                self._event(s, row.id, "locked", ip=ip, who=row.email)
        if newly:
            await self._audit("portal.locked", None, row, "refused", ip=ip)

    async def visit(self, secret: str) -> PortalVisit:
        """The signed-in session whose cookie is ``secret``, checked and kept alive."""
        if not 20 <= len(secret) <= 100 or not secret.isascii():
            raise PortalSessionEnded("your session has ended; open the link from your e-mail")
        wanted = tokens.session_secret_hash(secret)
        now = self.now()
        idle = timedelta(minutes=self.settings.session_idle_minutes)
        async with self.store.sessions() as s, s.begin():
            row = (
                await s.scalars(select(PortalSession).where(PortalSession.secret_hash == wanted))
            ).first()
            if (
                row is None
                or not codes.same(row.secret_hash, wanted)
                or row.ended_at is not None
                or row.identity_sealed is None
                or row.expires_at <= now
                or row.last_seen_at + idle <= now
            ):
                raise PortalSessionEnded(
                    "your session has ended; open the link from your e-mail again"
                )
            pickup = await s.get(PortalPickup, row.pickup_id)
            assert pickup is not None
            self._check_usable(pickup)
            row.last_seen_at = now
            identity = tokens.unseal_identity(
                self._kek,
                secret,
                purpose="session",
                record_id=row.id,
                sealed=row.identity_sealed,
            )
            return PortalVisit(
                session_id=row.id,
                pickup_id=pickup.id,
                org_id=pickup.org_id,
                email=pickup.email,
                referral_id=pickup.referral_id,
                opened=row.opened,
                identity=identity,
            )

    async def sign_out(self, visit: PortalVisit) -> None:
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalSession)
                .where(PortalSession.id == visit.session_id)
                .values(ended_at=self.now(), identity_sealed=None)
            )

    async def referral(self, visit: PortalVisit, *, ip: str | None = None) -> ReferralView:
        """The verified referral: its form, records and list of documents."""
        row = await self._pickup(visit.pickup_id)
        keyset = self._keyset(row.org_id)
        identity = X25519Identity.from_private_bytes(visit.identity)
        manifest, raw = await self._read(row, read_records, identity, keyset)
        parsed: dict[str, Any] = {}
        views: list[RecordView] = []
        for entry in manifest.entries:
            if entry.path not in raw:
                continue
            data = raw[entry.path]
            title = record_title(entry.path)
            if data is None:
                views.append(RecordView(entry.path, title, None, "too large to show here"))
                continue
            try:
                value = jsontext.loads(data)
            except ValueError:
                views.append(RecordView(entry.path, title, None, "not a readable record"))
                continue
            parsed[entry.path] = value
            views.append(RecordView(entry.path, title, value))
        form = next((v for v in views if v.path == "records/referral.json"), None)
        others = tuple(v for v in views if v is not form)
        if not visit.opened:
            await self._opened(visit, row, ip)
        org = await self.store.get_organisation(row.org_id)
        async with self.store.sessions() as s:
            user = await s.get(PortalAgencyUser, row.email)
        subject = manifest.subject
        return ReferralView(
            pickup_id=row.id,
            package_id=str(manifest.package_id),
            kind=manifest.kind,
            sender_org_id=manifest.sender.org_id,
            sender_name=org.name,
            subject=f"{subject.forename} {subject.surname}",
            created_at=manifest.created_at,
            form=form,
            records=others,
            documents=list_documents(manifest, parsed),
            acknowledged_at=row.acknowledged_at,
            acknowledged_by=row.ack_name,
            agency_reference=row.ack_reference,
            expires_at=row.expires_at,
            totp_enrolled=user is not None and user.totp_sealed is not None,
            email=row.email,
            closes_at=self._closes_at(row),
            agency_name=row.agency_name,
        )

    async def printed(self, visit: PortalVisit, *, ip: str | None = None) -> None:
        """Record that the referral was taken away as a PDF (a view, like the page's): in the
        receipt trail and the audit log, never its content."""
        row = await self._pickup(visit.pickup_id)
        async with self.store.sessions() as s, s.begin():
            self._event(s, row.id, "printed", ip=ip, who=row.email, what="referral as PDF")
        await self._audit("portal.printed", None, row, ip=ip)

    async def _opened(self, visit: PortalVisit, row: PortalPickup, ip: str | None) -> None:
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalSession)
                .where(PortalSession.id == visit.session_id)
                .values(opened=True)
            )
            first = await s.execute(
                update(PortalPickup)
                .where(
                    PortalPickup.id == row.id,
                    PortalPickup.first_opened_at.is_(None),
                    in_states(PICKUP.sources(On.OPEN), now),
                )
                .values(first_opened_at=now)
                .execution_options(synchronize_session=False)
            )
            self._event(s, row.id, "opened", ip=ip, who=row.email)
        visit.opened = True
        await self._audit("portal.opened", None, row, ip=ip)
        if getattr(first, "rowcount", 0):
            await self._forward_delivery(row, now)

    async def acknowledge(
        self, visit: PortalVisit, *, name: str, agency_reference: str, ip: str | None = None
    ) -> None:
        """Record the agency's receipt (name and reference) and pass it to the referral.

        The link closes once ``settings.ack_grace_minutes`` have passed (at once when it
        is 0: the package is deleted and the sessions end here). The acknowledgement is
        one conditional update, so it cannot interleave with a document's release.
        """
        who = clean_text(name, "your name", 200)
        reference = clean_text(agency_reference, "the agency's reference", 100)
        now = self.now()
        close_now = self.settings.ack_grace_minutes == 0
        async with self.store.sessions() as s, s.begin():
            values: dict[str, Any] = {
                "acknowledged_at": now,
                "ack_name": who,
                "ack_reference": reference,
                "ack_ip": ip and ip[:64],
            }
            if close_now:
                values.update(identity_sealed=None, swept_at=now)
            result = await s.execute(
                update(PortalPickup)
                .where(
                    PortalPickup.id == visit.pickup_id,
                    in_states(PICKUP.sources(On.ACKNOWLEDGE), now),
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            row = await s.get(PortalPickup, visit.pickup_id, populate_existing=True)
            assert row is not None
            if not getattr(result, "rowcount", 0):
                if row.acknowledged_at is not None:
                    raise ConflictError(
                        f"receipt was already acknowledged by {row.ack_name} on "
                        f"{row.acknowledged_at:%d %B %Y at %H:%M} UTC"
                    )
                raise self._unusable(row) or ConflictError("this link can no longer be used")
            self._event(s, row.id, "acknowledged", ip=ip, who=who, what=reference)
            if close_now:
                await self._end_sessions(s, row.id, now)
                self._event(s, row.id, "closed")
        if close_now:
            self._delete_file(row.id)
        await self._audit("portal.acknowledged", None, row, ip=ip)
        if close_now:
            await self._audit("portal.closed", None, row)
        if self.acknowledgements is not None and await self._forward_delivery(row, now):
            try:
                await self.acknowledgements.record_acknowledgement(
                    row.referral_id, name=who, agency_reference=reference, at=now, via="portal"
                )
            except HandoverError as err:
                log.error(
                    "the acknowledgement of pickup %s was kept, but the referral %s could "
                    "not be updated: %s",
                    row.id,
                    row.referral_id,
                    err.diagnostics(),
                )
                await self._audit("portal.acknowledgement_forwarded", None, row, "failed")
