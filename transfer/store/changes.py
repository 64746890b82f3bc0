"""What the store tells whoever listens after a change is committed.

The store knows nothing of alerts, deadlines or e-mail: it calls each of its
``listeners`` with a :class:`StoreChange` once a change is committed and
audited, and the node wires the listeners up (``transfer.node``: the DSL
team's alerts). A listener that fails is logged; the change stands (what the
person did is saved), and the periodic sweeps catch up with anything missed.

A change carries ids and codes only, never sealed text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from transfer.store.permissions import Actor

__all__ = ["ChangeKind", "StoreChange", "StoreListener"]

ChangeKind = Literal[
    # a pupil's leaving date or destination was set or changed (by hand or by a CTF)
    "pupil.leaving",
    # a concern was recorded (``record_id``: the concern; ``category``: its key)
    "concern.recorded",
    # a DSL triaged a concern (``record_id``: the concern)
    "concern.triaged",
    # an action was added (``record_id``: the action) or completed
    "action.added",
    "action.completed",
]


@dataclass(frozen=True)
class StoreChange:
    kind: ChangeKind
    org_id: str
    pupil_ids: tuple[str, ...] = ()
    record_id: str | None = None
    #: Who made the change (None: the node itself).
    actor: Actor | None = None
    #: A concern's category key.
    category: str | None = None


StoreListener = Callable[[StoreChange], Awaitable[None]]
