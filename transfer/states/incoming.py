"""The incoming package: from the first byte of its upload to the DSL's decision.

``docs/delivery.md`` says what each state means. An upload that fails a check is
*refused* (its bytes deleted); a checked one is *delivered* (and a delivered receipt
goes back); a DSL's first look makes it *viewed*; the DSL then accepts or rejects it,
and that decision is final.
"""

from __future__ import annotations

from enum import StrEnum

from transfer.states.machine import Machine, Transition


class Incoming(StrEnum):
    RECEIVING = "receiving"
    REFUSED = "refused"
    DELIVERED = "delivered"
    VIEWED = "viewed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class IncomingEvent(StrEnum):
    CHUNK = "chunk"
    CHECKED = "checked"
    REFUSE = "refuse"
    VIEW = "view"
    ACCEPT = "accept"
    REJECT = "reject"


S, E = Incoming, IncomingEvent

#: The states in which a DSL may still decide (accept or reject).
OPEN: tuple[Incoming, ...] = (S.DELIVERED, S.VIEWED)

INCOMING = Machine(
    name="incoming package",
    states=Incoming,
    events=IncomingEvent,
    initial=frozenset({S.RECEIVING}),
    finals=frozenset({S.REFUSED, S.ACCEPTED, S.REJECTED}),
    transitions=(
        Transition(S.RECEIVING, E.CHUNK, S.RECEIVING),
        Transition(S.RECEIVING, E.CHECKED, S.DELIVERED, ("receipt.delivered",)),
        Transition(S.RECEIVING, E.REFUSE, S.REFUSED, ("transfer.refused",)),
        Transition(S.DELIVERED, E.VIEW, S.VIEWED, ("receipt.viewed",)),
        Transition(S.VIEWED, E.VIEW, S.VIEWED),
        *(
            Transition(source, event, target, (f"receipt.{target}",))
            for source in OPEN
            for event, target in ((E.ACCEPT, S.ACCEPTED), (E.REJECT, S.REJECTED))
        ),
    ),
    describe={
        S.RECEIVING: "still arriving",
        S.REFUSED: "refused (it failed a check)",
        S.DELIVERED: "delivered, not yet opened",
        S.VIEWED: "opened, waiting for a decision",
        S.ACCEPTED: "accepted",
        S.REJECTED: "rejected",
    },
    actions={
        E.CHUNK: "take more of its upload",
        E.CHECKED: "be delivered",
        E.REFUSE: "be refused",
        E.VIEW: "be opened",
        E.ACCEPT: "be accepted",
        E.REJECT: "be rejected",
    },
)
