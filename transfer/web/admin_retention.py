"""Administration: retention (the DSL's ``retention.run``; no concern content).

The pupils due for erasure by the school's policy (date of birth + 25 years unless the
DSL set another), and those due within the year; erasing one now after a confirmation
(``Store.erase_pupil``: the pupil's data key is destroyed, so every sealed record of
theirs is gone, backups included); and afterwards what was erased: the pupil's
reference, when, by whom or by the retention sweep, and how many records of each kind
(never what they said).
"""

from __future__ import annotations

from datetime import date
from typing import Final

from aiohttp import web

from schemas.records import PupilRecord, TombstoneRecord
from transfer.errors import NotFoundError
from transfer.store.permissions import ROLE_LABELS, Permission, PermissionDenied, Role
from transfer.web.admin_staff import admin_sections
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.rendering import redirect

#: How far ahead the page looks for pupils coming up for erasure.
AHEAD_DAYS: Final = 366
COUNTS: Final = {
    "concerns": "Concerns",
    "concerns_deleted": "Concerns about nobody else, deleted",
    "sealed_fields": "Sealed fields",
    "documents": "Documents",
    "body_map_marks": "Body map marks",
    "pupil_events": "Transfers and referrals",
}


def reference(pupil_id: str) -> str:
    """A pupil's reference that outlives their name and UPN (the start of their record's id,
    upper case): enough to match an erasure to the list it was on, nothing about them."""
    return pupil_id.replace("-", "")[:8].upper()


def _need(visit: Visit) -> None:
    if not visit.actor.has(Permission.RUN_RETENTION):
        raise PermissionDenied("retention is the designated safeguarding lead's")


async def _who(request: web.Request, visit: Visit, tombs: list[TombstoneRecord]) -> dict[str, str]:
    people = await webapp(request).store.people_named(visit.actor, (t.erased_by for t in tombs))
    names = {p.id: p.name + (f" ({ROLE_LABELS[Role(p.role)]})" if p.role else "") for p in people}
    names["retention"] = "The retention sweep (automatic)"
    return names


async def retention(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    _need(visit)
    due = await app.store.due_for_erasure(visit.actor, within_days=AHEAD_DAYS)
    today = app.accounts.now().date()
    tombs = sorted(await app.store.tombstones(visit.actor), key=lambda t: t.erased_at, reverse=True)
    try:
        policy = await app.store.retention_policy(visit.actor)
    except NotFoundError:
        policy = None
    done = ""
    if request.query.get("done") == "erased":
        ref = request.query.get("ref", "")[:8]
        done = f"The records of pupil {ref} have been erased. What was erased is listed below."
    return app.page(
        request,
        "admin_retention.html",
        visit,
        title="Retention",
        policy=policy,
        due_now=[(p, d) for p, d in due if d <= today],
        due_soon=[(p, d) for p, d in due if d > today],
        tombs=tombs,
        who=await _who(request, visit, tombs),
        reference=reference,
        counts=COUNTS,
        admin_here="/admin/retention",
        admin_sections=admin_sections(visit),
        done=done,
    )


async def _due_pupil(request: web.Request, visit: Visit) -> tuple[PupilRecord, date]:
    pupil_id = request.match_info["pupil_id"]
    for pupil, when in await webapp(request).store.due_for_erasure(
        visit.actor, within_days=AHEAD_DAYS
    ):
        if pupil.id == pupil_id:
            return pupil, when
    raise NotFoundError("no such pupil due for erasure")


async def _confirm_page(
    request: web.Request, visit: Visit, errors: FormErrors | None = None
) -> web.StreamResponse:
    _need(visit)
    pupil, when = await _due_pupil(request, visit)
    return webapp(request).page(
        request,
        "admin_erase.html",
        visit,
        title=f"Erase {pupil.forename} {pupil.surname}'s records?",
        pupil=pupil,
        when=when,
        ref=reference(pupil.id),
        errors=errors,
        status=400 if errors else 200,
    )


async def show_erase(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _confirm_page(request, visit)


async def erase(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    _need(visit)
    if request[FORM_KEY].get("confirm") != "yes":
        errors = FormErrors()
        errors.add("confirm", "Tick the box to confirm the records are to be erased")
        return await _confirm_page(request, visit, errors)
    pupil, _ = await _due_pupil(request, visit)
    await app.store.erase_pupil(visit.actor, pupil.id)
    return redirect(f"/admin/retention?done=erased&ref={reference(pupil.id)}")


ROUTES: Final = (
    WebRoute(
        "GET",
        "/admin/retention",
        retention,
        "Store.due_for_erasure, Store.tombstones, Store.retention_policy",
        name="admin-retention",
    ),
    WebRoute("GET", "/admin/retention/{pupil_id}/erase", show_erase, "Store.due_for_erasure"),
    WebRoute("POST", "/admin/retention/{pupil_id}/erase", erase, "Store.erase_pupil"),
)
