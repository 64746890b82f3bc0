"""The Audit area (the DPO, and the DSL team, who hold ``audit.read``).

"Who has looked at this child's file?" (``/audit``): the organisation's audit trail,
narrowed by pupil (chosen by name), person, what was done and dates, newest first, a page
at a time, in words. The log's integrity (``/audit/integrity``): verification run from
the page, the latest signed checkpoint, the checkpoints partner schools witnessed, and
an export for an outside auditor streamed to the browser. Everything comes from
:class:`transfer.audit.trail.AuditTrail`, which checks the permission and audits the
reading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from transfer.audit.actions import ACTION_GROUPS
from transfer.audit.trail import AuditTrail, PupilChoice, StaffChoice, TrailFilters
from transfer.audit.verifier import TamperError
from transfer.errors import HandoverError, NotFoundError
from transfer.web.core import FormErrors, Visit, WebRoute, webapp
from transfer.web.words import BadDate, moment, read_date

log = logging.getLogger("transfer.web")

#: How a partner's checkpoint checked against those held before, in words.
WITNESS_WORDS: Final = {
    "first": "The first one held",
    "same": "The same as one held",
    "consistent": "Proved to extend the one held",
    "unproven": "Newer; not proved yet",
    "older": "Older than one held; agrees",
    "conflict": "Contradicts one held: kept as evidence",
}
#: The search columns kept beside each entry, in words (what verification may name).
COLUMN_WORDS: Final = {
    "at": "The time stored beside the entry",
    "action": "What was done, as stored beside the entry",
    "actor": "Who did it, as stored beside the entry",
    "org": "The organisation stored beside the entry",
    "pupil": "The pupil stored beside the entry",
    "person": "The member of staff stored beside the entry",
}


def trail_service(request: web.Request) -> AuditTrail:
    trail = webapp(request).services.trail
    if trail is None:
        raise NotFoundError("the audit pages are not available on this node")
    return trail


@dataclass
class Typed:
    """The trail's filters as typed (kept in the page's links)."""

    pupil: str = ""
    person: str = ""
    action: str = ""
    start: str = ""
    end: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def query(self, page: int = 1) -> str:
        pairs = [
            (k, v)
            for k, v in (
                ("pupil", self.pupil),
                ("person", self.person),
                ("action", self.action),
                ("from", self.start),
                ("to", self.end),
            )
            if v
        ]
        if page > 1:
            pairs.append(("page", str(page)))
        return "?" + urlencode(pairs) if pairs else ""

    @property
    def any(self) -> bool:
        return bool(self.pupil or self.person or self.action or self.start or self.end)


def _typed(query: Any) -> Typed:
    return Typed(
        pupil=query.get("pupil", "").strip()[:100],
        person=query.get("person", "").strip()[:100],
        action=query.get("action", "").strip()[:40],
        start=query.get("from", "").strip()[:40],
        end=query.get("to", "").strip()[:40],
    )


async def trail_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    trail = trail_service(request)
    actor = visit.actor
    typed = _typed(request.query)
    errors = FormErrors()
    staff = await trail.staff(actor)
    pupil: PupilChoice | None = None
    choices: list[PupilChoice] = []
    if typed.pupil:
        found = await trail.find_pupils(actor, typed.pupil)
        exact = [p for p in found if p.upn == typed.pupil.upper()]
        if exact or len(found) == 1:
            pupil = (exact or found)[0]
        elif not found:
            errors.add(
                "pupil",
                f"No pupil's name or UPN matches '{typed.pupil}'. Check the "
                "spelling, or try the surname only.",
            )
        else:
            choices = found
    person: StaffChoice | None = None
    if typed.person:
        person = next((s for s in staff if s.username == typed.person), None)
        if person is None:
            errors.add("person", "Choose a member of staff from the list")
    if typed.action and typed.action not in ACTION_GROUPS:
        errors.add("action", "Choose what was done from the list")
    dates = {}
    for name, value, what in (
        ("from", typed.start, "The start date"),
        ("to", typed.end, "The end date"),
    ):
        try:
            dates[name] = read_date(value, what)
        except BadDate as err:
            errors.add(name, str(err))
    start, end = dates.get("from"), dates.get("to")
    if start and end and start > end:
        errors.add("to", "The end date must be the same as or after the start date")
    context: dict[str, Any] = {
        "typed": typed,
        "staff": staff,
        "groups": ACTION_GROUPS,
        "pupil": pupil,
        "person": person,
        "choices": [(p, "/audit" + replace(typed, pupil=p.upn).query()) for p in choices],
    }
    if not errors and not choices:
        filters = TrailFilters(
            pupil=pupil,
            person=person,
            action=typed.action,
            since=moment(start, None) if start else None,
            until=moment(end + timedelta(days=1), None) if end else None,
        )
        try:
            page_number = max(1, int(request.query.get("page", "1")))
        except ValueError:
            page_number = 1
        try:
            found_page = await trail.search(actor, filters, page=page_number)
        except TamperError as err:
            context["tampered"] = err.message
        else:
            context["found"] = found_page
            context["previous_href"] = (
                "/audit" + typed.query(found_page.page - 1) if found_page.page > 1 else ""
            )
            context["next_href"] = (
                "/audit" + typed.query(found_page.page + 1)
                if found_page.page < found_page.pages
                else ""
            )
    title = "Who has looked at this child's file?"
    if pupil is not None:
        title = f"Who has looked at {pupil.name}'s file?"
    return app.page(
        request,
        "audit_trail.html",
        visit,
        title=title,
        errors=errors,
        status=400 if errors else 200,
        **context,
    )


async def integrity_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    found = await trail_service(request).integrity(visit.actor)
    return app.page(
        request,
        "audit_integrity.html",
        visit,
        title="The audit log's integrity",
        integrity=found,
        ours=[w for w in found.witnessed if w.ours],
        theirs=[w for w in found.witnessed if not w.ours],
        witness_words=WITNESS_WORDS,
    )


async def verify(request: web.Request, visit: Visit) -> web.StreamResponse:
    """Run ``audit verify`` and say what it found (the page is the answer, not a redirect:
    each run is a new check, and reloading it asks before checking again)."""
    app = webapp(request)
    result = await trail_service(request).verify(visit.actor)
    return app.page(
        request,
        "audit_verified.html",
        visit,
        title="The audit log is intact" if result.intact else "The audit log has been changed",
        result=result,
        column_words=COLUMN_WORDS,
    )


async def export(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The export for an outside auditor, streamed as a tar archive while it is built."""
    app = webapp(request)
    made = await trail_service(request).export(visit.actor, at=app.accounts.now())
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": f'attachment; filename="{made.name}.tar"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    try:
        async for piece in made.chunks:
            await response.write(piece)
    except HandoverError as err:
        # The headers are gone: cut the connection so the browser never keeps a whole file.
        log.error("an audit export stopped while streaming: %s", err.diagnostics())
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


ROUTES: Final = (
    WebRoute(
        "GET",
        "/audit",
        trail_page,
        "AuditTrail.staff, AuditTrail.find_pupils, AuditTrail.search",
        name="audit",
    ),
    WebRoute(
        "GET", "/audit/integrity", integrity_page, "AuditTrail.integrity", name="audit_integrity"
    ),
    WebRoute("POST", "/audit/verify", verify, "AuditTrail.verify", name="audit_verify"),
    WebRoute("POST", "/audit/export", export, "AuditTrail.export", name="audit_export"),
)
