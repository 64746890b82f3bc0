"""The interface between the rest of Handover and the audit log (a leaf: standard library only).

Anything that must be audited takes an :class:`AuditSink` and calls
:meth:`AuditSink.record`. The tamper-evident Merkle log implements it; tests
may use :class:`MemoryAudit`. An event never carries safeguarding text: only
ids, an action name, the outcome and a small structured detail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Outcome = Literal["ok", "refused", "failed"]


@dataclass(frozen=True)
class AuditEvent:
    action: str
    actor: str | None = None
    org: str | None = None
    targets: dict[str, str] = field(default_factory=dict)
    outcome: Outcome = "ok"
    request_id: str | None = None
    detail: dict[str, str | int | bool | None] = field(default_factory=dict)


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None:
        """Append one event to the log (durably, before returning)."""
        ...


class MemoryAudit:
    """An in-memory sink for tests of code that audits."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]
