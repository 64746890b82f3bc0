"""Search pupils and concerns (name, UPN, category, date range, status), within what the
person may see: the services list only what their role allows (a teacher: the concerns
they logged; restricted categories only for those allowed), and this page filters those
lists. A GET form: it works without JavaScript and its results can be bookmarked."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from schemas.records import PupilRecord
from transfer.store.permissions import Permission
from transfer.web.core import FormErrors, Visit, WebRoute, webapp
from transfer.web.dashboard import STATUS_TAGS
from transfer.web.pupils import choosable_categories, pupil_name, pupil_ref
from transfer.web.words import BadDate, category_label, local_day, read_date

#: The most results of each kind a page lists.
LIMIT: Final = 50


def _matches(p: PupilRecord, words: list[str]) -> bool:
    text = f"{p.forename} {p.surname} {p.upn or ''}".lower()
    return all(w in text for w in words)


async def search(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    actor = visit.actor
    q = request.query
    typed = {k: q.get(k, "")[:100] for k in ("q", "category", "status", "from", "to")}
    errors = FormErrors()
    dates = {}
    for name, what in (("from", "The start date"), ("to", "The end date")):
        try:
            dates[name] = read_date(typed[name], what)
        except BadDate as err:
            errors.add(name, str(err))
    if dates.get("from") and dates.get("to") and dates["from"] > dates["to"]:  # type: ignore[operator]
        errors.add("to", "The end date must be the same as or after the start date")
    if typed["status"] and typed["status"] not in STATUS_TAGS:
        errors.add("status", "Choose a state from the list")
    asked = any(typed.values())
    words = typed["q"].lower().split()
    labels = {c.key: c.label for c in await app.store.list_categories(actor)}
    pupils = await app.store.list_pupils(actor)
    context: dict[str, Any] = {
        "typed": typed,
        "asked": asked,
        "statuses": STATUS_TAGS,
        "categories": await choosable_categories(request, visit),
    }
    reads_concerns = actor.has(Permission.RECORD_CONCERN) or actor.has(Permission.READ_ALL_CONCERNS)
    context["reads_concerns"] = reads_concerns
    if asked and not errors:
        concern_filters = typed["category"] or typed["status"] or typed["from"] or typed["to"]
        found = [p for p in pupils if words and _matches(p, words)] if not concern_filters else []
        context["pupils"] = [
            {"name": pupil_name(p), "upn": p.upn, "href": f"/pupils/{pupil_ref(p)}", "dob": p.dob}
            for p in found[:LIMIT]
        ]
        context["pupil_count"] = len(found)
        if reads_concerns:
            status: Any = typed["status"] or None
            concerns = await app.store.list_concerns(actor, status=status)
            named = {p.id: p for p in pupils}
            wanted = {p.id for p in pupils if _matches(p, words)} if words else None
            rows = []
            for c in concerns:
                if wanted is not None and not set(c.pupil_ids) & wanted:
                    continue
                if typed["category"] and c.category != typed["category"]:
                    continue
                day = local_day(c.happened_at)
                if dates.get("from") and day < dates["from"]:  # type: ignore[operator]
                    continue
                if dates.get("to") and day > dates["to"]:  # type: ignore[operator]
                    continue
                rows.append(
                    {
                        "href": f"/concerns/{c.id}",
                        "pupils": ", ".join(pupil_name(named[p]) for p in c.pupil_ids if p in named)
                        or "A pupil no longer on roll",
                        "category": category_label(c.category, labels),
                        "happened_at": c.happened_at,
                        "status": STATUS_TAGS.get(c.status, (c.status, "govuk-tag--grey")),
                    }
                )
            context["concerns"] = rows[:LIMIT]
            context["concern_count"] = len(rows)
    return app.page(
        request,
        "search.html",
        visit,
        title="Search",
        errors=errors,
        status=400 if errors else 200,
        **context,
    )


ROUTES: Final = (
    WebRoute("GET", "/search", search, "Store.list_pupils, Store.list_concerns", name="search"),
)
