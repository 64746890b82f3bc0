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
- **Outbox** (``/outbox``): each package's state in words, its times and history, the
  retry schedule, cancel and resend, and its signed receipts with the receiving school's
  public key to download, and the ``minisign`` line that checks them.

The services decide who may: :meth:`Store.update_pupil` (``pupil.manage``),
:meth:`Outbox.send_checks` and :meth:`Outbox.queue_leaver_file` (``transfer.send``),
:meth:`Outbox.list`, :meth:`Outbox.get`, :meth:`Outbox.cancel` and :meth:`Outbox.resend`.
A form page asks the same rule before it is shown, so an address typed by someone who may
not is the refusal page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from aiohttp import web

from keys import minisign
from schemas.directory import DirectoryEntry
from schemas.records import Destination, PupilChanges, PupilRecord
from transfer.deadlines import CalendarError, DayUnit, transfer_due_date
from transfer.errors import HandoverError, InputError, NotFoundError
from transfer.exchange.deadlines_sweep import Calendars
from transfer.receipts import SignedReceipt
from transfer.store.permissions import Permission, require
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebApp, WebRoute, webapp
from transfer.web.pupils import UUID, find_pupil, pupil_name, pupil_ref
from transfer.web.rendering import ENGLAND, date_and_time, long_date, plural, redirect
from transfer.web.stepup import check_code
from transfer.web.tokens import KeptForm
from transfer.web.words import KINDS, BadDate, Values, category_label, read_date

if TYPE_CHECKING:
    from transfer.exchange.outbox import Outbox, OutgoingRecord, SendChecks

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
#: Files on one page of the outbox (newest first).
OUTBOX_PAGE: Final = 25
NEEDED_WORDS: Final = {
    "repeat": "sent to this school before",
    "not_destination": "not the pupil's recorded next school",
}
STATE_TAGS: Final = {
    "draft": ("Being prepared", "govuk-tag--grey"),
    "queued": ("Queued", "govuk-tag--blue"),
    "sending": ("Sending", "govuk-tag--light-blue"),
    "delivered": ("Delivered", "govuk-tag--turquoise"),
    "viewed": ("Opened", "govuk-tag--purple"),
    "accepted": ("Accepted", "govuk-tag--green"),
    "rejected": ("Rejected", "govuk-tag--red"),
    "failed": ("Failed", "govuk-tag--red"),
    "cancelled": ("Cancelled", "govuk-tag--grey"),
}
EVENT_WORDS: Final = {
    "draft": "Being prepared",
    "queued": "Sealed and queued",
    "retry": "A try failed; it will try again",
    "sent": "Sent",
    "receipt.delivered": "Delivered (signed receipt checked)",
    "receipt.viewed": "Opened by the receiving school",
    "receipt.accepted": "Accepted by the receiving school",
    "receipt.rejected": "Rejected by the receiving school",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "resent": "Queued again",
}
DONE: Final = {
    "sent": "The file has been sealed and queued. It goes to the school within a minute "
    "or so; this page shows when it is delivered.",
    "cancelled": "The file has been cancelled. Nothing was delivered; its copy here is deleted.",
    "resent": "The file has been queued again. It is the same file, sent again.",
}


def _outbox(app: WebApp) -> Outbox:
    if app.services.outbox is None:
        raise NotFoundError("sending files is not set up on this node")
    return app.services.outbox


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
        latest = await _outbox(app).latest_for_pupil(actor.org_id, pupil.id)
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
    outbox = _outbox(app)
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
    outbox = _outbox(app)
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


# ------------------------------------------------------------------ the outbox


def _when(value: datetime | None) -> str:
    return date_and_time(value) if value else ""


