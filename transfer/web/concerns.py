"""Logging a concern (any member of staff), and the page that confirms it was saved.

The form works without JavaScript: the pupil is found with a GET search form (by name
or UPN; several pupils may be chosen), the body map's marks are chosen from a list of
body regions, each with a note. With JavaScript (``concern.js``), pupils are suggested
as the name is typed (the search's own results, fetched from this page) and a click on
the front or back outline places a mark at that point. A mistake brings the form back
with everything typed and each message at its field; nothing is saved half-done. The
form carries a one-time key (``NewConcern.submission_key``), so sending it twice keeps
one concern; a form sent after the session ended is kept over signing in again
(:mod:`transfer.web.core`). The store checks who may log and read concerns, that each
pupil is in the school and that the date is not in the future; saving alerts the DSL
team (:class:`transfer.alerts.rules.StoreAlerts`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from aiohttp import BodyPartReader, web
from multidict import MultiDict
from pydantic import ValidationError

from schemas.records import ConcernRecord, NewBodyMapMark, NewConcern, PupilRecord
from transfer.errors import ConflictError, InputError, NotFoundError, TooLargeError
from transfer.media import UnsupportedDocumentType
from transfer.store.keyring import KeyDestroyed
from transfer.store.permissions import Permission, require
from transfer.web.core import FORM_KEY, UPLOAD_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.rendering import ENGLAND, redirect
from transfer.web.tokens import KeptForm

#: Body regions for the list (no JavaScript, no mouse): key -> (label, side, x, y), where
#: x and y are the region's centre as fractions of the outline's width and height. On
#: the front outline the pupil's right is on the viewer's left; on the back, their left.
REGIONS: Final[dict[str, tuple[str, str, float, float]]] = {
    "front-head": ("Head and face (front)", "front", 0.5, 0.068),
    "front-neck": ("Neck (front)", "front", 0.5, 0.136),
    "front-chest": ("Chest", "front", 0.5, 0.25),
    "front-stomach": ("Stomach", "front", 0.5, 0.364),
    "front-groin": ("Groin", "front", 0.5, 0.445),
    "front-right-arm": ("Right arm (front)", "front", 0.23, 0.318),
    "front-left-arm": ("Left arm (front)", "front", 0.77, 0.318),
    "front-right-hand": ("Right hand (palm)", "front", 0.23, 0.5),
    "front-left-hand": ("Left hand (palm)", "front", 0.77, 0.5),
    "front-right-leg": ("Right leg (front)", "front", 0.405, 0.705),
    "front-left-leg": ("Left leg (front)", "front", 0.595, 0.705),
    "front-right-foot": ("Right foot (top)", "front", 0.405, 0.955),
    "front-left-foot": ("Left foot (top)", "front", 0.595, 0.955),
    "back-head": ("Back of the head", "back", 0.5, 0.068),
    "back-neck": ("Back of the neck", "back", 0.5, 0.136),
    "back-upper": ("Upper back", "back", 0.5, 0.25),
    "back-lower": ("Lower back", "back", 0.5, 0.364),
    "back-buttocks": ("Buttocks", "back", 0.5, 0.445),
    "back-left-arm": ("Left arm (back)", "back", 0.23, 0.318),
    "back-right-arm": ("Right arm (back)", "back", 0.77, 0.318),
    "back-left-hand": ("Back of the left hand", "back", 0.23, 0.5),
    "back-right-hand": ("Back of the right hand", "back", 0.77, 0.5),
    "back-left-leg": ("Left leg (back)", "back", 0.405, 0.705),
    "back-right-leg": ("Right leg (back)", "back", 0.595, 0.705),
    "back-left-foot": ("Left heel", "back", 0.405, 0.955),
    "back-right-foot": ("Right heel", "back", 0.595, 0.955),
}
_FRACTION: Final = r"(0(?:\.\d{1,4})?|1(?:\.0{1,4})?)"
#: A mark placed by a click: ``front@0.412,0.223``.
_PLACED: Final = re.compile(rf"^(front|back)@{_FRACTION},{_FRACTION}$")
_TIME: Final = re.compile(r"^\s*(\d{1,2})[:.](\d{2})\s*$")
#: Mark rows shown on a new form, and the most a form may carry.
MARK_ROWS: Final = 3
MAX_MARKS: Final = 30
MAX_RESULTS: Final = 25
MAX_QUERY: Final = 100


@dataclass
class MarkRow:
    number: int
    where: str = ""
    note: str = ""
    pupil: str = ""
    #: The label of a mark placed by a click (``where`` is ``side@x,y``).
    placed_label: str = ""


@dataclass
class ConcernForm:
    """What the form holds (as typed, all strings)."""

    pupils: list[str] = field(default_factory=list)
    category: str = ""
    day: str = ""
    month: str = ""
    year: str = ""
    time: str = ""
    location: str = ""
    account: str = ""
    people_involved: str = ""
    marks: list[MarkRow] = field(default_factory=list)
    submission_key: str = ""

    @classmethod
    def fresh(cls, now: datetime, pupils: list[str]) -> ConcernForm:
        local = now.astimezone(ENGLAND)
        return cls(
            pupils=pupils,
            day=str(local.day),
            month=str(local.month),
            year=str(local.year),
            time=f"{local:%H:%M}",
            marks=[MarkRow(i) for i in range(1, MARK_ROWS + 1)],
            submission_key=secrets.token_urlsafe(24),
        )

    @classmethod
    def read(cls, source: MultiDict[str] | KeptForm, *, extra_row: bool = False) -> ConcernForm:
        def one(name: str) -> str:
            return source.value(name) if isinstance(source, KeptForm) else source.get(name, "")

        def many(name: str) -> list[str]:
            return source.values(name) if isinstance(source, KeptForm) else source.getall(name, [])

        rows = []
        count = min(_int(one("mark_rows"), MARK_ROWS), MAX_MARKS)
        for i in range(1, count + 1):
            where = one(f"mark_{i}_where")
            rows.append(
                MarkRow(
                    i, where, one(f"mark_{i}_note"), one(f"mark_{i}_pupil"), _placed_label(where)
                )
            )
        if extra_row and len(rows) < MAX_MARKS:
            rows.append(MarkRow(len(rows) + 1))
        while len(rows) < MARK_ROWS:
            rows.append(MarkRow(len(rows) + 1))
        key = one("submission_key")
        return cls(
            pupils=list(dict.fromkeys(p for p in many("pupil") if p))[:50],
            category=one("category"),
            day=one("happened-day"),
            month=one("happened-month"),
            year=one("happened-year"),
            time=one("happened_time"),
            location=one("location"),
            account=one("account"),
            people_involved=one("people_involved"),
            marks=rows,
            submission_key=key
            if re.fullmatch(r"[A-Za-z0-9_-]{16,64}", key)
            else secrets.token_urlsafe(24),
        )


def _int(text: str, default: int) -> int:
    try:
        return max(1, int(text))
    except ValueError:
        return default


def _placed_label(where: str) -> str:
    found = _PLACED.match(where)
    if not found:
        return ""
    return f"Marked on the {found.group(1)} outline"


def pupil_label(p: PupilRecord) -> str:
    """``Amara Okafor, Year 6, UPN H801200001001``."""
    parts = [f"{p.forename} {p.surname}"]
    if p.year_group:
        parts.append(f"Year {p.year_group}")
    if p.upn:
        parts.append(f"UPN {p.upn}")
    return ", ".join(parts)


def matches(p: PupilRecord, query: str) -> bool:
    """A pupil found by a search: every word in their name, or their UPN exactly."""
    q = query.strip().lower()
    if not q:
        return False
    if p.upn and q == p.upn.lower():
        return True
    name = f"{p.forename} {p.surname}".lower()
    return all(word in name for word in q.split())


# ------------------------------------------------------------------ checking the form


def _happened(form: ConcernForm, errors: FormErrors, now: datetime) -> datetime | None:
    if not (form.day.strip() or form.month.strip() or form.year.strip()):
        errors.add("happened-day", "Enter the date it happened")
        return None
    try:
        day, month, year = int(form.day), int(form.month), int(form.year)
        datetime(year, month, day)
    except ValueError:
        errors.add("happened-day", "Enter a real date, for example 27 3 2026")
        return None
    if not 1900 <= year <= 9999:
        errors.add("happened-day", "Enter the year as 4 digits, for example 2026")
        return None
    found = _TIME.match(form.time)
    if not found or int(found.group(1)) > 23 or int(found.group(2)) > 59:
        errors.add("happened_time", "Enter the time it happened, for example 14:30")
        return None
    moment = datetime(year, month, day, int(found.group(1)), int(found.group(2)), tzinfo=ENGLAND)
    if moment > now:
        errors.add("happened-day", "The date and time it happened must be in the past")
        return None
    return moment


def _marks(form: ConcernForm, errors: FormErrors) -> list[tuple[MarkRow, str, float, float, str]]:
    """The filled-in mark rows as (row, side, x, y, description)."""
    out = []
    for row in form.marks:
        where, note = row.where.strip(), row.note.strip()
        if not where and not note:
            continue
        if not where:
            errors.add(
                f"mark_{row.number}_where", f"Choose where mark {row.number} is, or clear its note"
            )
            continue
        if len(note) > 2000:
            errors.add(
                f"mark_{row.number}_note",
                f"The note of mark {row.number} must be 2,000 characters or fewer",
            )
            continue
        if where in REGIONS:
            label, side, x, y = REGIONS[where]
            out.append((row, side, x, y, f"{label}: {note}" if note else label))
            continue
        placed = _PLACED.match(where)
        if placed is None:
            errors.add(
                f"mark_{row.number}_where", f"Choose where mark {row.number} is from the list"
            )
            continue
        out.append((row, placed.group(1), float(placed.group(2)), float(placed.group(3)), note))
    return out


def check(
    form: ConcernForm, errors: FormErrors, *, categories: set[str], now: datetime
) -> NewConcern | None:
    """The concern to save, or None with ``errors`` saying what to put right."""
    if not form.pupils:
        errors.add("pupil", "Find and select the pupil or pupils the concern is about")
    if form.category not in categories:
        errors.add("category", "Select the kind of concern")
    happened = _happened(form, errors, now)
    if len(form.location) > 10_000:
        errors.add("location", "Where it happened must be 10,000 characters or fewer")
    if not form.account.strip():
        errors.add("account", "Enter what you saw or were told")
    elif len(form.account) > 100_000:
        errors.add("account", "What you saw or were told must be 100,000 characters or fewer")
    if len(form.people_involved) > 10_000:
        errors.add("people_involved", "Who was involved must be 10,000 characters or fewer")
    marks = _marks(form, errors)
    if errors or happened is None:
        return None
    chosen = form.pupils
    body_map = []
    for row, side, x, y, description in marks:
        pupil = row.pupil if row.pupil in chosen else chosen[0]
        body_map.append(
            NewBodyMapMark(pupil_id=pupil, side=side, x=x, y=y, description=description)
        )
    try:
        return NewConcern(
            pupil_ids=tuple(chosen),
            category=form.category,
            happened_at=happened,
            location=form.location.strip(),
            account=form.account.strip(),
            people_involved=form.people_involved.strip(),
            body_map=tuple(body_map),
            submission_key=form.submission_key,
        )
    except ValidationError:
        errors.add(
            "account",
            "Some of what was typed cannot be kept (for example, control "
            "characters); check each answer",
        )
        return None


# ------------------------------------------------------------------ pages


async def _form_page(
    request: web.Request,
    visit: Visit,
    form: ConcernForm,
    *,
    query: str = "",
    errors: FormErrors | None = None,
    notice: str = "",
    status: int | None = None,
) -> web.StreamResponse:
    app = webapp(request)
    categories = await app.store.concern_categories(visit.actor)
    pupils = await app.store.list_pupils(visit.actor)
    by_id = {p.id: p for p in pupils}
    chosen = [by_id[p] for p in form.pupils if p in by_id]
    results: list[PupilRecord] = []
    if query:
        results = [p for p in pupils if matches(p, query) and p.id not in form.pupils]
        results.sort(key=lambda p: (p.surname.lower(), p.forename.lower()))
    regions = [{"value": k, "text": v[0]} for k, v in REGIONS.items()]
    return app.page(
        request,
        "concern_new.html",
        visit,
        title="Log a concern",
        errors=errors,
        status=status or (400 if errors else 200),
        form=form,
        query=query,
        chosen=[(p.id, pupil_label(p)) for p in chosen],
        results=[(p.id, pupil_label(p)) for p in results[:MAX_RESULTS]],
        more_results=max(0, len(results) - MAX_RESULTS),
        categories=[(c.key, c.label) for c in categories],
        regions=regions,
        region_marks=REGIONS,
        notice=notice,
    )


async def new_concern(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    query = request.query.get("q", "").strip()[:MAX_QUERY]
    form = ConcernForm.fresh(app.accounts.now(), request.query.getall("pupil", [])[:50])
    errors = FormErrors()
    if "q" in request.query and not query:
        errors.add("q", "Enter a pupil's name or UPN to find them")
    return await _form_page(request, visit, form, query=query, errors=errors, status=200)


_KEPT_NOTICE: Final = (
    "You were signed out, so the concern was not saved. What you typed has been kept: "
    "check it and select \u201cSave the concern\u201d."
)


async def kept_concern(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    return await _form_page(request, visit, ConcernForm.read(kept), notice=_KEPT_NOTICE)


async def save_concern(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    data: MultiDict[str] = request[FORM_KEY]
    action = data.get("action", "save")
    form = ConcernForm.read(data, extra_row=action == "more")
    if action == "more":
        return await _form_page(request, visit, form)
    if action == "find":
        return await _form_page(request, visit, form, query=data.get("q", "").strip()[:MAX_QUERY])
    errors = FormErrors()
    categories = {c.key for c in await app.store.concern_categories(visit.actor)}
    concern = check(form, errors, categories=categories, now=app.accounts.now())
    if concern is None:
        return await _form_page(request, visit, form, errors=errors)
    try:
        saved = await app.store.record_concern(visit.actor, concern)
    except (NotFoundError, KeyDestroyed):
        form.pupils = []
        errors.add(
            "pupil",
            "A pupil chosen is not on your school's roll. Find the pupil again and select them",
        )
        return await _form_page(request, visit, form, errors=errors)
    except ConflictError:
        errors.add(
            "pupil",
            "The pupil's record changed while this was being saved. Check the "
            "pupils chosen and save again",
        )
        return await _form_page(request, visit, form, errors=errors, status=409)
    except InputError as err:
        text = err.diagnostics()
        name = "happened-day" if "future" in text or "ahead" in text else "category"
        errors.add(name, _sentence(text))
        return await _form_page(request, visit, form, errors=errors)
    return redirect(f"/concerns/{saved.id}/saved")


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] if text else text


async def _saved_page(
    request: web.Request,
    visit: Visit,
    concern_id: str,
    *,
    errors: FormErrors | None = None,
    status: int | None = None,
    pupil: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    concern: ConcernRecord = await app.store.get_concern(visit.actor, concern_id)
    names = await app.store.pupil_names(visit.actor, concern.pupil_ids)
    labels = {c.key: c.label for c in await app.store.list_categories(visit.actor)}
    marks = [
        {
            "n": i,
            "side": m.side,
            "cx": round(m.x * 100, 2),
            "cy": round(m.y * 220, 2),
            "description": m.description,
            "pupil": names.get(m.pupil_id, ""),
        }
        for i, m in enumerate(concern.body_map, start=1)
    ]
    mine = concern.recorded_by == visit.actor.staff_id
    return app.page(
        request,
        "concern_saved.html",
        visit,
        title="Concern logged",
        concern=concern,
        pupils=[(p, names.get(p, "A pupil")) for p in concern.pupil_ids],
        category=labels.get(concern.category, concern.category.replace("_", " ").capitalize()),
        marks=marks,
        several=len(concern.pupil_ids) > 1,
        now=app.accounts.now(),
        mine=mine,
        may_attach=mine or visit.actor.has(Permission.MANAGE_DOCUMENTS),
        errors=errors,
        status=status or (400 if errors else 200),
        chosen_pupil=pupil,
        max_size=size_words(app.store.max_document_bytes),
        done=_DONE.get(request.query.get("done", "")),
    )


def size_words(limit: int) -> str:
    """``2 GB``, ``25 MB``, ``1 MB`` (whole units, rounded down; at least 1 MB)."""
    if limit >= 1024**3 and limit % 1024**3 == 0:
        return f"{limit // 1024**3} GB"
    return f"{max(1, limit // 1024**2)} MB"


_DONE: Final = {"file": "The file has been attached to the concern."}


async def concern_saved(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _saved_page(request, visit, request.match_info["id"])


def _filename(raw: str | None) -> str:
    """The file's own name, without any folder a browser may send."""
    name = re.split(r"[\\/]", raw or "")[-1].strip()
    return "".join(ch for ch in name if ch.isprintable())[:255]


