"""Requests for a pupil's file between schools: asking a new pupil's previous school for
their file (the school chosen by name from the signed directory), and answering the
requests other schools send (send the file, with a fresh authenticator code, or decline
with a reason the other school's DSL reads).

The pages call :class:`transfer.exchange.requests.TransferRequests`, the service the API
calls: it checks the permissions (asking: ``transfer.receive``; answering:
``transfer.send``) and the organisation, audits every step, and keeps what is owed to the
other node until it is delivered (a first try is made at once, as the API does).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from schemas.peer import MAX_NOTE, MAX_REASON
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.exchange.requests import TransferRequestRecord, TransferRequests
from transfer.store.permissions import Permission, require
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebDirectory, WebRoute, webapp
from transfer.web.pupils import pupil_name, pupil_ref
from transfer.web.rendering import long_date, redirect
from transfer.web.stepup import CODE_FIELD, check_code
from transfer.web.tokens import KeptForm
from transfer.web.words import Values

REQUEST: Final = "{request_id:[0-9a-fA-F-]{36}}"
NEW_FIELDS: Final = ("upn", "school", "note")
SEND_FIELDS: Final = ("other_upn",)
DECLINE_FIELDS: Final = ("reason",)
KEPT_NOTICE: Final = (
    "You were signed out, so nothing was sent. What you typed has been kept: check it and "
    "send it again."
)
#: A request's state in words, by side, with the colour of its tag.
SENT_STATES: Final = {
    "pending": ("Not delivered yet", "govuk-tag--grey"),
    "sent": ("Waiting for their answer", "govuk-tag--yellow"),
    "authorised": ("They are sending the file", "govuk-tag--green"),
    "declined": ("Declined", "govuk-tag--red"),
    "failed": ("Could not be delivered", "govuk-tag--red"),
}
RECEIVED_STATES: Final = {
    "received": ("Waiting for your answer", "govuk-tag--yellow"),
    "authorising": ("Being answered", "govuk-tag--grey"),
    "authorised": ("File sent", "govuk-tag--green"),
    "declined": ("Declined", "govuk-tag--red"),
}


def service(request: web.Request) -> TransferRequests:
    found = webapp(request).services.transfer_requests
    if found is None:
        raise NotFoundError("this node does not handle requests for files")
    return found


def directory(request: web.Request) -> WebDirectory:
    found = webapp(request).services.directory
    if found is None:
        raise NotFoundError("this node holds no directory")
    return found


async def school_names(request: web.Request) -> dict[str, str]:
    """Every school in the signed directory, by id: its name (and URN when it has one)."""
    out = {}
    for e in await directory(request).entries():
        if e.kind == "school":
            out[e.org_id] = e.name + (f" (URN {e.urn})" if e.urn else "")
    return out


def _named(names: dict[str, str], org_id: str) -> str:
    return names.get(org_id, f"a school not in your directory ({org_id})")


def _about(r: TransferRequestRecord) -> str:
    born = f", born {long_date(r.dob)}" if r.dob else ""
    return f"{r.forename} {r.surname}{born}, UPN {r.upn}"


def _row(r: TransferRequestRecord, names: dict[str, str]) -> dict[str, Any]:
    received = r.side == "received"
    states = RECEIVED_STATES if received else SENT_STATES
    other = r.requester_org_id if received else r.holder_org_id
    return {
        "record": r,
        "school": _named(names, other),
        "about": _about(r),
        "state": states.get(r.state, (r.state, "govuk-tag--grey")),
        "open": received and r.state == "received",
    }


# ------------------------------------------------------------------ the list


async def requests_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    records = await service(request).list(visit.actor)
    names = await school_names(request)
    received = [_row(r, names) for r in records if r.side == "received"]
    received.sort(key=lambda row: not row["open"])  # waiting for an answer first
    done = {
        "asked": "Your request has been sent. You will be told when the school answers.",
        "asked-later": "Your request has been kept and will be sent when the other school's "
        "node can be reached.",
        "sent": "The request has been answered: the file is on its way to the school.",
        "declined": "The request has been declined. The school will read your reason.",
    }
    return app.page(
        request,
        "requests.html",
        visit,
        title="Requests for files",
        received=received,
        sent=[_row(r, names) for r in records if r.side == "sent"],
        done=done.get(request.query.get("done", "")),
    )


# ------------------------------------------------------------------ asking for a file


async def _new_page(
    request: web.Request,
    visit: Visit,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    require(visit.actor, Permission.RECEIVE_TRANSFER)
    names = await school_names(request)
    own = visit.actor.org_id
    schools = sorted(((k, v) for k, v in names.items() if k != own), key=lambda kv: kv[1])
    pupil = None
    if values.upn:
        try:
            found = await app.store.find_pupil(visit.actor, values.upn.strip().upper())
        except (InputError, NotFoundError):
            found = None
        pupil = pupil_name(found) if found else None
    return app.page(
        request,
        "request_new.html",
        visit,
        title="Ask a previous school for a pupil's file",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        schools=schools,
        pupil=pupil,
        notice=notice,
    )


async def show_new(request: web.Request, visit: Visit) -> web.StreamResponse:
    values = Values.of({"upn": request.query.get("pupil", "")[:20]}, NEW_FIELDS)
    return await _new_page(request, visit, values)


async def kept_new(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _new_page(request, visit, Values.of(kept, NEW_FIELDS), notice=KEPT_NOTICE)


async def ask(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    values = Values.of(request[FORM_KEY], NEW_FIELDS)
    errors = FormErrors()
    require(visit.actor, Permission.RECEIVE_TRANSFER)
    upn = values.upn.strip().upper()
    if not upn:
        errors.add("upn", "Enter the pupil's UPN")
    else:
        try:
            await app.store.find_pupil(visit.actor, upn)
        except (InputError, NotFoundError):
            errors.add("upn", "No pupil on your roll has this UPN: check it")
    names = await school_names(request)
    if not values.school:
        errors.add("school", "Choose the school the pupil came from")
    elif values.school not in names or values.school == visit.actor.org_id:
        errors.add("school", "Choose a school from the list")
    if len(values.note.strip()) > MAX_NOTE:
        errors.add("note", f"The note must be {MAX_NOTE} characters or fewer")
    if errors:
        return await _new_page(request, visit, values, errors=errors)
    requests = service(request)
    try:
        record = await requests.create(
            visit.actor,
            upn=upn,
            from_org_id=values.school,
            note=values.note.strip() or None,
            via="web",
        )
    except ConflictError:
        errors.add(
            "school",
            "You have already asked this school for this pupil's file: "
            "wait for their answer (see Requests for files)",
        )
        return await _new_page(request, visit, values, errors=errors)
    except InputError as err:
        errors.add("note", _sentence(err.diagnostics()))
        return await _new_page(request, visit, values, errors=errors)
    delivered = await requests.send_one(record.request_id, record.org_id)
    return redirect("/requests?done=" + ("asked" if delivered else "asked-later"))


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] if text else text


# ------------------------------------------------------------------ answering one


async def _request_page(
    request: web.Request,
    visit: Visit,
    rid: str,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    record = await service(request).get(visit.actor, rid)
    names = await school_names(request)
    ours = None
    if record.pupil_id is not None:
        try:
            p = await app.store.get_pupil(visit.actor, record.pupil_id)
            ours = {"name": pupil_name(p), "href": f"/pupils/{pupil_ref(p)}"}
        except NotFoundError:
            ours = None
    return app.page(
        request,
        "request.html",
        visit,
        title="Request for a pupil's file",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        row=_row(record, names),
        record=record,
        ours=ours,
        notice=notice,
        may_answer=record.side == "received"
        and record.state == "received"
        and visit.actor.has(Permission.SEND_TRANSFER),
    )


async def request_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _request_page(
        request, visit, request.match_info["request_id"], Values.of({}, SEND_FIELDS)
    )


async def kept_send(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    rid = kept.path.strip("/").split("/")[1]
    return await _request_page(
        request, visit, rid, Values.of(kept, SEND_FIELDS), notice=KEPT_NOTICE
    )


async def send_file(request: web.Request, visit: Visit) -> web.StreamResponse:
    """Authorise the request: the pupil's file is queued for the school (a fresh code)."""
    app = webapp(request)
    rid = request.match_info["request_id"]
    form = request[FORM_KEY]
    values = Values.of(form, SEND_FIELDS)
    errors = FormErrors()
    requests = service(request)
    record = await requests.get(visit.actor, rid)
    require(visit.actor, Permission.SEND_TRANSFER)
    chosen: str | None = None
    if record.pupil_id is None:
        upn = values.other_upn.strip().upper()
        if not upn:
            errors.add(
                "other_upn",
                "Enter the UPN of the pupil this request is about, or decline the request",
            )
        else:
            try:
                chosen = (await app.store.find_pupil(visit.actor, upn)).id
            except (InputError, NotFoundError):
                errors.add("other_upn", "No pupil on your roll has this UPN: check it")
    if not errors:
        await check_code(app, visit, form.get(CODE_FIELD, ""), errors)
    if errors:
        return await _request_page(request, visit, rid, values, errors=errors)
    done = await requests.authorise(visit.actor, rid, pupil_id=chosen, via="web")
    await requests.send_one(done.request_id, done.org_id)
    return redirect("/requests?done=sent")


