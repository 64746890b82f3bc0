"""The referral: from the DSL's draft to the agency's outcome.

``docs/referrals.md`` says what each state means. News from the agency only ever moves a
referral forward: a delivery noticed after the agency accepted it changes nothing, and
the agency's final word (rejected, or the outcome that closes it) stays final. A referral
whose package never left (its route failed to take it, or the DSL withdrew it before the
agency had it) goes back to draft.
"""

from __future__ import annotations

from enum import StrEnum

from transfer.states.machine import Machine, Transition


class ReferralState(StrEnum):
    DRAFT = "draft"
    SENT = "sent"
    DELIVERED = "delivered"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CLOSED = "closed"
    DISCARDED = "discarded"


class ReferralEvent(StrEnum):
    SEAL = "seal"
    UNSEND = "unsend"
    DISCARD = "discard"
    DELIVER = "deliver"
    HAND_OVER = "hand_over"
    ACCEPT = "accept"
    REJECT = "reject"
    OUTCOME = "outcome"


S, E = ReferralState, ReferralEvent
_LATER = (S.DELIVERED, S.ACCEPTED, S.REJECTED, S.CLOSED)

REFERRAL = Machine(
    name="referral",
    states=ReferralState,
    events=ReferralEvent,
    initial=frozenset({S.DRAFT}),
    finals=frozenset({S.REJECTED, S.CLOSED, S.DISCARDED}),
    transitions=(
        Transition(S.DRAFT, E.SEAL, S.SENT, ("referral.sent",)),
        Transition(S.DRAFT, E.DISCARD, S.DISCARDED, ("referral.discarded",)),
        Transition(S.SENT, E.UNSEND, S.DRAFT, ("referral.unsent",)),
        # Delivered: by a receipt, a portal view or download; later news is no change.
        Transition(S.SENT, E.DELIVER, S.DELIVERED, ("referral.delivered",)),
        *(Transition(s, E.DELIVER, s) for s in _LATER),
        # An offline bundle's hand-over, recorded by hand once.
        Transition(S.SENT, E.HAND_OVER, S.DELIVERED, ("referral.handed_over",)),
        Transition(S.DELIVERED, E.HAND_OVER, S.DELIVERED),
        # Accepted (with the agency's reference): straight from sent counts as delivered too.
        Transition(S.SENT, E.ACCEPT, S.ACCEPTED, ("referral.delivered", "referral.accepted")),
        Transition(S.DELIVERED, E.ACCEPT, S.ACCEPTED, ("referral.accepted",)),
        Transition(S.ACCEPTED, E.ACCEPT, S.ACCEPTED),
        Transition(S.SENT, E.REJECT, S.REJECTED, ("referral.rejected",)),
        Transition(S.DELIVERED, E.REJECT, S.REJECTED, ("referral.rejected",)),
        Transition(S.REJECTED, E.REJECT, S.REJECTED),
        Transition(S.DELIVERED, E.OUTCOME, S.CLOSED, ("referral.outcome",)),
        Transition(S.ACCEPTED, E.OUTCOME, S.CLOSED, ("referral.outcome",)),
        Transition(S.CLOSED, E.OUTCOME, S.CLOSED),
    ),
    describe={
        S.DRAFT: "a draft",
        S.SENT: "sent, not yet with the agency",
        S.DELIVERED: "with the agency",
        S.ACCEPTED: "accepted by the agency",
        S.REJECTED: "declined by the agency",
        S.CLOSED: "closed with the agency's outcome",
        S.DISCARDED: "discarded",
    },
    actions={
        E.SEAL: "be sent",
        E.UNSEND: "go back to draft",
        E.DISCARD: "be discarded",
        E.DELIVER: "be marked delivered",
        E.HAND_OVER: "have its hand-over recorded",
        E.ACCEPT: "be accepted",
        E.REJECT: "be declined",
        E.OUTCOME: "take an outcome",
    },
)
