"""Handover's state machines, as data with a pure ``step`` (see :mod:`transfer.states.machine`).

One module per machine; :data:`MACHINES` lists them all for the property tests and
the generated diagrams in ``docs/architecture.md``.
"""

from __future__ import annotations

from typing import Any

from transfer.states.machine import IllegalTransition, Machine, Step, Transition
from transfer.states.outgoing import OUTGOING

#: Every machine, in the order the documentation shows them.
MACHINES: tuple[Machine[Any, Any], ...] = (OUTGOING,)

__all__ = ["MACHINES", "OUTGOING", "IllegalTransition", "Machine", "Step", "Transition"]
