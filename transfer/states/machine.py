"""A state machine as data: its states, events and transitions, and a pure :func:`Machine.step`.

Each machine of Handover (an outgoing package, an incoming package, a referral,
a pickup, a transfer request) is one :class:`Machine` value in its own module of
this package. A service never writes a state of its own: it asks the machine for
the step (``machine.step(state, event)``), and persists the result with a
conditional update (``UPDATE ... SET state = :target WHERE id = :id AND state IN
(machine.sources(event))``), so that a change that raced with another is not
applied twice and a final state stays final.

This module imports nothing of Handover but the error root: no database, no
network. Diagrams in ``docs/`` are drawn from the same data (:meth:`Machine.mermaid`),
so they cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from transfer.errors import ConflictError

S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


class IllegalTransition(ConflictError):
    """The event does not apply in the record's current state (HTTP 409)."""

    slug = "illegal-transition"
    title = "Not possible in the current state"


@dataclass(frozen=True)
class Transition(Generic[S, E]):
    """In ``source``, ``event`` moves to ``target`` and asks for ``effects`` (names, in order)."""

    source: S
    event: E
    target: S
    effects: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step(Generic[S]):
    """What :meth:`Machine.step` decided: the state to move to and the effects to carry out."""

    source: S
    target: S
    effects: tuple[str, ...]

    @property
    def changes(self) -> bool:
        return self.source != self.target


@dataclass(frozen=True)
class Machine(Generic[S, E]):
    """A finite state machine given as a table of transitions.

    ``describe`` gives each state in words and ``actions`` each event (for the
    messages a person reads). A final
    state is one nothing leaves: its only transitions are loops back to itself (a
    repeated receipt, say, changes nothing); a state that nothing leaves must be
    listed as final. Both are checked when the machine is built.
    """

    name: str
    states: type[S]
    events: type[E]
    initial: frozenset[S]
    finals: frozenset[S]
    transitions: tuple[Transition[S, E], ...]
    describe: Mapping[S, str] = field(default_factory=dict)
    #: Each event as what is done ("be cancelled", "take a rejected receipt").
    actions: Mapping[E, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: set[tuple[S, E]] = set()
        for t in self.transitions:
            if (t.source, t.event) in seen:
                raise ValueError(f"{self.name}: two transitions from {t.source} on {t.event}")
            seen.add((t.source, t.event))
            if t.source in self.finals and t.target != t.source:
                raise ValueError(f"{self.name}: final state {t.source} leads to {t.target}")
        leaving = {t.source for t in self.transitions if t.target != t.source}
        for s in self.states:
            if s not in leaving and s not in self.finals:
                raise ValueError(f"{self.name}: {s} has no transition and is not final")
        if not self.initial:
            raise ValueError(f"{self.name}: no initial state")

    # ------------------------------------------------------------------ queries

    def _table(self) -> dict[tuple[S, E], Transition[S, E]]:
        return {(t.source, t.event): t for t in self.transitions}

    def all_states(self) -> tuple[S, ...]:
        return tuple(self.states)

    def all_events(self) -> tuple[E, ...]:
        return tuple(self.events)

    def can(self, state: S, event: E) -> bool:
        """Whether ``event`` applies in ``state``."""
        return (state, event) in self._table()

    def events_from(self, state: S) -> tuple[E, ...]:
        """The events that apply in ``state``, in the table's order."""
        return tuple(t.event for t in self.transitions if t.source == state)

    def sources(self, event: E) -> tuple[S, ...]:
        """The states in which ``event`` applies: the ``WHERE state IN (...)`` of its update."""
        return tuple(t.source for t in self.transitions if t.event == event)

    def update(self, event: E) -> tuple[tuple[S, ...], S]:
        """``(sources, target)`` of the conditional update that applies ``event``.

        The states ``event`` moves out of (the ``WHERE state IN (...)``) and the one state
        they all move to (the ``SET state = ...``); loops that change nothing are left out,
        so a repeated event updates no row. For an event whose changing transitions lead
        to different states there is no single update: :class:`ValueError`.
        """
        moves = [t for t in self.transitions if t.event == event and t.target != t.source]
        targets = {t.target for t in moves}
        if len(targets) != 1:
            raise ValueError(f"{self.name}: {event} has no single target ({sorted(targets)})")
        return tuple(t.source for t in moves), moves[0].target

    def is_final(self, state: S) -> bool:
        return state in self.finals

    def words(self, state: S) -> str:
        """``state`` in words, as a person reads it ("queued", "accepted by the receiver")."""
        return self.describe.get(state, str(state).replace("_", " "))

    # --------------------------------------------------------------------- step

    def step(self, state: S, event: E) -> Step[S]:
        """The transition for ``event`` in ``state``, or raise :class:`IllegalTransition`."""
        found = self._table().get((state, event))
        if found is None:
            action = self.actions.get(event, str(event).replace("_", " "))
            raise IllegalTransition(
                f"this {self.name} is {self.words(state)}, so it cannot {action}",
                detail={"state": str(state), "event": str(event)},
            )
        return Step(state, found.target, found.effects)

    def run(self, events: Iterable[E], start: S | None = None) -> S:
        """The state reached by applying ``events`` in order (for tests and replays)."""
        state = start if start is not None else min(self.initial)
        for event in events:
            state = self.step(state, event).target
        return state

    # ------------------------------------------------------------------ diagram

    def mermaid(self) -> str:
        """The machine as a Mermaid ``stateDiagram-v2`` (for ``docs/``).

        Arrows between the same two states are drawn once with their events joined;
        loops that change nothing (a repeated receipt, say) are left out of the drawing.
        """
        lines = ["stateDiagram-v2"]
        lines += [f"    [*] --> {s}" for s in sorted(self.initial)]
        arrows: dict[tuple[S, S], list[str]] = {}
        for t in self.transitions:
            if t.target == t.source and not t.effects:
                continue
            arrows.setdefault((t.source, t.target), []).append(str(t.event))
        for (source, target), events in arrows.items():
            lines.append(f"    {source} --> {target}: {', '.join(events)}")
        lines += [f"    {s} --> [*]" for s in sorted(self.finals)]
        return "\n".join(lines)
