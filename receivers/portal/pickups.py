"""The DSL's side of the portal: a pickup made, listed, withdrawn, swept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import select, update

from receivers.portal import tokens
from receivers.portal.contracts import (
    OPEN_PATH,
    clean_text,
    normalise_email,
)
from receivers.portal.core import PortalCore, in_states, state_of
from receivers.portal.reading import (
    reencrypt,
)
from receivers.portal.records import (
    IssuedPickup,
    PickupInfo,
)
from receivers.portal.tables import PortalPickup
from transfer.age import X25519Identity
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
    TransportError,
)
from transfer.states.pickup import PICKUP
from transfer.states.pickup import PickupEvent as On
from transfer.store.permissions import Actor
from transfer.wording import plural

log = logging.getLogger("receivers.portal")


class Pickups(PortalCore):
    """The sending school's side: offering a referral through a link, and withdrawing it."""

    async def authorise(self, actor: Actor, referral_id: str = "") -> None:
        """Refuse (and audit) an actor who may not send referrals, before any upload."""
        await self._require(actor, "portal.created", {"referral": referral_id[:64]})

    async def create_pickup(
        self,
        actor: Actor,
        *,
        package: Path,
        referral_id: str,
        email: str,
        agency_name: str | None = None,
        expires_in_days: int | None = None,
    ) -> IssuedPickup:
        """Offer the referral package at ``package`` (encrypted to the actor's organisation's
        own key, signed by it) to ``email`` through a one-time link.

        The caller keeps ``package``; the portal keeps its own copy, re-encrypted to a fresh
        identity for this pickup. The passcode (and the link, if not e-mailed) is returned
        once and never stored.
        """
        await self.authorise(actor, referral_id)
        referral_id = clean_text(referral_id, "the referral id", 64)
        address = normalise_email(email)
        name = clean_text(agency_name, "the agency's name", 200) if agency_name else None
        days = self.settings.link_days if expires_in_days is None else expires_in_days
        if not 1 <= days <= self.settings.max_link_days:
            raise InputError(
                f"a link may last from 1 to {plural(self.settings.max_link_days, 'day')}, "
                f"not {days}"
            )
        keyset = self._keyset(actor.org_id)
        pickup_id = str(uuid.uuid4())
        identity = X25519Identity.generate()
        target = self._file(pickup_id)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"cannot write in {self.directory}: {exc.strerror}") from None
        try:
            manifest, size, sha = await asyncio.to_thread(
                reencrypt, package, target, keyset, identity
            )
            if manifest.sender.org_id != actor.org_id:
                raise InputError(
                    f"this package was made by {manifest.sender.org_id}, not by your organisation"
                )
            if not manifest.kind.startswith("referral_"):
                raise InputError(
                    f"only a referral package can go through the portal (this one is a "
                    f"{manifest.kind})"
                )
            token = tokens.new_link_token()
            passcode = tokens.new_passcode()
            passcode_hash = await asyncio.to_thread(
                tokens.hash_passcode, passcode, self.settings.passcode_cost
            )
            sealed = tokens.seal_identity(
                self._kek,
                token,
                purpose="pickup",
                record_id=pickup_id,
                data=identity.private_bytes(),
            )
            now = self.now()
            row = PortalPickup(
                id=pickup_id,
                org_id=actor.org_id,
                referral_id=referral_id,
                email=address,
                agency_name=name,
                package_id=str(manifest.package_id),
                package_kind=manifest.kind,
                stored_sha256=sha,
                stored_size=size,
                token_hash=tokens.link_token_hash(token),
                identity_sealed=sealed,
                passcode_hash=passcode_hash,
                emailed=False,
                created_by=actor.staff_id,
                created_at=now,
                expires_at=now + timedelta(days=days),
                failed_count=0,
            )
            async with self.store.sessions() as s, s.begin():
                s.add(row)
                await s.flush()
                self._event(
                    s,
                    pickup_id,
                    "created",
                    who=actor.staff_id,
                    what=f"package {manifest.package_id}",
                )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            raise
        link = f"{self.base_url}{OPEN_PATH}?{urlencode({'t': token})}"
        emailed, problem = await self._send_link(row, link, days)
        await self._audit(
            "portal.created",
            actor,
            row,
            emailed=emailed,
            package=str(manifest.package_id),
            days=days,
        )
        async with self.store.sessions() as s:
            fresh = await s.get(PortalPickup, pickup_id)
            assert fresh is not None
            info = await self._info(s, fresh, events=True)
        return IssuedPickup(
            pickup=info,
            passcode=passcode,
            link=None if emailed else link,
            emailed=emailed,
            mail_problem=problem,
        )

    async def _send_link(self, row: PortalPickup, link: str, days: int) -> tuple[bool, str | None]:
        if self.mailer is None or not self.mailer.enabled:
            return False, None
        org = await self.store.get_organisation(row.org_id)
        body = (
            f"{org.name} has sent {row.agency_name or 'your agency'} a referral through "
            "Handover.\n\n"
            f"Open it here (the link works for {plural(days, 'day')}):\n\n{link}\n\n"
            "You will also need a passcode. The school will give it to you by telephone; "
            "it is never sent by e-mail.\n\n"
            "If you were not expecting this, do not open the link: tell the school.\n"
        )
        try:
            await self.mailer.send([row.email], f"Referral from {org.name}", body)
        except HandoverError as err:
            log.warning("could not e-mail the pickup link for %s: %s", row.id, err.diagnostics())
            return False, err.diagnostics()
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(PortalPickup).where(PortalPickup.id == row.id).values(emailed=True)
            )
            self._event(s, row.id, "emailed", who=row.email)
        return True, None

    async def list_pickups(self, actor: Actor) -> list[PickupInfo]:
        await self._require(actor, "portal.list", {})
        async with self.store.sessions() as s:
            rows = await s.scalars(
                select(PortalPickup)
                .where(PortalPickup.org_id == actor.org_id)
                .order_by(PortalPickup.created_at.desc(), PortalPickup.id)
            )
            return [await self._info(s, p, events=False) for p in rows]

    async def revoke(self, actor: Actor, pickup_id: str) -> PickupInfo:
        """Withdraw a link: it stops working at once and the stored package is deleted."""
        await self._require(actor, "portal.revoked", {"pickup": pickup_id[:36]})
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            row = await self._own(s, actor, pickup_id)
            # Withdrawn once: the machine says whether it can be, and the update applies
            # only in the states it can be withdrawn from (a withdrawal racing this one wins).
            withdrawn = ConflictError("this link was already withdrawn")
            if not PICKUP.can(state_of(row, now), On.REVOKE):
                raise withdrawn
            result = await s.execute(
                update(PortalPickup)
                .where(PortalPickup.id == row.id, in_states(PICKUP.sources(On.REVOKE), now))
                .values(revoked_at=now, revoked_by=actor.staff_id, identity_sealed=None)
                .execution_options(synchronize_session=False)
            )
            if not getattr(result, "rowcount", 0):
                raise withdrawn
            await self._end_sessions(s, row.id, now)
            self._event(s, row.id, "revoked", who=actor.staff_id)
        self._delete_file(row.id)
        await self._audit("portal.revoked", actor, row)
        return await self.get_pickup(actor, pickup_id)

    async def sweep_expired(self) -> int:
        """Delete the stored packages of expired links, and of links closed by an
        acknowledgement once its grace has passed (idempotent; for the scheduler)."""
        now = self.now()
        acknowledged_before = now - self.settings.ack_grace
        async with self.store.sessions() as s, s.begin():
            rows = list(
                await s.scalars(
                    select(PortalPickup).where(
                        PortalPickup.swept_at.is_(None),
                        (PortalPickup.expires_at <= now)
                        | (PortalPickup.acknowledged_at <= acknowledged_before),
                    )
                )
            )
            for row in rows:
                row.identity_sealed, row.swept_at = None, now
                await self._end_sessions(s, row.id, now)
                self._event(s, row.id, "closed" if row.acknowledged_at else "expired")
        for row in rows:
            self._delete_file(row.id)
            await self._audit(
                "portal.closed" if row.acknowledged_at else "portal.expired", None, row
            )
        return len(rows)
