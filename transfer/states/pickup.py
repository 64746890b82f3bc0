"""The pickup: a referral package offered to an agency through a one-time link.

The portal keeps no state column: a pickup's state is derived from the facts its row
records (withdrawn, locked, acknowledged, expired, first opened), in that order of
precedence (:func:`pickup_state`), and the link expires by the clock alone. Every
write that can change it is a conditional update whose ``WHERE`` is "the derived state
is one of ``PICKUP.sources(event)``" (``receivers.portal.core.in_states``), so a change
that raced with another is not applied twice and a withdrawn link stays withdrawn.

Some events change nothing in some states, and are loops here so that their update
still applies: a first view recorded after the acknowledgement (or after the link
closed under a page already read) only dates the view, and a lock noted on a link
withdrawn while the wrong code was being checked leaves it withdrawn. A document's
release is a loop in each state in which a document may still be taken (with the
acknowledgement's grace as a further condition of its update).
"""

from __future__ import annotations

from enum import StrEnum

from transfer.states.machine import Machine, Transition


class Pickup(StrEnum):
    WAITING = "waiting"
    OPENED = "opened"
    ACKNOWLEDGED = "acknowledged"
    EXPIRED = "expired"
    REVOKED = "revoked"
    LOCKED = "locked"


class PickupEvent(StrEnum):
    OPEN = "open"
    RELEASE = "release"
    ACKNOWLEDGE = "acknowledge"
    EXPIRE = "expire"
    LOCK = "lock"
    REVOKE = "revoke"


def pickup_state(
    *,
    revoked: bool,
    locked: bool,
    acknowledged: bool,
    expired: bool,
    opened: bool,
) -> Pickup:
    """The state a pickup's recorded facts amount to (``expired``: by the clock, or its
    stored package deleted)."""
    if revoked:
        return Pickup.REVOKED
    if locked:
        return Pickup.LOCKED
    if acknowledged:
        return Pickup.ACKNOWLEDGED
    if expired:
        return Pickup.EXPIRED
    if opened:
        return Pickup.OPENED
    return Pickup.WAITING


S, E = Pickup, PickupEvent
_ALL = tuple(Pickup)

PICKUP = Machine(
    name="pickup",
    states=Pickup,
    events=PickupEvent,
    initial=frozenset({S.WAITING}),
    finals=frozenset({S.REVOKED}),
    transitions=(
        # The agency's first view of the referral (its delivery); later, only dated.
        Transition(S.WAITING, E.OPEN, S.OPENED, ("portal.opened", "referral.delivered")),
        *(Transition[Pickup, PickupEvent](s, E.OPEN, s) for s in _ALL if s != S.WAITING),
        # A document handed over, while the link is open.
        *(Transition(s, E.RELEASE, s) for s in (S.WAITING, S.OPENED, S.ACKNOWLEDGED)),
        Transition(S.WAITING, E.ACKNOWLEDGE, S.ACKNOWLEDGED, ("portal.acknowledged",)),
        Transition(S.OPENED, E.ACKNOWLEDGE, S.ACKNOWLEDGED, ("portal.acknowledged",)),
        # The clock: no write (the sweep then deletes the stored package).
        Transition(S.WAITING, E.EXPIRE, S.EXPIRED),
        Transition(S.OPENED, E.EXPIRE, S.EXPIRED),
        # Too many wrong codes (a link that expired during the last check locks too).
        *(
            Transition(s, E.LOCK, S.LOCKED, ("portal.locked",))
            for s in (S.WAITING, S.OPENED, S.ACKNOWLEDGED, S.EXPIRED)
        ),
        Transition(S.REVOKED, E.LOCK, S.REVOKED),
        # Withdrawn by the sending school's DSL, from any state but withdrawn.
        *(Transition(s, E.REVOKE, S.REVOKED, ("portal.revoked",)) for s in _ALL if s != S.REVOKED),
    ),
    describe={
        S.WAITING: "waiting for the agency",
        S.OPENED: "opened by the agency",
        S.ACKNOWLEDGED: "acknowledged by the agency",
        S.EXPIRED: "expired",
        S.REVOKED: "withdrawn",
        S.LOCKED: "locked after too many wrong codes",
    },
    actions={
        E.OPEN: "be opened",
        E.RELEASE: "release a document",
        E.ACKNOWLEDGE: "be acknowledged",
        E.EXPIRE: "expire",
        E.LOCK: "be locked",
        E.REVOKE: "be withdrawn",
    },
)
