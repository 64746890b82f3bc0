"""Request ids: one per HTTP request, in the logs, the response and every audit event.

The HTTP faces (staff API, peer server, web app) set :data:`REQUEST_ID` for the
duration of a request; it lives beside the audit log because no service may import a face.
Wrap the node's audit sink in :class:`RequestIdAudit` before handing it to the
store and the accounts service, so that their events carry the id too.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from contextvars import ContextVar
from datetime import datetime

from schemas.auditing import AuditEvent, AuditSink, IntentSink

REQUEST_ID: ContextVar[str | None] = ContextVar("handover_request_id", default=None)
HEADER = "X-Request-Id"
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._-]{8,64}")


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-Id`` if it is a plain token, otherwise a fresh one."""
    if header is not None and _ACCEPTABLE.fullmatch(header):
        return header
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return REQUEST_ID.get()


class RequestIdAudit:
    """An :class:`AuditSink` that stamps the current request id on events that lack one."""

    def __init__(self, inner: AuditSink) -> None:
        self.inner = inner

    async def record(self, event: AuditEvent) -> None:
        rid = REQUEST_ID.get()
        if rid is not None and event.request_id is None:
            event = dataclasses.replace(event, request_id=rid)
        await self.inner.record(event)

    async def record_intent(self, event: AuditEvent, intent_id: str, at: datetime) -> bool:
        if not isinstance(self.inner, IntentSink):
            return False
        rid = REQUEST_ID.get()
        if rid is not None and event.request_id is None:
            event = dataclasses.replace(event, request_id=rid)
        return await self.inner.record_intent(event, intent_id, at)