async def _document_page(
    request: web.Request,
    visit: Visit,
    concern_id: str,
    *,
    errors: FormErrors | None = None,
    status: int | None = None,
    pupil: str = "",
) -> web.StreamResponse:
    """The DSL team's "Add a document" page for a concern (the author's way in is the
    page they see once the concern is logged)."""
    app = webapp(request)
    concern = await app.store.get_concern(visit.actor, concern_id)
    if concern.recorded_by != visit.actor.staff_id:
        require(visit.actor, Permission.MANAGE_DOCUMENTS)
    names = await app.store.pupil_names(visit.actor, concern.pupil_ids)
    return app.page(
        request,
        "document_form.html",
        visit,
        title="Add a document",
        concern=concern,
        pupils=[(p, names.get(p, "A pupil")) for p in concern.pupil_ids],
        chosen_pupil=pupil,
        max_size=size_words(app.store.max_document_bytes),
        errors=errors,
        status=status or (400 if errors else 200),
    )


async def new_document(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _document_page(request, visit, request.match_info["concern_id"])


async def attach_file(request: web.Request, visit: Visit) -> web.StreamResponse:
    """Stream one file into the concern's pupil's record (encrypted as it arrives)."""
    app = webapp(request)
    concern_id = request.match_info["id"]
    data: MultiDict[str] = request[FORM_KEY]
    part: BodyPartReader | None = request.get(UPLOAD_KEY)
    concern = await app.store.get_concern(visit.actor, concern_id)
    pupil = data.get("pupil", "")
    if pupil not in concern.pupil_ids:
        pupil = concern.pupil_ids[0]
    # Sent from the concern's own page (the DSL team) or from the page after logging it.
    again = _document_page if data.get("back") == "concern" else _saved_page
    errors = FormErrors()
    filename = _filename(part.filename if part is not None else None)
    if part is None or not filename:
        errors.add("file", "Select a file to attach")
        return await again(request, visit, concern_id, errors=errors, pupil=pupil)

    async def chunks() -> AsyncIterator[bytes]:
        assert part is not None
        while chunk := await part.read_chunk(64 * 1024):
            yield chunk

    try:
        await app.store.add_document(
            visit.actor, pupil, chunks(), filename=filename, concern_id=concern_id
        )
    except TooLargeError:
        limit = size_words(app.store.max_document_bytes)
        errors.add("file", f"The file must be smaller than {limit}")
        return await again(request, visit, concern_id, errors=errors, status=413, pupil=pupil)
    except UnsupportedDocumentType:
        errors.add(
            "file",
            "The file must be a PDF, a photo (JPEG, PNG, HEIC...), a Word, "
            "Excel, PowerPoint or OpenDocument file, a text file or an e-mail saved "
            "from Outlook",
        )
        return await again(request, visit, concern_id, errors=errors, status=415, pupil=pupil)
    if again is _document_page:
        return redirect(f"/concerns/{concern_id}?done=document#documents")
    return redirect(f"/concerns/{concern_id}/saved?done=file")


def pupil_href(pupil: PupilRecord | str) -> str:
    """Where a pupil's page is: ``/pupils/{UPN}`` (or their id when they have no UPN)."""
    if isinstance(pupil, str):
        return f"/pupils/{pupil}"
    return f"/pupils/{pupil.upn or pupil.id}"


ROUTES: Final = (
    WebRoute(
        "GET",
        "/concerns/new",
        new_concern,
        "Store.concern_categories, Store.list_pupils",
        name="new-concern",
    ),
    WebRoute(
        "POST",
        "/concerns/new",
        save_concern,
        "Store.concern_categories, Store.list_pupils, Store.record_concern",
        form=kept_concern,
    ),
    WebRoute(
        "GET",
        "/concerns/{id}/saved",
        concern_saved,
        "Store.get_concern, Store.pupil_names, Store.list_categories",
    ),
    WebRoute(
        "POST",
        "/concerns/{id}/files",
        attach_file,
        "Store.get_concern, Store.add_document",
        upload=True,
    ),
    WebRoute(
        "GET",
        "/concerns/{concern_id:[0-9a-fA-F-]{36}}/documents/new",
        new_document,
        "Store.get_concern, Store.pupil_names",
    ),
)