def state_words(r: OutgoingRecord, sending: bool, give_up_hours: int) -> tuple[str, list[str]]:
    """The package's state as a tag, and what it means, in sentences."""
    to = r.to_name
    last = r.receipts[-1] if r.receipts else None
    who = ""
    if last is not None and last.acted_by:
        name, role = last.acted_by.get("name", ""), last.acted_by.get("role", "")
        who = f" by {name} ({role.replace('_', ' ').replace('dsl', 'DSL')})" if name else ""
    lines: list[str] = []
    if r.state == "queued":
        state = "sending" if sending else "queued"
        if sending:
            lines.append(f"Being sent to {to} now.")
        else:
            lines.append(f"Waiting to be delivered to {to}.")
        if r.attempts:
            tried = plural(r.attempts, "time")
            why = r.last_error or "no answer"
            lines.append(f"Tried {tried} so far; the last try failed: {why}.")
        if r.next_attempt_at and not sending:
            lines.append(f"Next try: {_when(r.next_attempt_at)}.")
        if r.queued_at:
            ends = r.queued_at + timedelta(hours=give_up_hours)
            lines.append(
                f"It keeps trying, less often each time, until {_when(ends)}; then it "
                "is marked as failed and you can send it again."
            )
        return state, lines
    if r.state == "delivered":
        lines.append(
            f"Delivered to {to} on {_when(r.state_changed_at)}: the school's signed "
            "receipt was checked. Their DSL has not opened it yet."
        )
    elif r.state == "viewed":
        lines.append(f"Opened at {to}{who} on {_when(r.state_changed_at)}; not accepted yet.")
    elif r.state == "accepted":
        lines.append(f"Accepted by {to}{who} on {_when(r.state_changed_at)}. Nothing more to do.")
    elif r.state == "rejected":
        reason = last.reason if last is not None and last.reason else "no reason given"
        lines.append(
            f"Rejected by {to}{who} on {_when(r.state_changed_at)}. Their reason: {reason}"
        )
    elif r.state == "failed":
        lines.append(f"Not delivered to {to}: {r.failure_reason or r.last_error or 'unknown'}")
        lines.append("Send it again, or cancel it.")
    elif r.state == "cancelled":
        lines.append(f"Cancelled on {_when(r.state_changed_at)}; nothing was delivered.")
    else:
        lines.append("Being prepared.")
    return r.state, lines


