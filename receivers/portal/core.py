"""The portal's shared core: the pickup row, its receipt trail and audit, and a link's checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import (
    Any,
    Final,
    TypeVar,
    cast,
)

import pyotp
from sqlalchemy import ColumnElement, and_, false, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from keys import aead
from keys.keyfiles import KeyFiles, KeySetNotFoundError
from keys.keyset import KeySet
from receivers.portal import tokens
from receivers.portal.contracts import (
    PORTAL_DIR,
    AcknowledgementSink,
    Clock,
    DeliverySink,
    PickupMailer,
    PortalSettings,
    TeamAlerts,
    utc_now,
)
from receivers.portal.errors import (
    LinkClosed,
    LinkExpired,
    LinkLocked,
    LinkNotValid,
    LinkRevoked,
)
from receivers.portal.records import (
    PickupEvent,
    PickupInfo,
)
from receivers.portal.tables import PortalAgencyUser, PortalEvent, PortalPickup, PortalSession
from transfer.age import X25519Identity
from transfer.auth import codes
from transfer.errors import (
    HandoverError,
    NotFoundError,
    PolicyError,
)
from transfer.states.pickup import PICKUP, Pickup, pickup_state
from transfer.states.pickup import PickupEvent as On
from transfer.store.permissions import Actor, Permission, require
from transfer.store.service import Store

log = logging.getLogger("receivers.portal")

_T = TypeVar("_T")
_TOTP_AAD: Final = b"handover:portal:totp:v1:"


def state_of(p: PortalPickup, now: datetime) -> Pickup:
    """The state of the pickup ``p`` at ``now`` (see :mod:`transfer.states.pickup`)."""
    return pickup_state(
        revoked=p.revoked_at is not None,
        locked=p.locked_at is not None,
        acknowledged=p.acknowledged_at is not None,
        expired=p.expires_at <= now or p.identity_sealed is None,
        opened=p.first_opened_at is not None,
    )


def _facts(now: datetime) -> list[tuple[Pickup, ColumnElement[bool], ColumnElement[bool]]]:
    """Each fact of :func:`state_of` in SQL, in its order of precedence: the state it
    decides, the fact, and the fact's absence."""
    p = PortalPickup
    return [
        (Pickup.REVOKED, p.revoked_at.is_not(None), p.revoked_at.is_(None)),
        (Pickup.LOCKED, p.locked_at.is_not(None), p.locked_at.is_(None)),
        (Pickup.ACKNOWLEDGED, p.acknowledged_at.is_not(None), p.acknowledged_at.is_(None)),
        (
            Pickup.EXPIRED,
            or_(p.expires_at <= now, p.identity_sealed.is_(None)),
            and_(p.expires_at > now, p.identity_sealed.is_not(None)),
        ),
        (Pickup.OPENED, p.first_opened_at.is_not(None), p.first_opened_at.is_(None)),
    ]


def in_states(states: Iterable[Pickup], now: datetime) -> ColumnElement[bool]:
    """SQL for "the pickup's state at ``now`` is one of ``states``": the ``WHERE state IN
    (sources)`` of a conditional update, on the facts the state is derived from."""
    wanted = set(states)
    if wanted == set(Pickup):
        return true()
    facts = _facts(now)
    clauses: list[ColumnElement[bool]] = []
    for i, (state, fact, _) in enumerate(facts):
        if state in wanted:
            clauses.append(and_(*(absent for _, _, absent in facts[:i]), fact))
    if Pickup.WAITING in wanted:
        clauses.append(and_(*(absent for _, _, absent in facts)))
    return or_(*clauses) if clauses else false()


LOCKED_TEXT: Final = "this link is locked after too many wrong codes; ask the school for a new link"


