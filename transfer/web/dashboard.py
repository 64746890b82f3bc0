"""The home page: what needs doing, by role, from what the services offer.

- DSL team: new concerns awaiting triage (status open until triaged; oldest first, with
  their age), open and overdue actions,
  leavers whose file deadline is near or past (the deadline alerts), files waiting in
  the inbox, and every other open alert.
- Head teacher: the school's concerns, most recent first, with their state.
- Staff: the concerns they logged, with their state.
- Administrator: accounts with sign-in trouble.
- Data protection officer: what the role is for (the audit pages come later).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from aiohttp import web

from schemas.records import ConcernSummary
from transfer.store.permissions import Permission, Role
from transfer.web.core import Visit, WebRoute, webapp
from transfer.web.rendering import ENGLAND

STATUS_TAGS: Final = {
    "open": ("Open", "govuk-tag--blue"),
    "under_review": ("Under review", "govuk-tag--yellow"),
    "monitoring": ("Monitoring", "govuk-tag--purple"),
    "closed": ("Closed", "govuk-tag--grey"),
}
ALERT_TAGS: Final = {
    "upcoming": ("Due soon", "govuk-tag--yellow"),
    "due": ("Due today", "govuk-tag--orange"),
    "overdue": ("Overdue", "govuk-tag--red"),
    "info": ("For information", "govuk-tag--grey"),
}
INBOX_STATES: Final = {"delivered": "Not opened yet", "viewed": "Opened, not decided"}
DEADLINE_PREFIX: Final = "transfer-deadline:"
#: How many concerns a list shows before "and N more".
LIST_LIMIT: Final = 20


@dataclass(frozen=True)
class ConcernRow:
    #: Each pupil's name and the address of their page.
    pupils: list[tuple[str, str]]
    category: str
    happened_at: datetime
    recorded_at: datetime
    status: tuple[str, str]
    #: The concern's own page.
    href: str


def _concern_rows(
    concerns: list[ConcernSummary], names: dict[str, str], labels: dict[str, str]
) -> list[ConcernRow]:
    return [
        ConcernRow(
            pupils=[
                (names.get(p, "A pupil no longer on roll"), f"/pupils/{p}") for p in c.pupil_ids
            ],
            category=labels.get(c.category, c.category.replace("_", " ").capitalize()),
            happened_at=c.happened_at,
            recorded_at=c.recorded_at,
            status=STATUS_TAGS.get(c.status, (c.status, "govuk-tag--grey")),
            href=f"/concerns/{c.id}/saved",
        )
        for c in concerns
    ]


def _name(p: Any) -> str:
    year = f" (Year {p.year_group})" if p.year_group else ""
    return f"{p.forename} {p.surname}{year}"


async def dashboard(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    actor = visit.actor
    now = app.accounts.now()
    today = now.astimezone(ENGLAND).date()
    context: dict[str, Any] = {
        "now": now,
        "today": today,
        "may_log": actor.has(Permission.RECORD_CONCERN),
        "readable": readable,
    }
    if actor.has(Permission.READ_PUPILS) and (
        actor.has(Permission.RECORD_CONCERN) or actor.has(Permission.READ_ALL_CONCERNS)
    ):
        labels = {c.key: c.label for c in await app.store.list_categories(actor)}
        names = {p.id: _name(p) for p in await app.store.list_pupils(actor)}
        if visit.in_dsl_team:
            waiting = await app.store.list_concerns(actor, status="open")
            waiting.sort(key=lambda c: c.recorded_at)
            context["open_concerns"] = _concern_rows(waiting[:LIST_LIMIT], names, labels)
            context["open_count"] = len(waiting)
        else:
            recent = await app.store.list_concerns(actor, limit=LIST_LIMIT)
            context["concerns"] = _concern_rows(recent, names, labels)
            context["concerns_heading"] = (
                "The school's concerns, most recent first"
                if actor.has(Permission.READ_ALL_CONCERNS)
                else "Concerns you logged, most recent first"
            )
    if actor.has(Permission.MANAGE_ACTIONS):
        actions = await app.store.open_actions(actor)
        # The person's own actions first, in each group (the rest in due-date order).
        actions.sort(key=lambda a: a.assignee_id != actor.staff_id)
        context["overdue_actions"] = [a for a in actions if a.due_on and a.due_on < today]
        context["open_actions"] = [a for a in actions if not (a.due_on and a.due_on < today)]
        context["mine"] = actor.staff_id
    if actor.has(Permission.HANDLE_ALERTS) and app.services.alerts is not None:
        alerts = await app.services.alerts.list(actor)
        context["deadlines"] = [a for a in alerts if a.key.startswith(DEADLINE_PREFIX)]
        context["alerts"] = [a for a in alerts if not a.key.startswith(DEADLINE_PREFIX)]
        context["alert_tags"] = ALERT_TAGS
    if actor.has(Permission.RECEIVE_TRANSFER) and app.services.inbox is not None:
        incoming = await app.services.inbox.list(actor, via="web")
        context["inbox"] = [i for i in incoming if i.state in INBOX_STATES]
        context["inbox_states"] = INBOX_STATES
    if actor.has(Permission.MANAGE_STAFF):
        context["sign_in_problems"] = await app.accounts.sign_in_problems(actor)
    context["is_auditor_only"] = visit.roles == frozenset({Role.AUDITOR})
    return app.page(request, "dashboard.html", visit, title="Home", **context)


#: A sentence that points at an address (the e-mail's link): the pages link instead.
_LINK_SENTENCE: Final = re.compile(r"\s*[^.]*?:\s*https?://\S+")


def readable(message: str) -> str:
    """An alert's message without the web address meant for the e-mail (never a raw id)."""
    return _LINK_SENTENCE.sub("", message).strip()


def due_text(due: date | None, today: date) -> str:
    if due is None:
        return "No due date"
    days = (due - today).days
    if days < 0:
        return f"{-days} day{'s' if days != -1 else ''} overdue"
    if days == 0:
        return "Due today"
    return f"Due in {days} day{'s' if days != 1 else ''}"


ROUTES: Final = (
    WebRoute(
        "GET",
        "/",
        dashboard,
        "Store.list_categories, Store.list_pupils, Store.list_concerns, Store.open_actions, "
        "Alerts.list, Inbox.list, Accounts.sign_in_problems",
        name="home",
    ),
)
