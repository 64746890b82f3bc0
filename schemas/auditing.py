"""The interface between the rest of Handover and the audit log (a leaf: standard library only).

Anything that must be audited takes an :class:`AuditSink` and calls
:meth:`AuditSink.record`. The tamper-evident Merkle log implements it; tests
may use :class:`MemoryAudit`. An event never carries safeguarding text: only
ids, an action name, the outcome and a small structured detail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

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


@runtime_checkable
class IntentSink(Protocol):
    """A sink that can append an entry promised by an intent row (``audit_intents``).

    The row was written in the same transaction as the change the event records;
    ``record_intent`` appends the entry and deletes the row in one transaction, or
    appends nothing if the row is already gone (another process replayed it).
    """

    async def record_intent(self, event: AuditEvent, intent_id: str, at: datetime) -> bool:
        """Append the promised entry (at ``at``) and delete the row; False if this sink
        cannot (the caller then records the event and deletes the row itself)."""
        ...


def event_to_json(event: AuditEvent) -> str:
    """An event as the text kept in an intent row (ids and short names only, as in the log)."""
    return json.dumps(
        {
            "action": event.action,
            "actor": event.actor,
            "org": event.org,
            "targets": event.targets,
            "outcome": event.outcome,
            "request_id": event.request_id,
            "detail": event.detail,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def event_from_json(text: str) -> AuditEvent:
    """The event an intent row keeps (:func:`event_to_json`); ValueError if it is not one."""
    obj: Any = json.loads(text)
    if not isinstance(obj, dict) or not isinstance(obj.get("action"), str):
        raise ValueError("an audit intent holds no event")
    outcome = obj.get("outcome", "ok")
    if outcome not in ("ok", "refused", "failed"):
        raise ValueError(f"an audit intent holds an unknown outcome {outcome!r}")
    return AuditEvent(
        action=obj["action"],
        actor=obj.get("actor"),
        org=obj.get("org"),
        targets=dict(obj.get("targets") or {}),
        outcome=outcome,
        request_id=obj.get("request_id"),
        detail=dict(obj.get("detail") or {}),
    )


class MemoryAudit:
    """An in-memory sink for tests of code that audits."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]
