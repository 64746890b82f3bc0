"""Sending a leaver's file in the browser: mark a pupil as leaving, send the file, follow
it in the outbox.

- **Mark as leaving** (``/pupils/<UPN>/leaving``): the leaving date and the next school,
  found in the signed directory by name, town or URN with a search that is part of the form
  (it works without JavaScript and keeps what was typed), or "not known yet". The pupil
  page then shows the KCSIE deadline (:func:`deadline_for`) in school days, with the date.
- **Send** (``/pupils/<UPN>/send``): a preview of exactly what goes (the pupil's whole
  chronology as the store gives it to the package builder, counted by kind, documents
  with their sizes, anything in a restricted category flagged), the receiving school by
  name with its key fingerprint, a reason where the outbox needs one (sent before, or
  not the recorded next school), and a fresh authenticator code. The outbox refuses a
  leaver's file to an agency whatever the reason (``docs/delivery.md``): the page says
  so and offers no button.
- **Outbox** (``/outbox``): in :mod:`transfer.web.outbox`.

The services decide who may: :meth:`Store.update_pupil` (``pupil.manage``),
:meth:`Outbox.send_checks` and :meth:`Outbox.queue_leaver_file` (``transfer.send``).
A form page asks the same rule before it is shown, so an address typed by someone who may
not is the refusal page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from schemas.directory import DirectoryEntry
from schemas.records import Destination, PupilChanges, PupilRecord
from transfer.deadlines import CalendarError, DayUnit, transfer_due_date
from transfer.errors import NotFoundError
from transfer.exchange.deadlines_sweep import Calendars
from transfer.store.permissions import Permission, require
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebApp, WebRoute, webapp
from transfer.web.outbox import NEEDED_WORDS, STATE_TAGS, outbox_of
from transfer.web.pupils import find_pupil, pupil_name, pupil_ref
from transfer.web.rendering import ENGLAND, long_date, plural, redirect
from transfer.web.stepup import check_code
from transfer.web.tokens import KeptForm
from transfer.web.words import KINDS, BadDate, Values, category_label, read_date

if TYPE_CHECKING:
    from transfer.exchange.outbox import Outbox, SendChecks

UNKNOWN: Final = "unknown"
LEAVING_FIELDS: Final = ("leaving", "destination", "q")
SEND_FIELDS: Final = ("to", "reason")
#: Schools listed at once on the leaving page (more: type part of the name or the URN).
MAX_LISTED: Final = 30
KEPT_NOTICE: Final = (
    "You were signed out, so nothing was saved. What you typed has been kept: check it "
    "and save it again."
)
MAX_REASON: Final = 500


async def _schools(app: WebApp, visit: Visit) -> list[DirectoryEntry]:
    """The schools in the signed directory, other than the person's own, by name."""
    if app.services.directory is None:
        return []
    entries = await app.services.directory.entries()
    return sorted(
        (e for e in entries if e.kind == "school" and e.org_id != visit.actor.org_id),
        key=lambda e: (e.name.casefold(), e.org_id),
    )


def school_label(e: DirectoryEntry) -> str:
    """``Name, Town (URN n)``: the town when the directory gives one, the URN when known."""
    urn = e.urn or (e.org_id if re.fullmatch(r"[0-9]{6}", e.org_id) else None)
    named = f"{e.name}, {e.town}" if e.town else e.name
    return f"{named} (URN {urn})" if urn else named


def matching(schools: list[DirectoryEntry], query: str) -> list[DirectoryEntry]:
    """The schools whose name, town, URN or LAESTAB holds every word of ``query`` (any
    case, part of a word)."""
    words = query.casefold().split()
    if not words:
        return schools
    found = []
    for e in schools:
        text = " ".join(x for x in (e.name, e.town, e.urn, e.laestab, e.org_id) if x).casefold()
        if all(w in text for w in words):
            found.append(e)
    return found


def _destination_of(entry: DirectoryEntry) -> Destination | None:
    urn = entry.urn or (entry.org_id if re.fullmatch(r"[0-9]{6}", entry.org_id) else None)
    if urn is None and entry.laestab is None:
        return None
    return Destination(kind="school", urn=urn, laestab=entry.laestab, name=entry.name[:200])


def _recorded_entry(pupil: PupilRecord, schools: list[DirectoryEntry]) -> DirectoryEntry | None:
    from transfer.exchange.outbox import is_destination

    return next((e for e in schools if is_destination(pupil.destination, e)), None)


# ------------------------------------------------------------------ the KCSIE deadline


