"""The transfer request: a school asks a new pupil's previous school for the file.

One table holds both sides. The requesting school's row starts *pending*, becomes
*sent* once the holder's node has it (or *failed* if it never could), and ends with the
holder's answer. The holding school's row starts *received*; a DSL authorising it holds
it as *authorising* while the leaver's file is queued (back to *received* if that
fails), and it ends *authorised* or *declined*. An answer, once given, stays.
"""

from __future__ import annotations

from enum import StrEnum

from transfer.states.machine import Machine, Transition


class RequestState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    RECEIVED = "received"
    AUTHORISING = "authorising"
    AUTHORISED = "authorised"
    DECLINED = "declined"


class RequestEvent(StrEnum):
    HANDED_OVER = "handed_over"
    GIVE_UP = "give_up"
    ANSWER_AUTHORISED = "answer_authorised"
    ANSWER_DECLINED = "answer_declined"
    CLAIM = "claim"
    RELEASE = "release"
    AUTHORISE = "authorise"
    DECLINE = "decline"


S, E = RequestState, RequestEvent
_WAITING = (S.PENDING, S.SENT, S.FAILED)

REQUEST = Machine(
    name="transfer request",
    states=RequestState,
    events=RequestEvent,
    initial=frozenset({S.PENDING, S.RECEIVED}),
    finals=frozenset({S.AUTHORISED, S.DECLINED}),
    transitions=(
        # The requesting school's side.
        Transition(S.PENDING, E.HANDED_OVER, S.SENT, ("request.sent",)),
        Transition(S.PENDING, E.GIVE_UP, S.FAILED, ("request.failed",)),
        *(
            Transition(s, E.ANSWER_AUTHORISED, S.AUTHORISED, ("request.authorised",))
            for s in _WAITING
        ),
        *(Transition(s, E.ANSWER_DECLINED, S.DECLINED, ("request.declined",)) for s in _WAITING),
        # The same answer again (a retry) changes nothing.
        Transition(S.AUTHORISED, E.ANSWER_AUTHORISED, S.AUTHORISED),
        Transition(S.DECLINED, E.ANSWER_DECLINED, S.DECLINED),
        # The holding school's side.
        Transition(S.RECEIVED, E.CLAIM, S.AUTHORISING),
        # A claim older than the grace period is taken over (the service checks the age).
        Transition(S.AUTHORISING, E.CLAIM, S.AUTHORISING),
        Transition(S.AUTHORISING, E.RELEASE, S.RECEIVED),
        Transition(S.AUTHORISING, E.AUTHORISE, S.AUTHORISED, ("request.authorised",)),
        Transition(S.RECEIVED, E.DECLINE, S.DECLINED, ("request.declined",)),
    ),
    describe={
        S.PENDING: "waiting to reach the other school",
        S.SENT: "with the other school, waiting for its answer",
        S.FAILED: "could not reach the other school",
        S.RECEIVED: "waiting for your answer",
        S.AUTHORISING: "being authorised",
        S.AUTHORISED: "authorised, and the file sent",
        S.DECLINED: "declined",
    },
    actions={
        E.HANDED_OVER: "be marked as reaching the other school",
        E.GIVE_UP: "be given up",
        E.ANSWER_AUTHORISED: "take an authorised answer",
        E.ANSWER_DECLINED: "take a declined answer",
        E.CLAIM: "be authorised",
        E.RELEASE: "be released",
        E.AUTHORISE: "be authorised",
        E.DECLINE: "be declined",
    },
)
