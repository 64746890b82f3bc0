"""Administration: pupils (administrator role; no concern content).

The roll (name, year group, UPN, date of birth) with each pupil's basic details to
change, and the upload of a Common Transfer File: every problem in the file shown by
its line, and nothing imported when anything is wrong (``Store.import_ctf`` imports a
file whole or not at all); a file addressed to another school is shown as a warning
naming that school, imported only when the administrator sends it again knowingly.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import BodyPartReader, web

from schemas.records import PupilChanges, PupilRecord
from transfer.ctf import DEFAULT_MAX_BYTES, CTFError
from transfer.errors import HandoverError, InputError, TooLargeError
from transfer.store.permissions import Permission, PermissionDenied
from transfer.store.pupils import CTFAddressedElsewhereError
from transfer.web.admin_staff import admin_sections
from transfer.web.core import FORM_KEY, UPLOAD_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.rendering import redirect
from transfer.web.tokens import KeptForm
from transfer.web.words import BadDate, Values, not_found_for_bad_ids, read_date

SEXES: Final = {"F": "Female", "M": "Male", "U": "Unknown", "O": "Other", "X": "Not given"}
_FIELDS: Final = ("forename", "surname", "dob", "sex", "year_group")


def _need(visit: Visit) -> None:
    if not visit.actor.has(Permission.MANAGE_PUPILS):
        raise PermissionDenied("this page is for your school's administrator")


async def _roll_page(
    request: web.Request,
    visit: Visit,
    *,
    errors: FormErrors | None = None,
    problems: list[CTFError] | None = None,
    elsewhere: str = "",
    status: int = 200,
    done: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    _need(visit)
    pupils = await app.store.list_pupils(visit.actor)
    return app.page(
        request,
        "admin_pupils.html",
        visit,
        title="Pupils",
        pupils=pupils,
        sexes=SEXES,
        problems=problems or [],
        elsewhere=elsewhere,
        errors=errors,
        status=400 if errors and status == 200 else status,
        admin_here="/admin/pupils",
        admin_sections=admin_sections(visit),
        done=done or _DONE.get(request.query.get("done", ""), ""),
    )


_DONE: Final = {"changed": "The pupil's details have been changed."}


async def roll(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _roll_page(request, visit)


async def _read_file(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise TooLargeError("the file is too large")
    return bytes(data)


async def upload_ctf(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    _need(visit)
    part: BodyPartReader | None = request.get(UPLOAD_KEY)
    force = request[FORM_KEY].get("force") == "yes"
    errors = FormErrors()
    if part is None or not part.filename:
        errors.add("ctf", "Select the CTF file (an XML file from your school's MIS)")
        return await _roll_page(request, visit, errors=errors)
    try:
        data = await _read_file(part, DEFAULT_MAX_BYTES)
    except TooLargeError:
        errors.add("ctf", f"The file must be smaller than {DEFAULT_MAX_BYTES // 1_000_000} MB")
        return await _roll_page(request, visit, errors=errors, status=413)
    if not data:
        errors.add("ctf", "The file is empty")
        return await _roll_page(request, visit, errors=errors)
    try:
        result = await app.store.import_ctf(visit.actor, data, force=force)
    except CTFError as err:
        count = len(err.problems)
        errors.add(
            "ctf",
            f"Nothing was imported: the file has {_problems(count)}. Fix "
            "the file in your MIS and upload it again",
        )
        return await _roll_page(request, visit, errors=errors, problems=list(err.problems))
    except CTFAddressedElsewhereError as err:
        detail = err.detail if isinstance(err.detail, dict) else {}
        name = detail.get("destination_name") or "another school"
        return await _roll_page(request, visit, elsewhere=str(name), status=409)
    except (InputError, HandoverError) as err:
        if isinstance(err, PermissionDenied):
            raise
        errors.add("ctf", f"Nothing was imported: {_plain(err.diagnostics())}")
        return await _roll_page(request, visit, errors=errors, status=err.http_status)
    done = (
        f"The file was imported: {_pupils(result.created)} added, "
        f"{_pupils(result.updated)} updated."
    )
    if result.leavers:
        done += " It was your own school's file, so leaving dates and destinations were recorded."
    return await _roll_page(request, visit, done=done)


def _problems(n: int) -> str:
    return "1 problem" if n == 1 else f"{n} problems"


def _pupils(n: int) -> str:
    return "1 pupil" if n == 1 else f"{n} pupils"


def _plain(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else text


# ------------------------------------------------------------------ one pupil's details


def _values(source: Any) -> Values:
    return Values.of(source, _FIELDS)


def _from_record(p: PupilRecord) -> Values:
    return Values(
        {
            "forename": p.forename,
            "surname": p.surname,
            "dob": p.dob.isoformat() if p.dob else "",
            "sex": p.sex,
            "year_group": p.year_group or "",
        }
    )


async def _pupil(request: web.Request, visit: Visit) -> PupilRecord:
    try:
        return await webapp(request).store.find_pupil(visit.actor, request.match_info["ref"])
    except InputError as err:
        raise not_found_for_bad_ids(err) from None


async def _edit_page(
    request: web.Request,
    visit: Visit,
    values: Values | None = None,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    _need(visit)
    pupil = await _pupil(request, visit)
    return app.page(
        request,
        "admin_pupil_edit.html",
        visit,
        title=f"Change {pupil.forename} {pupil.surname}'s details",
        pupil=pupil,
        values=values or _from_record(pupil),
        sexes=SEXES,
        errors=errors,
        status=400 if errors else 200,
        notice=notice,
    )


async def show_edit(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _edit_page(request, visit)


async def kept_edit(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _edit_page(
        request,
        visit,
        _values(kept),
        notice="You were signed out, so nothing was changed. What you typed has been kept: "
        "check it and save again.",
    )


async def edit(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    values = _values(request[FORM_KEY])
    errors = FormErrors()
    for name, label in (("forename", "first name"), ("surname", "last name")):
        text = values[name].strip()
        if not text:
            errors.add(name, f"Enter the pupil's {label}")
        elif len(text) > 200:
            errors.add(name, f"The {label} must be 200 characters or fewer")
    dob = None
    try:
        dob = read_date(values.dob, "Date of birth")
        if dob is None:
            errors.add("dob", "Enter the pupil's date of birth")
    except BadDate as err:
        errors.add("dob", str(err))
    if values.sex not in SEXES:
        errors.add("sex", "Select the pupil's sex as the CTF records it")
    if len(values.year_group.strip()) > 10:
        errors.add("year_group", "The year group must be 10 characters or fewer")
    if errors:
        return await _edit_page(request, visit, values, errors=errors)
    pupil = await _pupil(request, visit)
    changes = PupilChanges(
        forename=values.forename.strip(),
        surname=values.surname.strip(),
        dob=dob,
        sex=values.sex,
        year_group=values.year_group.strip() or None,
    )
    await app.store.update_pupil(visit.actor, pupil.id, changes)
    return redirect("/admin/pupils?done=changed")


ROUTES: Final = (
    WebRoute("GET", "/admin/pupils", roll, "Store.list_pupils", name="admin-pupils"),
    WebRoute("POST", "/admin/pupils/ctf", upload_ctf, "Store.import_ctf", upload=True),
    WebRoute("GET", "/admin/pupils/{ref}/edit", show_edit, "Store.find_pupil, Store.update_pupil"),
    WebRoute("POST", "/admin/pupils/{ref}/edit", edit, "Store.update_pupil", form=kept_edit),
)
