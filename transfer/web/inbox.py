"""Receiving a file: the inbox, a received file's content as a DSL reads it, accepting it
into a pupil on the roll (suggested by UPN, name and date of birth, the match said in
words) or as a new pupil, and rejecting it with a reason that goes back to the sender in
the signed receipt.

The pages call :class:`transfer.exchange.inbox.Inbox`, the service the API calls: it
checks the permission (the DSL team's ``transfer.receive``) and the organisation, audits
every view (the first one also sends the sender a signed "viewed" receipt), verifies the
whole package again before importing, and merges by provenance, so a file accepted twice
imports nothing twice (the confirmation says how many records were already held).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from schemas.manifest import Subject
from schemas.records import PupilRecord
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.exchange.inbox import Inbox, InboxPreview, IncomingSummary
from transfer.store.permissions import Permission, require
from transfer.store.readable import ReadableLine, size_in_words
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.pupils import Line, pupil_name, pupil_ref
from transfer.web.rendering import long_date, redirect
from transfer.web.tokens import KeptForm
from transfer.web.words import Values

#: A package id in a web address (a UUID).
PACKAGE: Final = "{package_id:[0-9a-fA-F-]{36}}"
ACCEPT_FIELDS: Final = ("pupil", "other_upn")
REJECT_FIELDS: Final = ("reason",)
NEW_PUPIL: Final = "new"
OTHER_PUPIL: Final = "other"
MAX_REASON: Final = 500
KEPT_NOTICE: Final = (
    "You were signed out, so nothing was done. What you chose has been kept: check it and "
    "send it again."
)
#: The states of a received file, in words, with the colour of their tag.
STATES: Final = {
    "delivered": ("New: not opened yet", "govuk-tag--blue"),
    "viewed": ("Opened, not decided", "govuk-tag--yellow"),
    "accepted": ("Accepted", "govuk-tag--green"),
    "rejected": ("Rejected", "govuk-tag--red"),
}


def inbox_of(request: web.Request) -> Inbox:
    found = webapp(request).services.inbox
    if found is None:
        raise NotFoundError("this node keeps no inbox")
    return found


async def decided(request: web.Request, visit: Visit, pid: str) -> web.StreamResponse:
    """A file accepted or rejected already (by someone else, or a form sent twice): its
    confirmation page, or the inbox, rather than an error naming the package."""
    items = await inbox_of(request).list(visit.actor, via="web")
    item = next((i for i in items if i.package_id == pid), None)
    if item is not None and item.state == "accepted":
        return redirect(f"/inbox/{pid}/accepted")
    if item is not None and item.state == "rejected":
        return redirect("/inbox?done=decided")
    raise NotFoundError("no such file in your inbox")


# ------------------------------------------------------------------ who the file is about


@dataclass(frozen=True)
class Described:
    """Who a received file says it is about (its pupil record, else its manifest)."""

    forename: str
    surname: str
    dob: date | None
    upn: str | None

    @classmethod
    def of(cls, preview: InboxPreview) -> Described:
        p: Any = preview.pupil or preview.subject
        return cls(p.forename, p.surname, p.dob, p.upn)

    @classmethod
    def of_subject(cls, s: Subject) -> Described:
        return cls(s.forename, s.surname, s.dob, s.upn)

    @property
    def name(self) -> str:
        return f"{self.forename} {self.surname}"


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _born(value: date | None) -> str:
    return long_date(value) if value else "not recorded"


def explain_match(ours: PupilRecord, theirs: Described) -> str | None:
    """Why ``ours`` may be the pupil a file is about, in words ("Same UPN; name differs:
    ..."), or None when it is not a candidate: a pupil is suggested when the UPN is the
    same, or the name and the date of birth both are."""
    same_upn = bool(ours.upn and theirs.upn and ours.upn.upper() == theirs.upn.upper())
    same_name = _same(ours.forename, theirs.forename) and _same(ours.surname, theirs.surname)
    same_dob = ours.dob is not None and ours.dob == theirs.dob
    if not same_upn and not (same_name and same_dob):
        return None
    parts: list[str] = []
    if same_upn:
        parts.append("same UPN")
    if same_name and same_dob:
        parts.append("same name and date of birth")
    else:
        if not same_name:
            parts.append(
                f"name differs: {ours.forename} {ours.surname} here, {theirs.name} in the file"
            )
        if not same_dob:
            parts.append(
                f"date of birth differs: {_born(ours.dob)} here, {_born(theirs.dob)} in the file"
            )
    if not same_upn:
        if ours.upn and theirs.upn:
            parts.append(f"UPN differs: {ours.upn} here, {theirs.upn} in the file")
        elif theirs.upn:
            parts.append("no UPN is recorded here")
        else:
            parts.append("the file gives no UPN")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


@dataclass(frozen=True)
class Suggestion:
    pupil: PupilRecord
    why: str
    #: The UPN, the name and the date of birth all agree.
    strong: bool


def suggestions(pupils: list[PupilRecord], theirs: Described) -> list[Suggestion]:
    """The pupils on the roll the file may be about, the closest first."""
    out = []
    for p in pupils:
        if p.erased_at is not None:
            continue
        why = explain_match(p, theirs)
        if why is not None:
            out.append(Suggestion(p, why, why.startswith("Same UPN; same name")))
    return sorted(
        out,
        key=lambda s: (
            not s.strong,
            not s.why.startswith("Same UPN"),
            s.pupil.surname,
            s.pupil.forename,
        ),
    )


# ------------------------------------------------------------------ the content, as read


def _fact(detail: str) -> tuple[str, str]:
    """One detail of a readable line as a label and a value."""
    label, sep, value = detail.partition(": ")
    if sep and label and len(label) < 40:
        return label, value
    for word, label in (("Due ", "Due"), ("Done ", "Done"), ("For ", "For")):
        if detail.startswith(word):
            return label, detail[len(word) :]
    if detail == "Not done yet":
        return "Done", "Not yet"
    if detail[:1].isdigit():
        return "Size", detail
    return "Note", detail


def preview_line(r: ReadableLine) -> Line:
    """A line of a received file's chronology for ``_chronology_line.html``: the whole
    text (not shortened), and no links (the sender's ids are not records here)."""
    received = ""
    facts = []
    for detail in r.details:
        if detail.startswith("Received from "):
            received = detail
        else:
            facts.append(_fact(detail))
    return Line(
        kind=r.kind,
        when=r.at,
        title=r.heading,
        text=r.text,
        who=r.recorded_by,
        received=received,
        facts=facts,
    )


def _counts_in_words(counts: dict[str, int]) -> str:
    nouns = {
        "concerns": ("concern", "concerns"),
        "triage": ("triage decision", "triage decisions"),
        "actions": ("action", "actions"),
        "contacts": ("contact with an agency", "contacts with agencies"),
        "documents": ("document", "documents"),
        "events": ("transfer or referral note", "transfer or referral notes"),
    }
    parts = []
    for key, (one, many) in nouns.items():
        n = counts.get(key, 0)
        if n:
            parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts) or "no records"


# ------------------------------------------------------------------ the inbox


async def inbox_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    inbox = inbox_of(request)
    items = await inbox.list(visit.actor, via="web")
    open_ids = [i.package_id for i in items if i.state in ("delivered", "viewed")]
    about = await inbox.subjects(visit.actor, open_ids, via="web")
    accepted_into = {i.pupil_id for i in items if i.pupil_id}
    names = await app.store.pupil_names(visit.actor, accepted_into) if accepted_into else {}
    rows = []
    for i in items:
        if i.package_id in about:
            who = Described.of_subject(about[i.package_id])
            pupil = who.name + (f", born {long_date(who.dob)}" if who.dob else "")
        elif i.pupil_id:
            pupil = names.get(i.pupil_id, "A pupil no longer on roll")
        elif i.state == "rejected":
            pupil = "Not kept (the file was rejected)"
        else:
            pupil = "Open the file to see"
        rows.append(
            {
                "item": i,
                "pupil": pupil,
                "size": size_in_words(i.size),
                "state": STATES.get(i.state, (i.state, "govuk-tag--grey")),
                "href": _href(i),
            }
        )
    done = {
        "rejected": "The file has been rejected. The sender has been sent your reason "
        "in a signed receipt.",
        "decided": "That file has already been rejected, so it is no longer kept.",
    }
    return app.page(
        request,
        "inbox.html",
        visit,
        title="Inbox",
        rows=rows,
        done=done.get(request.query.get("done", "")),
    )


def _href(i: IncomingSummary) -> str:
    if i.state in ("delivered", "viewed"):
        return f"/inbox/{i.package_id}"
    if i.state == "accepted":
        return f"/inbox/{i.package_id}/accepted"
    return ""


async def preview_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The file's content as a DSL reads it (the service verifies it in full first)."""
    app = webapp(request)
    pid = request.match_info["package_id"]
    try:
        preview = await inbox_of(request).show(visit.actor, pid, via="web")
    except ConflictError:
        return await decided(request, visit, pid)
    readable = preview.readable
    lines = [preview_line(r) for r in readable.lines] if readable else []
    documents = list(readable.documents) if readable else []
    return app.page(
        request,
        "inbox_preview.html",
        visit,
        title=f"File from {preview.package.sender_name}",
        preview=preview,
        package=preview.package,
        about=readable.about if readable else Described.of(preview).name,
        chronology=lines,
        documents=documents,
        counts=_counts_in_words(preview.counts),
        size=size_in_words(preview.package.size),
        state=STATES.get(preview.package.state, (preview.package.state, "govuk-tag--grey")),
    )


# ------------------------------------------------------------------ accepting


async def _accept_page(
    request: web.Request,
    visit: Visit,
    pid: str,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    app = webapp(request)
    try:
        preview = await inbox_of(request).show(visit.actor, pid, via="web")
    except ConflictError:
        return await decided(request, visit, pid)
    theirs = Described.of(preview)
    found = suggestions(await app.store.list_pupils(visit.actor), theirs)
    return app.page(
        request,
        "inbox_accept.html",
        visit,
        title="Which pupil is this file about?",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        package=preview.package,
        theirs=theirs,
        suggestions=[(s, pupil_name(s.pupil)) for s in found],
        notice=notice,
        new_pupil=NEW_PUPIL,
        other_pupil=OTHER_PUPIL,
    )


async def show_accept(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _accept_page(
        request, visit, request.match_info["package_id"], Values.of({}, ACCEPT_FIELDS)
    )


async def kept_accept(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    pid = kept.path.strip("/").split("/")[1]
    return await _accept_page(
        request, visit, pid, Values.of(kept, ACCEPT_FIELDS), notice=KEPT_NOTICE
    )


async def accept(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    inbox = inbox_of(request)
    pid = request.match_info["package_id"]
    values = Values.of(request[FORM_KEY], ACCEPT_FIELDS)
    errors = FormErrors()
    require(visit.actor, Permission.RECEIVE_TRANSFER)
    chosen: str | None = None
    create_new = False
    if not values.pupil:
        errors.add("pupil", "Choose the pupil this file is about, or a new pupil")
    elif values.pupil == NEW_PUPIL:
        create_new = True
    elif values.pupil == OTHER_PUPIL:
        upn = values.other_upn.strip().upper()
        if not upn:
            errors.add("other_upn", "Enter the UPN of the pupil on your roll")
        else:
            try:
                found = await app.store.find_pupil(visit.actor, upn)
            except (InputError, NotFoundError):
                errors.add(
                    "other_upn",
                    "No pupil on your roll has this UPN: check it, or choose a new pupil",
                )
            else:
                chosen = found.id
    else:
        try:
            preview = await inbox.show(visit.actor, pid, via="web")
        except ConflictError:
            return await decided(request, visit, pid)
        offered = suggestions(await app.store.list_pupils(visit.actor), Described.of(preview))
        if values.pupil not in {s.pupil.id for s in offered}:
            errors.add(
                "pupil", "Choose one of the pupils listed, another pupil by UPN, or a new pupil"
            )
        else:
            chosen = values.pupil
    if errors:
        return await _accept_page(request, visit, pid, values, errors=errors)
    try:
        done = await inbox.accept(
            visit.actor, pid, pupil_id=chosen, create_new=create_new, via="web"
        )
    except ConflictError:
        return await decided(request, visit, pid)
    query = {
        "imported": sum(done.counts.values()) - done.amended,
        "held": done.held,
        "amended": done.amended,
        "new": int(done.new_pupil),
    }
    return redirect(f"/inbox/{pid}/accepted?{urlencode(query)}")


def _number(query: Any, name: str) -> int | None:
    text = query.get(name, "")
    return int(text) if text.isdigit() and len(text) < 7 else None


async def accepted_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    """What accepting did (the numbers come back from the accept), and the pupil's link."""
    app = webapp(request)
    pid = request.match_info["package_id"]
    items = await inbox_of(request).list(visit.actor, state="accepted", via="web")
    item = next((i for i in items if i.package_id == pid), None)
    if item is None or item.pupil_id is None:
        raise NotFoundError("no such accepted file in your inbox")
    pupil = await app.store.get_pupil(visit.actor, item.pupil_id)
    q = request.query
    numbers = {n: _number(q, n) for n in ("imported", "held", "amended")}
    return app.page(
        request,
        "inbox_accepted.html",
        visit,
        title="File accepted",
        item=item,
        pupil=pupil,
        name=pupil_name(pupil),
        href=f"/pupils/{pupil_ref(pupil)}#chronology",
        numbers=numbers if None not in numbers.values() else None,
        new_pupil=q.get("new") == "1",
    )


# ------------------------------------------------------------------ rejecting


async def _reject_page(
    request: web.Request,
    visit: Visit,
    pid: str,
    values: Values,
    *,
    errors: FormErrors | None = None,
    notice: str = "",
) -> web.StreamResponse:
    items = await inbox_of(request).list(visit.actor, via="web")
    item = next(
        (i for i in items if i.package_id == pid and i.state in ("delivered", "viewed")), None
    )
    if item is None:
        return await decided(request, visit, pid)
    return webapp(request).page(
        request,
        "inbox_reject.html",
        visit,
        title="Reject this file",
        status=400 if errors else 200,
        errors=errors,
        values=values,
        item=item,
        notice=notice,
    )


async def show_reject(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _reject_page(
        request, visit, request.match_info["package_id"], Values.of({}, REJECT_FIELDS)
    )


async def kept_reject(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    pid = kept.path.strip("/").split("/")[1]
    return await _reject_page(
        request, visit, pid, Values.of(kept, REJECT_FIELDS), notice=KEPT_NOTICE
    )


async def reject(request: web.Request, visit: Visit) -> web.StreamResponse:
    pid = request.match_info["package_id"]
    values = Values.of(request[FORM_KEY], REJECT_FIELDS)
    errors = FormErrors()
    require(visit.actor, Permission.RECEIVE_TRANSFER)
    reason = " ".join(values.reason.split())
    if not reason:
        errors.add("reason", "Say why you are rejecting the file: the sender reads it")
    elif len(reason) > MAX_REASON:
        errors.add("reason", f"The reason must be {MAX_REASON} characters or fewer")
    if errors:
        return await _reject_page(request, visit, pid, values, errors=errors)
    try:
        await inbox_of(request).reject(visit.actor, pid, reason, via="web")
    except ConflictError:
        return await decided(request, visit, pid)
    return redirect("/inbox?done=rejected")


_P: Final = f"/inbox/{PACKAGE}"
ROUTES: Final = (
    WebRoute("GET", "/inbox", inbox_page, "Inbox.list, Inbox.subjects", name="inbox"),
    WebRoute("GET", _P, preview_page, "Inbox.show", name="inbox-preview"),
    WebRoute("GET", f"{_P}/accept", show_accept, "Inbox.show, Store.list_pupils"),
    WebRoute("POST", f"{_P}/accept", accept, "Inbox.accept", form=kept_accept),
    WebRoute("GET", f"{_P}/accepted", accepted_page, "Inbox.list, Store.get_pupil"),
    WebRoute("GET", f"{_P}/reject", show_reject, "Inbox.list"),
    WebRoute("POST", f"{_P}/reject", reject, "Inbox.reject", form=kept_reject),
)