class PortalCore:
    """What every part of the portal shares: its settings, the store, the receipt trail and
    the audit, and the checks of a link. See :mod:`receivers.portal.service`."""

    def __init__(
        self,
        store: Store,
        keys: KeyFiles,
        kek: bytes,
        *,
        base_url: str,
        mailer: PickupMailer | None = None,
        acknowledgements: AcknowledgementSink | None = None,
        settings: PortalSettings | None = None,
        clock: Clock | None = None,
        deliveries: DeliverySink | None = None,
        alerts: TeamAlerts | None = None,
    ) -> None:
        if len(kek) != aead.KEY_SIZE:
            raise ValueError("the key-encryption key must be 32 bytes")
        self.store = store
        self.keys = keys
        self._kek = kek
        self.base_url = base_url.rstrip("/")
        self.mailer = mailer
        self.acknowledgements = acknowledgements
        #: Told of the first view and of each download; by default the acknowledgement
        #: sink itself when it can take deliveries (the real ``Referrals`` can).
        self.deliveries = deliveries
        if deliveries is None and isinstance(acknowledgements, DeliverySink):
            self.deliveries = acknowledgements
        #: The sending school's DSL team is alerted when an agency's authenticator changes.
        self.alerts = alerts
        self.settings = settings or PortalSettings()
        self._clock = clock or utc_now
        self.directory = store.data_dir / PORTAL_DIR

    # --------------------------------------------------------------- plumbing

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def csrf_token(self, binding: str, form: str) -> str:
        return tokens.csrf_token(self._kek, binding, form)

    def csrf_valid(self, binding: str, form: str, token: str) -> bool:
        return tokens.csrf_valid(self._kek, binding, form, token)

    def _file(self, pickup_id: str) -> Path:
        return self.directory / f"{pickup_id}.age"

    async def _audit(
        self,
        action: str,
        actor: Actor | str | None,
        pickup: PortalPickup,
        outcome: str = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        await self.store.record_event(
            action,
            actor,
            pickup.org_id,
            {"pickup": pickup.id, "referral": pickup.referral_id},
            cast(Any, outcome),
            **detail,
        )

    def _event(
        self,
        s: AsyncSession,
        pickup_id: str,
        kind: str,
        *,
        ip: str | None = None,
        who: str | None = None,
        what: str | None = None,
    ) -> None:
        s.add(
            PortalEvent(
                pickup_id=pickup_id,
                kind=kind,
                at=self.now(),
                ip=(ip or None) and ip[:64],
                who=who and who[:254],
                what=what and what[:300],
            )
        )

    def _keyset(self, org_id: str) -> KeySet:
        try:
            return self.keys.load(org_id)
        except KeySetNotFoundError:
            raise PolicyError(
                f"organisation {org_id} has no keys on this node; make them first "
                "('handover keys generate')"
            ) from None

    async def _info(self, s: AsyncSession, p: PortalPickup, *, events: bool) -> PickupInfo:
        trail: tuple[PickupEvent, ...] = ()
        if events:
            rows = await s.scalars(
                select(PortalEvent).where(PortalEvent.pickup_id == p.id).order_by(PortalEvent.seq)
            )
            trail = tuple(
                PickupEvent(kind=e.kind, at=e.at, ip=e.ip, who=e.who, what=e.what) for e in rows
            )
        return PickupInfo(
            id=p.id,
            org_id=p.org_id,
            referral_id=p.referral_id,
            email=p.email,
            agency_name=p.agency_name,
            package_id=p.package_id,
            package_kind=p.package_kind,
            state=state_of(p, self.now()).value,
            emailed=p.emailed,
            created_by=p.created_by,
            created_at=p.created_at,
            expires_at=p.expires_at,
            failed_attempts=p.failed_count,
            locked_at=p.locked_at,
            revoked_at=p.revoked_at,
            first_opened_at=p.first_opened_at,
            acknowledged_at=p.acknowledged_at,
            acknowledged_by=p.ack_name,
            agency_reference=p.ack_reference,
            events=trail,
        )

    async def _require(self, actor: Actor, action: str, targets: dict[str, str]) -> None:
        """Refuse (and audit the refusal of) an actor who may not send referrals."""
        if not actor.has(Permission.SEND_REFERRAL):
            await self.store.record_event(action, actor, actor.org_id, targets, "refused")
            require(actor, Permission.SEND_REFERRAL)

    async def _own(self, s: AsyncSession, actor: Actor, pickup_id: str) -> PortalPickup:
        row = await s.get(PortalPickup, pickup_id[:36])
        if row is None or row.org_id != actor.org_id:
            raise NotFoundError("no such pickup in your organisation")
        return row

    async def get_pickup(self, actor: Actor, pickup_id: str) -> PickupInfo:
        await self._require(actor, "portal.read", {"pickup": pickup_id[:36]})
        async with self.store.sessions() as s:
            return await self._info(s, await self._own(s, actor, pickup_id), events=True)

    def _delete_file(self, pickup_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(pickup_id).unlink()

    async def _end_sessions(self, s: AsyncSession, pickup_id: str, now: datetime) -> None:
        await s.execute(
            update(PortalSession)
            .where(PortalSession.pickup_id == pickup_id, PortalSession.ended_at.is_(None))
            .values(ended_at=now, identity_sealed=None)
        )

    # ------------------------------------------------------------------ links

    async def _by_token(self, s: AsyncSession, token: str, *, lock: bool = False) -> PortalPickup:
        if not 20 <= len(token) <= 100 or not token.isascii():
            raise LinkNotValid("this link is not valid")
        wanted = tokens.link_token_hash(token)
        query = select(PortalPickup).where(PortalPickup.token_hash == wanted)
        if lock:
            query = query.with_for_update()
        row = (await s.scalars(query)).first()
        if row is None or not codes.same(row.token_hash, wanted):
            raise LinkNotValid("this link is not valid")
        return row

    def _closes_at(self, row: PortalPickup) -> datetime | None:
        """When the link closes because receipt was acknowledged (``None``: not acknowledged)."""
        if row.acknowledged_at is None:
            return None
        return row.acknowledged_at + self.settings.ack_grace

    def _unusable(self, row: PortalPickup) -> PolicyError | None:
        """Why the link of ``row`` cannot be used now (the error to show), or ``None``."""
        now = self.now()
        state = state_of(row, now)
        if state is Pickup.REVOKED:
            return LinkRevoked(
                "the school has withdrawn this link; contact them if you still need the referral"
            )
        if state is Pickup.LOCKED:
            return LinkLocked(LOCKED_TEXT)
        closes = self._closes_at(row)
        if closes is not None and (closes <= now or row.identity_sealed is None):
            acknowledged = f"{row.acknowledged_at:%-d %B %Y at %H:%M} UTC"
            return LinkClosed(
                f"receipt of this referral was acknowledged on {acknowledged} and the link is "
                "now closed; ask the school if you need the referral again"
            )
        if row.expires_at <= now or row.identity_sealed is None:
            return LinkExpired("this link has expired; ask the school to send the referral again")
        return None

    def _check_usable(self, row: PortalPickup) -> None:
        """Raise why the link of ``row`` cannot be used now, if it cannot."""
        problem = self._unusable(row)
        if problem is not None:
            raise problem

    def _usable_clause(self, now: datetime) -> ColumnElement[bool]:
        """The SQL form of :meth:`_check_usable` (for a document's release): a state in which
        a document may be released, and the link still open (not expired, not deleted, and
        within the grace after an acknowledgement)."""
        return and_(
            in_states(PICKUP.sources(On.RELEASE), now),
            PortalPickup.identity_sealed.is_not(None),
            PortalPickup.expires_at > now,
            or_(
                PortalPickup.acknowledged_at.is_(None),
                PortalPickup.acknowledged_at > now - self.settings.ack_grace,
            ),
        )

    async def _pickup(self, pickup_id: str) -> PortalPickup:
        async with self.store.sessions() as s:
            row = await s.get(PortalPickup, pickup_id)
            assert row is not None
            return row

    async def _read(
        self,
        row: PortalPickup,
        read: Callable[[Path, X25519Identity, KeySet], _T | None],
        identity: X25519Identity,
        keyset: KeySet,
    ) -> _T:
        """``read`` the stored package off the event loop; a package deleted meanwhile (the
        link closed, was withdrawn or swept: ``read`` gives ``None``) is reported as what
        happened to the link."""
        found = await asyncio.to_thread(read, self._file(row.id), identity, keyset)
        if found is None:
            raise await self._gone(row)
        return found

    async def _gone(self, row: PortalPickup) -> PolicyError:
        """Why the link stopped working, its stored package being missing (to raise)."""
        fresh = await self._pickup(row.id)
        return self._unusable(fresh) or LinkExpired("the referral is no longer held here")

    async def _forward_delivery(self, row: PortalPickup, at: datetime) -> bool:
        """Tell the referral it reached the agency; False (logged, audited) if that failed."""
        if self.deliveries is None:
            return True
        try:
            await self.deliveries.record_delivery(
                row.referral_id, at=at, via="portal", package_id=row.package_id
            )
        except HandoverError as err:
            log.error(
                "pickup %s was opened, but the referral %s could not be marked delivered: %s",
                row.id,
                row.referral_id,
                err.diagnostics(),
            )
            await self._audit("portal.delivery_forwarded", None, row, "failed")
            return False
        return True

    # ------------------------------------------------------------ TOTP codes

    async def _check_totp(self, user: PortalAgencyUser | None, code: str) -> bool:
        if user is None or user.totp_sealed is None:
            # The same work as a real check, so timing does not tell who has enrolled.
            codes.matching_step(pyotp.random_base32(32), code, self.now(), 1)
            return False
        secret = self._unseal_totp(user.email, user.totp_sealed)
        step = codes.matching_step(secret, code, self.now(), self.settings.totp_drift_steps)
        if step is None:
            return False
        async with self.store.sessions() as s, s.begin():
            result = await s.execute(
                update(PortalAgencyUser)
                .where(
                    PortalAgencyUser.email == user.email,
                    (PortalAgencyUser.totp_last_step.is_(None))
                    | (PortalAgencyUser.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
        return bool(getattr(result, "rowcount", 0))  # a code is good once

    def _seal_totp(self, email: str, secret: str) -> bytes:
        return aead.seal(self._kek, secret.encode("ascii"), _TOTP_AAD + email.encode())

    def _unseal_totp(self, email: str, sealed: bytes) -> str:
        return aead.unseal(self._kek, sealed, _TOTP_AAD + email.encode()).decode("ascii")