@dataclass(frozen=True)
class Deadline:
    """When a leaver's file is due (KCSIE), in words for the pupil page."""

    due: date | None
    text: str
    overdue: bool = False


def deadline_for(app: WebApp, org_id: str, leaving: date, today: date) -> Deadline:
    """The KCSIE deadline of a pupil leaving on ``leaving``: the date and the school days
    (or calendar days, as the node counts them) left from ``today``."""
    t = app.services.config.transfer
    unit = DayUnit.SCHOOL if t.deadline_unit == "school_days" else DayUnit.CALENDAR
    word = "school day" if unit is DayUnit.SCHOOL else "day"
    try:
        calendar = Calendars(app.store.data_dir).for_org(org_id)
        due = transfer_due_date(leaving, calendar, unit, t.deadline_days)
    except CalendarError:
        return Deadline(
            None,
            "It cannot be worked out: the school calendar needs attention. "
            "Ask whoever runs Handover to update the term dates.",
        )

    def counted(start: date, end: date) -> int:
        n, day = 0, start
        while day < end:
            day += timedelta(days=1)
            if unit is DayUnit.CALENDAR or calendar.is_school_day(day):
                n += 1
        return n

    rule = (
        f"within {plural(t.deadline_days, word)} of leaving, or of the start of the "
        "next term (KCSIE)"
    )
    due_words = f"{due:%A} {long_date(due)}"
    if today > due:
        late = counted(due, today)
        return Deadline(
            due, f"Due by {due_words}: {rule}. Overdue by {plural(late, word)}.", overdue=True
        )
    if today == due:
        return Deadline(due, f"Due today, {due_words}: {rule}.")
    left = counted(today, due)
    return Deadline(due, f"Due by {due_words}: {rule}. That is {plural(left, word)} from today.")


async def leaving_context(request: web.Request, visit: Visit, pupil: PupilRecord) -> dict[str, Any]:
    """What the pupil page shows about leaving: the deadline, the file's state, the links."""
    app = webapp(request)
    actor = visit.actor
    out: dict[str, Any] = {
        "may_mark_leaving": actor.has(Permission.MANAGE_PUPILS),
        "may_send": actor.has(Permission.SEND_TRANSFER) and app.services.outbox is not None,
        "leaving_done": request.query.get("done") == "leaving",
    }
    if pupil.leaving_date is not None:
        today = app.accounts.now().astimezone(ENGLAND).date()
        out["deadline"] = deadline_for(app, pupil.org_id, pupil.leaving_date, today)
    if out["may_send"]:
        latest = await outbox_of(app).latest_for_pupil(actor.org_id, pupil.id)
        if latest is not None:
            out["latest_file"] = f"{STATE_TAGS[latest.state][0]}: to {latest.to_name}"
    return out


# ------------------------------------------------------------------ mark as leaving