async def _decline_page(
    request: web.Request,
    visit: Visit,
    rid: str,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    record = await service(request).get(visit.actor, rid)
    require(visit.actor, Permission.SEND_TRANSFER)
    if record.side != "received" or record.state != "received":
        raise NotFoundError("this request is not waiting for your answer")
    names = await school_names(request)
    return webapp(request).page(
        request,
        "request_decline.html",
        visit,
        title="Decline this request",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        row=_row(record, names),
        record=record,
        notice=notice,
    )


async def show_decline(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _decline_page(
        request, visit, request.match_info["request_id"], Values.of({}, DECLINE_FIELDS)
    )


async def kept_decline(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    rid = kept.path.strip("/").split("/")[1]
    return await _decline_page(
        request, visit, rid, Values.of(kept, DECLINE_FIELDS), notice=KEPT_NOTICE
    )


async def decline(request: web.Request, visit: Visit) -> web.StreamResponse:
    rid = request.match_info["request_id"]
    values = Values.of(request[FORM_KEY], DECLINE_FIELDS)
    errors = FormErrors()
    require(visit.actor, Permission.SEND_TRANSFER)
    reason = values.reason.strip()
    if not reason:
        errors.add("reason", "Say why you are declining: the other school's DSL reads it")
    elif len(reason) > MAX_REASON:
        errors.add("reason", f"The reason must be {MAX_REASON} characters or fewer")
    if errors:
        return await _decline_page(request, visit, rid, values, errors=errors)
    requests = service(request)
    done = await requests.decline(visit.actor, rid, reason, via="web")
    await requests.send_one(done.request_id, done.org_id)
    return redirect("/requests?done=declined")


_R: Final = f"/requests/{REQUEST}"
ROUTES: Final = (
    WebRoute("GET", "/requests", requests_page, "TransferRequests.list", name="requests"),
    WebRoute("GET", "/requests/new", show_new, "Directory.entries, Store.find_pupil"),
    WebRoute("POST", "/requests/new", ask, "TransferRequests.create", form=kept_new),
    WebRoute("GET", _R, request_page, "TransferRequests.get", name="request"),
    WebRoute(
        "POST",
        f"{_R}/send",
        send_file,
        "Accounts.step_up, TransferRequests.authorise",
        form=kept_send,
    ),
    WebRoute("GET", f"{_R}/decline", show_decline, "TransferRequests.get"),
    WebRoute("POST", f"{_R}/decline", decline, "TransferRequests.decline", form=kept_decline),
)
