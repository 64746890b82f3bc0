"""Handover's state machines, as data with a pure ``step`` (see :mod:`transfer.states.machine`).

One module per machine; :data:`MACHINES` lists them all for the property tests and
the generated diagrams in ``docs/architecture.md``.
"""

from __future__ import annotations

from typing import Any

from transfer.states.incoming import INCOMING
from transfer.states.machine import IllegalTransition, Machine, Step, Transition
from transfer.states.outgoing import OUTGOING
from transfer.states.pickup import PICKUP
from transfer.states.referral import REFERRAL
from transfer.states.request import REQUEST

#: Every machine, in the order the documentation shows them.
MACHINES: tuple[Machine[Any, Any], ...] = (OUTGOING, INCOMING, REFERRAL, PICKUP, REQUEST)

__all__ = [
    "INCOMING",
    "MACHINES",
    "OUTGOING",
    "PICKUP",
    "REFERRAL",
    "REQUEST",
    "IllegalTransition",
    "Machine",
    "Step",
    "Transition",
]
