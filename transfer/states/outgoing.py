"""The outgoing package: from the draft a DSL's "send" writes to the receiver's last receipt.

``docs/delivery.md`` says what each state means to the DSL. A receipt only ever
moves a package forward: a repeated or late receipt (a *viewed* receipt after the
*accepted* one) changes nothing, and a receipt that contradicts a final state (a
*rejected* receipt for an accepted package) is refused.
"""

from __future__ import annotations

from enum import StrEnum

from transfer.states.machine import Machine, Transition


class Outgoing(StrEnum):
    DRAFT = "draft"
    QUEUED = "queued"
    DELIVERED = "delivered"
    VIEWED = "viewed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OutgoingEvent(StrEnum):
    BUILT = "built"
    RECEIPT_DELIVERED = "receipt_delivered"
    RECEIPT_VIEWED = "receipt_viewed"
    RECEIPT_ACCEPTED = "receipt_accepted"
    RECEIPT_REJECTED = "receipt_rejected"
    GIVE_UP = "give_up"
    RESEND = "resend"
    CANCEL = "cancel"


S, E = Outgoing, OutgoingEvent
_RECEIPTS = {
    E.RECEIPT_DELIVERED: S.DELIVERED,
    E.RECEIPT_VIEWED: S.VIEWED,
    E.RECEIPT_ACCEPTED: S.ACCEPTED,
    E.RECEIPT_REJECTED: S.REJECTED,
}
_RANK = {S.QUEUED: 0, S.FAILED: 0, S.DELIVERED: 1, S.VIEWED: 2, S.ACCEPTED: 3, S.REJECTED: 3}


def _receipt_moves() -> list[Transition[Outgoing, OutgoingEvent]]:
    """A receipt moves a package forward, never back, and never from one final to the other."""
    moves = []
    for source in (S.QUEUED, S.FAILED, S.DELIVERED, S.VIEWED, S.ACCEPTED, S.REJECTED):
        for event, reached in _RECEIPTS.items():
            if source in (S.ACCEPTED, S.REJECTED) and _RANK[reached] == 3 and reached != source:
                continue  # contradicts the receiver's final word: refused
            target = reached if _RANK[reached] > _RANK[source] else source
            effects = (f"transfer.{reached}",) if target != source else ()
            moves.append(Transition(source, event, target, effects))
    # A cancelled package keeps any receipt that still arrives, and stays cancelled.
    moves += [Transition(S.CANCELLED, event, S.CANCELLED) for event in _RECEIPTS]
    return moves


OUTGOING = Machine(
    name="outgoing package",
    states=Outgoing,
    events=OutgoingEvent,
    initial=frozenset({S.DRAFT}),
    finals=frozenset({S.ACCEPTED, S.REJECTED, S.CANCELLED}),
    transitions=(
        Transition(S.DRAFT, E.BUILT, S.QUEUED, ("transfer.queued",)),
        Transition(S.DRAFT, E.CANCEL, S.CANCELLED, ("transfer.cancelled",)),
        Transition(S.QUEUED, E.GIVE_UP, S.FAILED, ("transfer.failed",)),
        Transition(S.QUEUED, E.CANCEL, S.CANCELLED, ("transfer.cancelled",)),
        Transition(S.FAILED, E.RESEND, S.QUEUED, ("transfer.resent",)),
        Transition(S.FAILED, E.CANCEL, S.CANCELLED, ("transfer.cancelled",)),
        *_receipt_moves(),
    ),
    describe={
        S.DRAFT: "being built",
        S.QUEUED: "waiting to be delivered",
        S.DELIVERED: "delivered",
        S.VIEWED: "opened by the receiver",
        S.ACCEPTED: "accepted by the receiver",
        S.REJECTED: "rejected by the receiver",
        S.FAILED: "not delivered (failed)",
        S.CANCELLED: "cancelled",
    },
    actions={
        E.BUILT: "be queued",
        E.RECEIPT_DELIVERED: "take a delivered receipt",
        E.RECEIPT_VIEWED: "take a viewed receipt",
        E.RECEIPT_ACCEPTED: "take an accepted receipt",
        E.RECEIPT_REJECTED: "take a rejected receipt",
        E.GIVE_UP: "be given up",
        E.RESEND: "be sent again",
        E.CANCEL: "be cancelled",
    },
)
