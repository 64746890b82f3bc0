"""The three routes behind one door: seal and send a referral, or take a sealed one back.

Used by the JSON API (``POST /api/v1/referrals/{id}/send`` and ``.../unsend``) and
the CLI (``handover referral send|bundle``); each function checks what its route
needs before anything is sealed, so a refusal leaves the referral a draft. A
referral with no chronology entry chosen goes only with ``form_only=True`` (the
DSL confirmed sending the form alone):

- :func:`send_by_node`: the agency runs a node (:class:`receivers.agency_node.AgencyNodeRoute`);
- :func:`send_via_portal`: sealed to the school's own key and offered through the
  pickup portal (:class:`receivers.portal.service.PickupPortal`); the passcode,
  and the link when it was not e-mailed, are returned once;
- :func:`send_offline`: an offline bundle (:func:`receivers.offline.write_offline_bundle`).

:func:`withdraw` puts a ``sent`` referral that never reached the agency back
to draft, after making its route let go of the package: an unopened portal
link is withdrawn, an undelivered outbox package is cancelled, and for an
offline bundle the DSL confirms it was not handed over (and destroys it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from receivers.agency_node import AgencyNodeRoute
from receivers.offline import OfflineBundle, write_offline_bundle
from receivers.portal.records import IssuedPickup
from receivers.portal.service import PickupPortal
from schemas.referrals import ReferralRecord
from transfer.age import X25519Recipient
from transfer.errors import ConflictError, InputError, TransportError
from transfer.exchange.outbox import Outbox
from transfer.referrals.service import Referrals
from transfer.store.permissions import Actor

__all__ = [
    "PortalSend",
    "RouteUnavailable",
    "send_by_node",
    "send_offline",
    "send_via_portal",
    "withdraw",
]

#: Pickup states in which the agency has not opened the referral.
_UNOPENED = ("waiting", "expired", "revoked", "locked")


class RouteUnavailable(TransportError):
    """The node was started without the part a route needs (its outbox, its portal)."""

    slug = "route-unavailable"
    title = "This way of sending is not available on this node"


@dataclass(frozen=True)
class PortalSend:
    """A referral just offered through the portal, and the pickup (passcode shown once)."""

    referral: ReferralRecord
    issued: IssuedPickup


async def send_by_node(
    referrals: Referrals,
    outbox: Outbox,
    actor: Actor,
    referral_id: str,
    *,
    form_only: bool = False,
) -> ReferralRecord:
    """Seal the referral into the outbox for the agency's node (``sent``, route ``node``)."""
    return await AgencyNodeRoute(referrals, outbox).send(actor, referral_id, form_only=form_only)


def _create(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


async def send_via_portal(
    referrals: Referrals,
    portal: PickupPortal,
    actor: Actor,
    referral_id: str,
    *,
    expires_in_days: int | None = None,
    form_only: bool = False,
) -> PortalSend:
    """Seal the referral to the school's own key and offer it to the agency's registered
    address through a one-time link. On any failure the referral stays (or goes back to)
    a draft and no file is left behind."""
    await portal.authorise(actor, referral_id)
    record = await referrals.get(actor, referral_id)
    entry = await referrals.directory.entry(record.agency_org_id)
    email = getattr(entry, "email", None)
    if not email:
        raise InputError(
            f"{entry.name} has no registered e-mail address for the pickup portal: send the "
            "referral to their node or as an offline bundle"
        )
    if record.state != "draft":
        raise ConflictError(
            f"this referral was already sealed and is {record.state}; "
            "to send again, start a new referral"
        )
    keyset = await asyncio.to_thread(referrals.keys.load, actor.org_id)
    own = X25519Recipient.from_string(keyset.recipient)
    tmp = portal.directory / f".referral-{uuid.uuid4().hex}.part"
    try:
        fd = await asyncio.to_thread(_create, tmp)
    except OSError as exc:
        raise TransportError(f"cannot write in {tmp.parent}: {exc.strerror}") from None
    sealed = None
    try:
        with os.fdopen(fd, "wb") as out:
            sealed = await referrals.seal(
                actor, referral_id, out, route="portal", recipients=[own], form_only=form_only
            )
        issued = await portal.create_pickup(
            actor,
            package=tmp,
            referral_id=referral_id,
            email=email,
            agency_name=entry.name,
            expires_in_days=expires_in_days,
        )
    except BaseException:
        if sealed is not None:
            await referrals.unsend(actor, referral_id, reason="portal refused it")
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return PortalSend(referral=sealed.referral, issued=issued)


async def send_offline(
    referrals: Referrals,
    actor: Actor,
    referral_id: str,
    out_dir: Path,
    *,
    passphrase: bool = False,
    as_zip: bool = False,
    form_only: bool = False,
) -> OfflineBundle:
    """Seal the referral into an offline bundle under ``out_dir``."""
    return await write_offline_bundle(
        referrals,
        actor,
        referral_id,
        out_dir,
        passphrase=passphrase,
        as_zip=as_zip,
        form_only=form_only,
    )


async def withdraw(
    referrals: Referrals,
    actor: Actor,
    referral_id: str,
    *,
    reason: str,
    portal: PickupPortal | None = None,
    outbox: Outbox | None = None,
) -> ReferralRecord:
    """Take back a ``sent`` referral that never reached the agency (back to draft).

    Portal: every link still waiting is withdrawn; refused if the agency opened one.
    Node: the outbox's package is cancelled unless it already was; refused once
    delivered. Offline: the caller states that the bundle was not handed over.
    """
    record = await referrals.get(actor, referral_id)
    if record.state != "sent":
        raise ConflictError(
            f"this referral is {record.state}; only a referral that was sent and has not "
            "reached the agency can be taken back"
        )
    if record.route == "portal":
        if portal is None:
            raise RouteUnavailable("this node has no pickup portal configured")
        pickups = [p for p in await portal.list_pickups(actor) if p.referral_id == referral_id]
        if any(p.state not in _UNOPENED for p in pickups):
            raise ConflictError(
                "the agency has opened this referral at the portal; it cannot be taken back"
            )
        for p in pickups:
            if p.state in ("waiting", "locked"):
                await portal.revoke(actor, p.id)
    elif record.route == "node":
        if outbox is None:
            raise RouteUnavailable("this node has no outbox configured")
        if record.package_id is None:
            raise ConflictError("this referral has no package in the outbox")
        queued = await outbox.get(actor, record.package_id)
        if queued.state != "cancelled":
            await outbox.cancel(actor, record.package_id, via="referral")
    return await referrals.withdraw(actor, referral_id, reason=reason)
