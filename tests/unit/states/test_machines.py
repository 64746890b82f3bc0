"""Every state machine, checked as data: reachable, closed, final states stay final."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transfer.states import MACHINES, OUTGOING, IllegalTransition, Machine
from transfer.states.diagrams import with_diagrams
from transfer.states.machine import Transition
from transfer.states.outgoing import Outgoing, OutgoingEvent
from transfer.states.pickup import PICKUP, Pickup, PickupEvent, pickup_state

ROOT = Path(__file__).resolve().parents[3]
NAMES = [m.name for m in MACHINES]


@pytest.mark.parametrize("machine", MACHINES, ids=NAMES)
@given(data=st.data())
def test_no_event_sequence_leaves_the_defined_states(
    machine: Machine[Any, Any], data: st.DataObject
) -> None:
    state = data.draw(st.sampled_from(sorted(machine.initial)))
    for event in data.draw(st.lists(st.sampled_from(machine.all_events()), max_size=30)):
        was_final = machine.is_final(state)
        if not machine.can(state, event):
            with pytest.raises(IllegalTransition):
                machine.step(state, event)
            continue
        step = machine.step(state, event)
        assert step.target in machine.all_states()
        if was_final:
            assert step.target == state, f"{state} is final but {event} moved it"
        state = step.target


@pytest.mark.parametrize("machine", MACHINES, ids=NAMES)
def test_every_state_is_reachable_and_every_path_can_end(machine: Machine[Any, Any]) -> None:
    reached = set(machine.initial)
    frontier = list(machine.initial)
    while frontier:
        state = frontier.pop()
        for event in machine.events_from(state):
            target = machine.step(state, event).target
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(machine.all_states())
    # From every state some final state can be reached.
    for state in machine.all_states():
        seen, todo = {state}, [state]
        while todo:
            s = todo.pop()
            for event in machine.events_from(s):
                t = machine.step(s, event).target
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        assert seen & machine.finals, f"{state} can never end"


def test_a_receipt_never_moves_a_package_back_or_between_final_words() -> None:
    S, E = Outgoing, OutgoingEvent
    assert OUTGOING.step(S.ACCEPTED, E.RECEIPT_VIEWED).target is S.ACCEPTED
    assert OUTGOING.step(S.VIEWED, E.RECEIPT_DELIVERED).target is S.VIEWED
    assert OUTGOING.step(S.QUEUED, E.RECEIPT_ACCEPTED).effects == ("transfer.accepted",)
    with pytest.raises(IllegalTransition, match="accepted by the receiver"):
        OUTGOING.step(S.ACCEPTED, E.RECEIPT_REJECTED)
    with pytest.raises(IllegalTransition):
        OUTGOING.step(S.DELIVERED, E.CANCEL)  # never after delivery
    assert set(OUTGOING.sources(E.CANCEL)) == {S.DRAFT, S.QUEUED, S.FAILED}


def test_a_table_that_lets_a_final_state_go_is_refused() -> None:
    S, E = Outgoing, OutgoingEvent
    with pytest.raises(ValueError, match="final state accepted leads to queued"):
        Machine(
            name="broken",
            states=Outgoing,
            events=OutgoingEvent,
            initial=frozenset({S.DRAFT}),
            finals=frozenset({S.ACCEPTED}),
            transitions=(Transition(S.ACCEPTED, E.RESEND, S.QUEUED),),
        )


def test_the_architecture_page_draws_the_machines_as_the_code_has_them() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert with_diagrams(page) == page, (
        "docs/architecture.md is out of date: run "
        "'.venv/bin/python -m transfer.states.diagrams docs/architecture.md'"
    )


@given(
    revoked=st.booleans(),
    locked=st.booleans(),
    acknowledged=st.booleans(),
    expired=st.booleans(),
    opened=st.booleans(),
)
def test_a_pickups_state_follows_its_facts_in_order_of_precedence(
    revoked: bool, locked: bool, acknowledged: bool, expired: bool, opened: bool
) -> None:
    state = pickup_state(
        revoked=revoked, locked=locked, acknowledged=acknowledged, expired=expired, opened=opened
    )
    facts = [
        (revoked, Pickup.REVOKED),
        (locked, Pickup.LOCKED),
        (acknowledged, Pickup.ACKNOWLEDGED),
        (expired, Pickup.EXPIRED),
        (opened, Pickup.OPENED),
    ]
    assert state is next((s for fact, s in facts if fact), Pickup.WAITING)


def test_a_pickups_updates_apply_where_the_portal_always_applied_them() -> None:
    S, E = Pickup, PickupEvent
    everything = set(PICKUP.all_states())
    # Withdrawn once; locked once (a lock noted on a withdrawn link leaves it withdrawn).
    assert set(PICKUP.sources(E.REVOKE)) == everything - {S.REVOKED}
    assert set(PICKUP.sources(E.LOCK)) == everything - {S.LOCKED}
    assert PICKUP.step(S.REVOKED, E.LOCK).target is S.REVOKED
    # Acknowledged only while the link is open and not yet acknowledged.
    assert PICKUP.update(E.ACKNOWLEDGE) == ((S.WAITING, S.OPENED), S.ACKNOWLEDGED)
    with pytest.raises(IllegalTransition, match="acknowledged by the agency"):
        PICKUP.step(S.ACKNOWLEDGED, E.ACKNOWLEDGE)
    # The first view is dated whenever it comes; it moves only a waiting pickup.
    assert set(PICKUP.sources(E.OPEN)) == everything
    assert PICKUP.update(E.OPEN) == ((S.WAITING,), S.OPENED)
    assert set(PICKUP.sources(E.RELEASE)) == {S.WAITING, S.OPENED, S.ACKNOWLEDGED}
