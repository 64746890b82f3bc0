"""The DSL team's work on a concern: a triage decision and its reason (a decision not to
refer included), actions with an owner chosen by name and a due date, contacts with
outside agencies, marking an action done; and changing a concern's text (its author or
the DSL team), the earlier text kept.

Each form is a page of its own (POST, then redirect to the concern's page). A mistake
comes back next to its field with what was typed; nothing is saved half-done (the store
saves a record in one transaction). Each form carries its own reference (a UUID made
when the form is shown), which becomes the new record's id: a form sent twice is stored
once (the store answers the second time with the first record). The services decide who
may: the form pages ask the same rule (:func:`transfer.store.permissions.require`) before
showing a form, so that a teacher who types the address gets the refusal page.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, ValidationError

from schemas.records import ConcernRecord, NewAction, NewAmendment, NewContact, NewTriage
from transfer.errors import InputError
from transfer.store.people import role_label
from transfer.store.permissions import Permission, require
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.pupils import UUID
from transfer.web.rendering import redirect
from transfer.web.tokens import KeptForm
from transfer.web.words import DECISIONS, BadDate, Values, moment, read_date, read_time

SUBMISSION: Final = "submission"
KEPT_NOTICE: Final = (
    "You were signed out, so nothing was saved. What you typed has been kept: check it "
    "and save it again."
)
TRIAGE_FIELDS: Final = ("decision", "reason", SUBMISSION)
ACTION_FIELDS: Final = ("text", "owner", "due", SUBMISSION)
CONTACT_FIELDS: Final = ("agency", "day", "time", "outcome", SUBMISSION)
AMEND_FIELDS: Final = ("account", "location", "people_involved", "reason", SUBMISSION)


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] if text else text


def _model(
    model: type[BaseModel], errors: FormErrors, fields: dict[str, str], **values: Any
) -> Any:
    """The service's input model, or the messages by field (in words, never pydantic's)."""
    try:
        return model(**values)
    except ValidationError as err:
        for problem in err.errors():
            name = str(problem["loc"][0]) if problem["loc"] else ""
            field = fields.get(name, name)
            if problem["type"] in ("string_too_short", "missing"):
                errors.add(field, "Enter this")
            elif problem["type"] == "string_too_long":
                errors.add(field, "This is too long: shorten it")
            else:
                errors.add(field, _sentence(str(problem.get("msg", "This is not valid"))))
        return None


def _values(visit_form: Any, names: tuple[str, ...]) -> Values:
    values = Values.of(visit_form, names)
    if not values.fields.get(SUBMISSION):
        values.fields[SUBMISSION] = str(uuid.uuid4())
    return values


def _concern_id_of(path: str) -> str:
    """The concern's id in a kept form's path (``/concerns/<id>/...``)."""
    return path.strip("/").split("/")[1]


async def _concern(request: web.Request, visit: Visit, concern_id: str) -> ConcernRecord:
    return await webapp(request).store.get_concern(visit.actor, concern_id)


FormShow = Callable[..., Awaitable[web.StreamResponse]]


# ------------------------------------------------------------------ triage decision


async def _triage_page(
    request: web.Request,
    visit: Visit,
    concern_id: str,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    require(visit.actor, Permission.TRIAGE)
    concern = await _concern(request, visit, concern_id)
    return webapp(request).page(
        request,
        "triage_form.html",
        visit,
        title="Record a triage decision",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        concern=concern,
        decisions=DECISIONS,
        notice=notice,
    )


async def show_triage(request: web.Request, visit: Visit) -> web.StreamResponse:
    cid = request.match_info["concern_id"]
    return await _triage_page(request, visit, cid, _values({}, TRIAGE_FIELDS))


async def kept_triage(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _triage_page(
        request, visit, _concern_id_of(kept.path), _values(kept, TRIAGE_FIELDS), notice=KEPT_NOTICE
    )


async def save_triage(request: web.Request, visit: Visit) -> web.StreamResponse:
    cid = request.match_info["concern_id"]
    values = _values(request[FORM_KEY], TRIAGE_FIELDS)
    errors = FormErrors()
    if values.decision not in DECISIONS:
        errors.add("decision", "Select the decision")
    if not values.reason.strip():
        errors.add(
            "reason",
            "Say why: the reason is kept with the decision (a decision not to refer needs one too)",
        )
    data = None
    if not errors:
        data = _model(NewTriage, errors, {}, decision=values.decision, reason=values.reason.strip())
    if errors or data is None:
        return await _triage_page(request, visit, cid, values, errors=errors)
    await webapp(request).store.triage_concern(visit.actor, cid, data, record_id=values[SUBMISSION])
    return redirect(f"/concerns/{cid}?done=triage#triage")


# ------------------------------------------------------------------ actions


async def _action_page(
    request: web.Request,
    visit: Visit,
    concern_id: str,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    owners = await app.store.action_owners(visit.actor)
    concern = await _concern(request, visit, concern_id)
    return app.page(
        request,
        "action_form.html",
        visit,
        title="Add an action",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        concern=concern,
        owners=[(p.id, f"{p.name} ({role_label(p.role)})" if p.role else p.name) for p in owners],
        notice=notice,
    )


async def show_action(request: web.Request, visit: Visit) -> web.StreamResponse:
    cid = request.match_info["concern_id"]
    return await _action_page(request, visit, cid, _values({}, ACTION_FIELDS))


async def kept_action(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _action_page(
        request, visit, _concern_id_of(kept.path), _values(kept, ACTION_FIELDS), notice=KEPT_NOTICE
    )


async def save_action(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    cid = request.match_info["concern_id"]
    values = _values(request[FORM_KEY], ACTION_FIELDS)
    errors = FormErrors()
    owners = {p.id for p in await app.store.action_owners(visit.actor)}
    if not values.text.strip():
        errors.add("text", "Enter what needs to be done")
    if values.owner and values.owner not in owners:
        errors.add("owner", "Choose someone from the list")
    due = None
    try:
        due = read_date(values.due, "The due date")
    except BadDate as err:
        errors.add("due", str(err))
    today = app.accounts.now().astimezone(_england()).date()
    if due is not None and due < today:
        errors.add("due", "The due date must be today or later")
    data = None
    if not errors:
        data = _model(
            NewAction,
            errors,
            {},
            text=values.text.strip(),
            assignee_id=values.owner or None,
            due_on=due,
        )
    if errors or data is None:
        return await _action_page(request, visit, cid, values, errors=errors)
    await app.store.add_action(visit.actor, cid, data, record_id=values[SUBMISSION])
    return redirect(f"/concerns/{cid}?done=action#actions")


def _england() -> Any:
    from transfer.web.rendering import ENGLAND

    return ENGLAND


async def action_done(request: web.Request, visit: Visit) -> web.StreamResponse:
    done = await webapp(request).store.complete_action(visit.actor, request.match_info["action_id"])
    return redirect(f"/concerns/{done.concern_id}?done=done#actions")


# ------------------------------------------------------------------ contacts


async def _contact_page(
    request: web.Request,
    visit: Visit,
    concern_id: str,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    require(visit.actor, Permission.MANAGE_CONTACTS)
    concern = await _concern(request, visit, concern_id)
    return webapp(request).page(
        request,
        "contact_form.html",
        visit,
        title="Record a contact with an agency",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        concern=concern,
        notice=notice,
    )


async def show_contact(request: web.Request, visit: Visit) -> web.StreamResponse:
    cid = request.match_info["concern_id"]
    return await _contact_page(request, visit, cid, _values({}, CONTACT_FIELDS))


async def kept_contact(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _contact_page(
        request, visit, _concern_id_of(kept.path), _values(kept, CONTACT_FIELDS), notice=KEPT_NOTICE
    )


async def save_contact(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    cid = request.match_info["concern_id"]
    values = _values(request[FORM_KEY], CONTACT_FIELDS)
    errors = FormErrors()
    if not values.agency.strip():
        errors.add("agency", "Enter the agency, for example Bristol MASH")
    day = at = None
    try:
        day = read_date(values.day, "The date")
        if day is None:
            errors.add("day", "Enter the date of the contact")
    except BadDate as err:
        errors.add("day", str(err))
    try:
        at = read_time(values.time, "The time")
    except BadDate as err:
        errors.add("time", str(err))
    when = moment(day, at) if day is not None else None
    if when is not None and when > app.accounts.now() + timedelta(minutes=5):
        errors.add(
            "day" if day and day > app.accounts.now().date() else "time",
            "The contact cannot be in the future",
        )
    data = None
    if not errors:
        data = _model(
            NewContact,
            errors,
            {"contacted_at": "day"},
            agency=values.agency.strip(),
            contacted_at=when,
            outcome=values.outcome.strip(),
        )
    if errors or data is None:
        return await _contact_page(request, visit, cid, values, errors=errors)
    await app.store.add_contact(visit.actor, cid, data, record_id=values[SUBMISSION])
    return redirect(f"/concerns/{cid}?done=contact#contacts")


# ------------------------------------------------------------------ amending a concern


async def _amend_page(
    request: web.Request,
    visit: Visit,
    concern_id: str,
    values: Values | None,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    concern = await _concern(request, visit, concern_id)
    if not (visit.actor.has(Permission.TRIAGE) or concern.recorded_by == visit.actor.staff_id):
        require(visit.actor, Permission.TRIAGE)  # the refusal page, in the domain's words
    if values is None:
        values = _values(
            {
                "account": concern.account,
                "location": concern.location,
                "people_involved": concern.people_involved,
            },
            AMEND_FIELDS,
        )
    return webapp(request).page(
        request,
        "amend_form.html",
        visit,
        title="Change the text of this concern",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        concern=concern,
        notice=notice,
    )


async def show_amend(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _amend_page(request, visit, request.match_info["concern_id"], None)


async def kept_amend(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _amend_page(
        request, visit, _concern_id_of(kept.path), _values(kept, AMEND_FIELDS), notice=KEPT_NOTICE
    )


async def save_amend(request: web.Request, visit: Visit) -> web.StreamResponse:
    cid = request.match_info["concern_id"]
    values = _values(request[FORM_KEY], AMEND_FIELDS)
    errors = FormErrors()
    if not values.account.strip():
        errors.add("account", "Enter what was seen or said")
    if not values.reason.strip():
        errors.add("reason", "Say why the text is changing (this is kept with the change)")
    data = None
    if not errors:
        data = _model(
            NewAmendment,
            errors,
            {},
            account=values.account.strip(),
            location=values.location.strip(),
            people_involved=values.people_involved.strip(),
            reason=values.reason.strip(),
        )
    if errors or data is None:
        return await _amend_page(request, visit, cid, values, errors=errors)
    try:
        await webapp(request).store.amend_concern(
            visit.actor, cid, data, record_id=values[SUBMISSION]
        )
    except InputError as err:
        errors.add("account", _sentence(err.diagnostics()))
        return await _amend_page(request, visit, cid, values, errors=errors)
    return redirect(f"/concerns/{cid}?done=amended#amendments")


_C: Final = f"/concerns/{{concern_id:{UUID}}}"
ROUTES: Final = (
    WebRoute("GET", f"{_C}/triage", show_triage, "Store.get_concern", name="triage"),
    WebRoute("POST", f"{_C}/triage", save_triage, "Store.triage_concern", form=kept_triage),
    WebRoute("GET", f"{_C}/actions/new", show_action, "Store.action_owners, Store.get_concern"),
    WebRoute("POST", f"{_C}/actions/new", save_action, "Store.add_action", form=kept_action),
    WebRoute("POST", f"/actions/{{action_id:{UUID}}}/done", action_done, "Store.complete_action"),
    WebRoute("GET", f"{_C}/contacts/new", show_contact, "Store.get_concern"),
    WebRoute("POST", f"{_C}/contacts/new", save_contact, "Store.add_contact", form=kept_contact),
    WebRoute("GET", f"{_C}/amend", show_amend, "Store.get_concern"),
    WebRoute("POST", f"{_C}/amend", save_amend, "Store.amend_concern", form=kept_amend),
)