async def outbox_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    outbox = _outbox(app)
    pupil_ref_q = request.query.get("pupil", "")[:64] or None
    try:
        records = await outbox.list(visit.actor, pupil_id=pupil_ref_q)
    except InputError:
        records = []
    try:
        page = max(1, int(request.query.get("page", "1")))
    except ValueError:
        page = 1
    pages = max(1, -(-len(records) // OUTBOX_PAGE))
    page = min(page, pages)
    total = len(records)
    records = records[(page - 1) * OUTBOX_PAGE : page * OUTBOX_PAGE]
    query = f"pupil={quote(pupil_ref_q)}&" if pupil_ref_q else ""
    sending = await outbox.sending_now([r.id for r in records if r.state == "queued"])
    pupil_ids = {p for r in records for p in r.pupil_ids}
    names = await app.store.pupil_names(visit.actor, pupil_ids)
    people = {
        p.id: f"{p.name} ({_role(p.role)})" if p.role else p.name
        for p in await app.store.people_named(visit.actor, (r.created_by for r in records))
    }
    give_up = app.services.config.transfer.give_up_hours
    items = []
    for r in records:
        state, lines = state_words(r, r.id in sending, give_up)
        items.append(
            {
                "record": r,
                "label": _label(r.kind),
                "tag": STATE_TAGS.get(state, (state, "")),
                "lines": lines,
                "pupils": [names.get(p, "a pupil no longer here") for p in r.pupil_ids],
                "sent_by": people.get(r.created_by or "", "someone no longer known here"),
                "needed": ", ".join(NEEDED_WORDS.get(c, c) for c in r.reasons_needed),
                "events": [(e.at, EVENT_WORDS.get(e.event, e.event), e.detail) for e in r.events],
                "receipts": [
                    {
                        "kind": k.kind,
                        "issued_at": k.issued_at,
                        "file": _receipt_file(r, k.kind),
                        "href": f"/outbox/{r.id}/receipts/{k.receipt_id}",
                    }
                    for k in r.receipts
                ],
                "may_cancel": r.state in ("queued", "failed") and r.id not in sending,
                "may_resend": r.state == "failed",
            }
        )
    return app.page(
        request,
        "outbox.html",
        visit,
        title="Outbox",
        items=items,
        total=total,
        page=page,
        pages=pages,
        done=DONE.get(request.query.get("done", "")),
        key_file=_key_file,
        previous_href=f"/outbox?{query}page={page - 1}" if page > 1 else "",
        next_href=f"/outbox?{query}page={page + 1}" if page < pages else "",
        only_pupil=names.get(pupil_ids.pop(), "") if pupil_ref_q and len(pupil_ids) == 1 else "",
    )


def _role(role: str | None) -> str | None:
    from transfer.store.people import role_label

    return role_label(role)


def _label(kind: str) -> str:
    from transfer.exchange.outbox.records import _LABELS

    return _LABELS.get(kind, "Package")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")[:60] or "receiver"


def _receipt_file(r: OutgoingRecord, kind: str) -> str:
    return f"receipt-{kind}-{r.id[:8]}.json"


def _key_file(r: OutgoingRecord) -> str:
    return f"{_slug(r.to_name)}.pub"


async def cancel(request: web.Request, visit: Visit) -> web.StreamResponse:
    record = await _outbox(webapp(request)).cancel(
        visit.actor, request.match_info["package_id"], via="web"
    )
    return redirect(f"/outbox?done=cancelled#package-{record.id}")


async def resend(request: web.Request, visit: Visit) -> web.StreamResponse:
    record = await _outbox(webapp(request)).resend(
        visit.actor, request.match_info["package_id"], via="web"
    )
    return redirect(f"/outbox?done=resent#package-{record.id}")


def _download(body: bytes, filename: str, media_type: str) -> web.Response:
    return web.Response(
        body=body,
        headers={
            "Content-Type": media_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


async def receipt_file(request: web.Request, visit: Visit) -> web.StreamResponse:
    """A held receipt's signed bytes (``.json``) or its minisign signature (``.minisig``),
    exactly as the receiving school signed them (``docs/receipts.md`` §6)."""
    record = await _outbox(webapp(request)).get(visit.actor, request.match_info["package_id"])
    wanted, part = request.match_info["receipt_id"].lower(), request.match_info["part"]
    held = next((k for k in record.receipts if k.receipt_id.lower() == wanted), None)
    if held is None:
        raise NotFoundError("no such receipt for this package")
    signed = SignedReceipt.from_dict({"receipt": held.body, "signature": held.signature})
    name = _receipt_file(record, held.kind)
    if part == "json.minisig":
        return _download(signed.signature_text.encode(), name + ".minisig", "text/plain")
    return _download(signed.body_bytes, name, "application/json")


async def receiver_key(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The receiving school's minisign public key(s) from the signed directory, to check
    its receipts with ``minisign -Vm receipt.json -p school.pub``."""
    app = webapp(request)
    record = await _outbox(app).get(visit.actor, request.match_info["package_id"])
    if app.services.directory is None:
        raise NotFoundError("this node has no directory")
    try:
        entry = await app.services.directory.entry(record.to_org_id)
    except HandoverError:
        raise NotFoundError("the receiving organisation is no longer in the directory") from None
    # The key that signed the latest receipt: the current one, or one it replaced.
    used = record.receipts[-1].body.get("receiver_key_id") if record.receipts else None
    key = next((k.signing_key for k in entry.previous_keys if k.key_id == used), entry.signing_key)
    pub = minisign.PublicKey.from_base64(key).to_text(f"{_slug(entry.name)} signing key")
    return _download(pub.encode(), _key_file(record), "text/plain")


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
    WebRoute("GET", "/outbox", outbox_page, "Outbox.list", name="outbox"),
    WebRoute("POST", f"/outbox/{{package_id:{UUID}}}/cancel", cancel, "Outbox.cancel"),
    WebRoute("POST", f"/outbox/{{package_id:{UUID}}}/resend", resend, "Outbox.resend"),
    WebRoute(
        "GET",
        f"/outbox/{{package_id:{UUID}}}/receipts/{{receipt_id:{UUID}}}.{{part:json|json.minisig}}",
        receipt_file,
        "Outbox.get",
        name="receipt",
    ),
    WebRoute(
        "GET",
        f"/outbox/{{package_id:{UUID}}}/receiver.pub",
        receiver_key,
        "Outbox.get",
        name="receiver-key",
    ),
)