async def _leaving_page(
    request: web.Request,
    visit: Visit,
    ref: str,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    require(visit.actor, Permission.MANAGE_PUPILS)
    pupil = await find_pupil(request, visit, ref)
    schools = await _schools(app, visit)
    if not values.destination:
        recorded = _recorded_entry(pupil, schools)
        if recorded is not None:
            values.fields["destination"] = recorded.org_id
        elif pupil.destination is not None and pupil.destination.kind == UNKNOWN:
            values.fields["destination"] = UNKNOWN
    if not values.leaving and pupil.leaving_date is not None:
        values.fields["leaving"] = f"{pupil.leaving_date:%d/%m/%Y}".lstrip("0")
    found = matching(schools, values.q)
    chosen = next((e for e in schools if e.org_id == values.destination), None)
    listed = found[:MAX_LISTED]
    if chosen is not None and chosen not in listed:
        listed.insert(0, chosen)  # what is chosen stays on the page, whatever the search
    return app.page(
        request,
        "leaving.html",
        visit,
        title=f"Mark {pupil.forename} {pupil.surname} as leaving",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        pupil=pupil,
        name=pupil_name(pupil),
        ref=pupil_ref(pupil),
        schools=[(e.org_id, school_label(e)) for e in listed],
        found=len(found),
        more=max(0, len(found) - MAX_LISTED),
        searched=bool(values.q.strip()),
        in_directory=len(schools),
        notice=notice,
        unknown=UNKNOWN,
    )


async def show_leaving(request: web.Request, visit: Visit) -> web.StreamResponse:
    values = Values.of(request.query, LEAVING_FIELDS)
    values.fields["destination"] = ""
    values.fields["leaving"] = ""
    return await _leaving_page(request, visit, request.match_info["ref"], values)


async def kept_leaving(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    ref = kept.path.strip("/").split("/")[1]
    return await _leaving_page(
        request, visit, ref, Values.of(kept, LEAVING_FIELDS), notice=KEPT_NOTICE
    )


async def save_leaving(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    ref = request.match_info["ref"]
    data = request[FORM_KEY]
    values = Values.of(data, LEAVING_FIELDS)
    if data.get("action") == "search":
        return await _leaving_page(request, visit, ref, values)
    errors = FormErrors()
    leaving = None
    try:
        leaving = read_date(values.leaving, "The leaving date")
    except BadDate as err:
        errors.add("leaving", str(err))
    else:
        if leaving is None:
            errors.add("leaving", "Enter the date the pupil leaves, for example 17/7/2026")
    destination: Destination | None = None
    if values.destination == UNKNOWN:
        destination = Destination(kind=UNKNOWN)
    elif not values.destination:
        errors.add("destination", "Choose the next school, or 'Not known yet'")
    else:
        schools = await _schools(app, visit)
        entry = next((e for e in schools if e.org_id == values.destination), None)
        if entry is None:
            errors.add("destination", "Choose a school from the list")
        else:
            destination = _destination_of(entry)
            if destination is None:
                errors.add(
                    "destination",
                    f"{entry.name} has no URN or LAESTAB in the directory, "
                    "so it cannot be recorded; choose 'Not known yet' and "
                    "tell whoever runs Handover",
                )
    if errors or leaving is None:
        return await _leaving_page(request, visit, ref, values, errors=errors)
    pupil = await find_pupil(request, visit, ref)
    await app.store.update_pupil(
        visit.actor, pupil.id, PupilChanges(leaving_date=leaving, destination=destination)
    )
    return redirect(f"/pupils/{pupil_ref(pupil)}?done=leaving#leaving")


# ------------------------------------------------------------------ send


@dataclass
class Preview:
    """What the leaver's file holds, as the DSL checks it before sending."""

    counts: list[tuple[str, int]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    documents: int = 0
    restricted: int = 0
    total: int = 0


async def preview_of(request: web.Request, visit: Visit, pupil: PupilRecord) -> Preview:
    """Every record the package builder takes (the pupil's chronology as the store gives
    it to the sender: :func:`transfer.package.from_store.leaver_file_entries`)."""
    app = webapp(request)
    entries = await app.store.chronology_lines(visit.actor, pupil.id)
    cats = await app.store.list_categories(visit.actor)
    labels = {c.key: c.label for c in cats}
    restricted = {c.key for c in cats if c.restricted}
    by_concern = {
        e.concern_id: getattr(e.record, "category", "")
        for e in entries
        if e.kind == "concern" and e.concern_id
    }
    p = Preview(total=len(entries))
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.kind] = counts.get(e.kind, 0) + 1
        r: Any = e.record
        category = by_concern.get(e.concern_id or "", "")
        flagged = category in restricted
        title = KINDS.get(e.kind, e.kind)
        if e.kind == "concern":
            title = f"Concern: {category_label(category, labels)}"
        elif e.kind == "document":
            title = f"Document: {r.filename} ({_size(r.size)})"
            p.documents += 1
        elif e.kind == "contact":
            title = f"Contact with {r.agency}"
        elif e.kind == "event":
            title = f"Transfer or referral: {r.summary}"[:200]
        p.restricted += flagged
        received = e.provenance.source_org_name if e.provenance else ""
        p.lines.append(
            {"when": e.occurred_at, "title": title, "restricted": flagged, "received": received}
        )
    p.counts = [(KINDS[k], counts[k]) for k in KINDS if counts.get(k)]
    return p


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.0f} KB"
    return plural(n, "byte")


async def _send_page(
    request: web.Request,
    visit: Visit,
    ref: str,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    outbox = outbox_of(app)
    require(visit.actor, Permission.SEND_TRANSFER)
    pupil = await find_pupil(request, visit, ref)
    schools = await _schools(app, visit)
    if not values.to:
        recorded = _recorded_entry(pupil, schools)
        if recorded is not None:
            values.fields["to"] = recorded.org_id
    context: dict[str, Any] = {
        "pupil": pupil,
        "name": pupil_name(pupil),
        "ref": pupil_ref(pupil),
        "values": values,
        "schools": [(e.org_id, school_label(e)) for e in schools],
        "notice": notice,
    }
    if values.to:
        checks = await _checks(outbox, visit, pupil, values.to)
        if checks is None:
            values.fields["to"] = ""
            errors = errors or FormErrors()
            errors.add(
                "to",
                "That organisation is not in this node's directory: choose a school from the list",
            )
        else:
            context["checks"] = checks
            context["entry"] = checks.entry
            context["needed"] = [NEEDED_WORDS[c] for c in checks.needed]
            context["preview"] = await preview_of(request, visit, pupil)
    today = app.accounts.now().astimezone(ENGLAND).date()
    if pupil.leaving_date is None:
        context["not_left"] = (
            f"No leaving date is recorded for {pupil.forename}. KCSIE says "
            "the file goes once the pupil has left."
        )
    elif pupil.leaving_date > today:
        context["not_left"] = (
            f"{pupil.forename} has not left yet (leaving date "
            f"{long_date(pupil.leaving_date)}). KCSIE says the file goes "
            "once the pupil has left."
        )
    title = f"Send {pupil.forename} {pupil.surname}'s file"
    return app.page(
        request,
        "send.html",
        visit,
        title=title,
        errors=errors,
        status=400 if errors else 200,
        **context,
    )


async def _checks(outbox: Outbox, visit: Visit, pupil: PupilRecord, to: str) -> SendChecks | None:
    from transfer.directory.service import UnknownOrganisationError

    try:
        return await outbox.send_checks(visit.actor, pupil.id, to[:64])
    except (UnknownOrganisationError, NotFoundError):
        return None


async def show_send(request: web.Request, visit: Visit) -> web.StreamResponse:
    values = Values.of(request.query, SEND_FIELDS)
    values.fields["reason"] = ""
    return await _send_page(request, visit, request.match_info["ref"], values)


async def kept_send(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    ref = kept.path.strip("/").split("/")[1]
    return await _send_page(request, visit, ref, Values.of(kept, SEND_FIELDS), notice=KEPT_NOTICE)


async def send(request: web.Request, visit: Visit) -> web.StreamResponse:
    from transfer.exchange.outbox import ReasonRequiredError

    app = webapp(request)
    outbox = outbox_of(app)
    ref = request.match_info["ref"]
    data = request[FORM_KEY]
    values = Values.of(data, SEND_FIELDS)
    errors = FormErrors()
    pupil = await find_pupil(request, visit, ref)
    checks = await _checks(outbox, visit, pupil, values.to) if values.to else None
    if checks is None:
        errors.add("to", "Choose the school to send the file to")
    elif not checks.is_school:
        errors.add(
            "to",
            f"{checks.entry.name} is not a school. A leaver's file goes only to "
            "the pupil's next school; to share information with an agency, make "
            "a referral, which carries only what the agency needs.",
        )
    elif checks.pending is not None:
        errors.add(
            "to",
            f"A file for this pupil is already waiting to go to "
            f"{checks.entry.name}: cancel it in the outbox first to send a new "
            "one.",
        )
    reason = " ".join(values.reason.split())
    if checks is not None and checks.needed:
        if not reason:
            errors.add("reason", "Give the reason for sending it: " + "; ".join(checks.why))
        elif len(reason) > MAX_REASON or not reason.isprintable():
            errors.add("reason", f"The reason must be at most {MAX_REASON} characters")
    if errors or checks is None:
        return await _send_page(request, visit, ref, values, errors=errors)
    if not await check_code(app, visit, data.get("code", ""), errors):
        return await _send_page(request, visit, ref, values, errors=errors)
    try:
        record = await outbox.queue_leaver_file(
            visit.actor,
            pupil.id,
            checks.entry.org_id,
            via="web",
            reason=reason if checks.needed else None,
        )
    except ReasonRequiredError as err:  # the file reached the school meanwhile
        errors.add("reason", "Give the reason for sending it: " + err.message)
        return await _send_page(request, visit, ref, values, errors=errors)
    return redirect(f"/outbox?done=sent#package-{record.id}")


ROUTES: Final = (
    WebRoute("GET", "/pupils/{ref}/leaving", show_leaving, "Store.update_pupil", name="leaving"),
    WebRoute(
        "POST", "/pupils/{ref}/leaving", save_leaving, "Store.update_pupil", form=kept_leaving
    ),
    WebRoute(
        "GET",
        "/pupils/{ref}/send",
        show_send,
        "Outbox.send_checks, Store.chronology_lines",
        name="send",
    ),
    WebRoute(
        "POST",
        "/pupils/{ref}/send",
        send,
        "Outbox.send_checks, Accounts.step_up, Outbox.queue_leaver_file",
        form=kept_send,
    ),
)
