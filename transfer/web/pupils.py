"""A pupil's page (details and chronology, with filters) and a concern's page (its text,
pupils, who was involved, body-map marks, amendments, and for the DSL team its triage,
actions, contacts and documents), and a document's download.

Everything shown comes from the services, which decide what the person may read: a
teacher's pupil page lists only the concerns they logged; restricted categories are left
out by the store for those not allowed; an administrator sees a pupil's details and no
concern content. People are shown by name and role; a received record by the school
that sent it and when.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from schemas.records import ChronologyLine, ConcernRecord, PupilRecord
from transfer.errors import InputError, NotFoundError
from transfer.store.permissions import Permission
from transfer.web.core import FormErrors, Visit, WebRoute, webapp
from transfer.web.dashboard import STATUS_TAGS
from transfer.web.words import (
    DECISIONS,
    KINDS,
    SIDES,
    BadDate,
    category_label,
    local_day,
    not_found_for_bad_ids,
    person,
    read_date,
    shorten,
)

#: A record's id in a web address (concerns, documents, actions: UUIDs), so that other
#: pages under the same prefix (``/concerns/new``) are never taken for one.
UUID: Final = "[0-9a-fA-F-]{36}"
#: Chronology lines per page (a 1,000-entry chronology is ten pages, each quick to send).
PAGE_SIZE: Final = 100


def pupil_ref(p: PupilRecord) -> str:
    """How a pupil is named in a web address: by UPN, as staff know them (else the id)."""
    return p.upn or p.id


def pupil_name(p: PupilRecord) -> str:
    year = f", Year {p.year_group}" if p.year_group else ""
    return f"{p.forename} {p.surname}{year}"


async def find_pupil(request: web.Request, visit: Visit, ref: str) -> PupilRecord:
    app = webapp(request)
    try:
        return await app.store.get_pupil(visit.actor, ref)
    except InputError as err:
        raise not_found_for_bad_ids(err) from None


# ------------------------------------------------------------------ the chronology


@dataclass
class Line:
    """One chronology line as the page shows it."""

    kind: str
    when: datetime
    title: str
    text: str = ""
    who: str = ""
    concern_id: str | None = None
    category: str = ""
    received: str = ""
    document_id: str | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Filters:
    category: str = ""
    kinds: list[str] = field(default_factory=list)
    start: date | None = None
    end: date | None = None
    typed: dict[str, str] = field(default_factory=dict)

    def query(self, page: int) -> str:
        pairs: list[tuple[str, str]] = []
        if self.category:
            pairs.append(("category", self.category))
        pairs += [("kind", k) for k in self.kinds]
        for name in ("from", "to"):
            if self.typed.get(name):
                pairs.append((name, self.typed[name]))
        if page > 1:
            pairs.append(("page", str(page)))
        return "?" + urlencode(pairs) if pairs else ""


def read_filters(query: Any, errors: FormErrors) -> Filters:
    f = Filters(
        category=query.get("category", "")[:64],
        kinds=[k for k in query.getall("kind", []) if k in KINDS],
        typed={"from": query.get("from", "")[:40], "to": query.get("to", "")[:40]},
    )
    for name, what in (("from", "The start date"), ("to", "The end date")):
        try:
            value = read_date(f.typed[name], what)
        except BadDate as err:
            errors.add(name, str(err))
            continue
        if name == "from":
            f.start = value
        else:
            f.end = value
    if f.start and f.end and f.start > f.end:
        errors.add("to", "The end date must be the same as or after the start date")
    return f


def _keep(line: ChronologyLine, f: Filters, categories: dict[str, str]) -> bool:
    if f.kinds and line.kind not in f.kinds:
        return False
    if f.category and categories.get(line.concern_id or "") != f.category:
        return False
    day = local_day(line.occurred_at)
    if f.start and day < f.start:
        return False
    return not (f.end and day > f.end)


def _received(line: ChronologyLine) -> str:
    p = line.provenance
    if p is None:
        return ""
    return f"Received from {p.source_org_name} on {_day(p.received_at)}"


def _day(value: datetime) -> str:
    from transfer.web.rendering import long_date

    return long_date(value)


def _line(
    e: ChronologyLine, labels: dict[str, str], owners: dict[str, str], categories: dict[str, str]
) -> Line:
    r: Any = e.record
    who = person(e.recorded_by_name, e.recorded_by_role)
    line = Line(
        kind=e.kind,
        when=e.occurred_at,
        title=KINDS[e.kind],
        who=who,
        concern_id=e.concern_id,
        received=_received(e),
    )
    if e.concern_id:
        line.category = category_label(categories.get(e.concern_id, ""), labels)
    if e.kind == "concern":
        line.title = f"Concern: {line.category}"
        line.text = shorten(r.account)
        status = STATUS_TAGS.get(r.status, (r.status, ""))[0]
        line.facts = [("State", status)]
        if r.location:
            line.facts.insert(0, ("Where", r.location))
    elif e.kind == "triage":
        line.title = f"Triage decision: {DECISIONS.get(r.decision, r.decision)}"
        line.text = shorten(r.reason)
    elif e.kind == "action":
        line.title = "Action"
        line.text = shorten(r.text)
        line.facts = [("Owner", owners.get(r.assignee_id or "", "Nobody named"))]
        if r.due_on:
            line.facts.append(("Due", _day_of(r.due_on)))
        line.facts.append(("Done", _day(r.done_at) if r.done_at else "Not yet"))
    elif e.kind == "contact":
        line.title = f"Contact with {r.agency}"
        line.text = shorten(r.outcome)
    elif e.kind == "document":
        line.title = f"Document: {r.filename}"
        line.document_id = r.id
    else:
        line.title = "Transfer or referral"
        line.text = shorten(r.summary)
    return line


def _day_of(value: date) -> str:
    from transfer.web.rendering import long_date

    return long_date(value)


async def lines_for(
    request: web.Request, visit: Visit, pupil_id: str
) -> tuple[list[ChronologyLine], dict[str, str], dict[str, str], dict[str, str]]:
    """The pupil's chronology (what the store lets the person read), the category labels,
    each concern's category and the names of the actions' owners."""
    app = webapp(request)
    entries = await app.store.chronology_lines(visit.actor, pupil_id)
    labels = {c.key: c.label for c in await app.store.list_categories(visit.actor)}
    categories = {
        e.concern_id: e.record.category
        for e in entries
        if e.kind == "concern" and e.concern_id and isinstance(e.record, ConcernRecord)
    }
    owner_ids = {getattr(e.record, "assignee_id", None) for e in entries if e.kind == "action"}
    named = await app.store.people_named(visit.actor, owner_ids)
    owners = {p.id: person(p.name, _role(p.role)) for p in named}
    return entries, labels, categories, owners


async def choosable_categories(request: web.Request, visit: Visit) -> list[tuple[str, str]]:
    """The categories a person may filter by: restricted ones only for those who may read
    them (the store leaves those concerns out for the others anyway)."""
    restricted_ok = visit.actor.has(Permission.READ_RESTRICTED)
    found = await webapp(request).store.list_categories(visit.actor)
    return sorted(
        ((c.key, c.label) for c in found if restricted_ok or not c.restricted),
        key=lambda kv: kv[1],
    )


def _role(role: str | None) -> str | None:
    from transfer.store.people import role_label

    return role_label(role)


async def pupil_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    pupil = await find_pupil(request, visit, request.match_info["ref"])
    if pupil.erased_at is not None:
        raise NotFoundError("this pupil's records have been erased")
    errors = FormErrors()
    filters = read_filters(request.query, errors)
    context: dict[str, Any] = {
        "pupil": pupil,
        "name": pupil_name(pupil),
        "filters": filters,
        "kinds": KINDS,
        "ref": pupil_ref(pupil),
    }
    from transfer.web.sending import leaving_context

    context["leaving"] = await leaving_context(request, visit, pupil)
    context["next_school"] = await _next_school(app, pupil)
    actor = visit.actor
    context["may_audit"] = actor.has(Permission.READ_AUDIT) and app.services.trail is not None
    context["may_export"] = actor.has(Permission.EXPORT_SUBJECT_ACCESS)
    if actor.has(Permission.READ_CHRONOLOGY):
        entries, labels, categories, owners = await lines_for(request, visit, pupil.id)
        kept = entries if errors else [e for e in entries if _keep(e, filters, categories)]
        try:
            page = max(1, int(request.query.get("page", "1")))
        except ValueError:
            page = 1
        pages = max(1, -(-len(kept) // PAGE_SIZE))
        page = min(page, pages)
        shown = kept[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        base = f"/pupils/{pupil_ref(pupil)}"
        context.update(
            chronology=[_line(e, labels, owners, categories) for e in shown],
            total=len(entries),
            matching=len(kept),
            page=page,
            pages=pages,
            first=(page - 1) * PAGE_SIZE + 1,
            last=(page - 1) * PAGE_SIZE + len(shown),
            previous_href=base + filters.query(page - 1) if page > 1 else "",
            next_href=base + filters.query(page + 1) if page < pages else "",
            categories=await choosable_categories(request, visit),
            filtered=bool(filters.category or filters.kinds or filters.start or filters.end),
        )
    elif actor.has(Permission.RECORD_CONCERN):
        labels = {c.key: c.label for c in await app.store.list_categories(actor)}
        mine = await app.store.list_concerns(actor, pupil_id=pupil.id)
        context["own_concerns"] = [
            {
                "id": c.id,
                "category": category_label(c.category, labels),
                "happened_at": c.happened_at,
                "status": STATUS_TAGS.get(c.status, (c.status, "")),
            }
            for c in mine
        ]
    if actor.has(Permission.SEND_REFERRAL) and request.config_dict.get(_referrals_key()):
        from transfer.web.referrals import referral_rows

        context["referrals"] = await referral_rows(request, visit, pupil.id)
        context["done"] = {"discarded": "The draft referral has been discarded."}.get(
            request.query.get("done", "")
        )
    return app.page(
        request,
        "pupil.html",
        visit,
        title=pupil_name(pupil),
        errors=errors,
        status=400 if errors else 200,
        **context,
    )


async def _next_school(app: Any, pupil: PupilRecord) -> str:
    """The pupil's next school in words: as the signed directory names it when its URN is
    there ("Riverside Academy, Keynsham (URN 654321)"), else as recorded (a CTF gives only
    the URN)."""
    from transfer.errors import HandoverError
    from transfer.web.sending import school_label

    d = pupil.destination
    if d is None or not (d.name or d.urn):
        return "Not known"
    if d.urn and app.services.directory is not None:
        try:
            entries = await app.services.directory.entries()
        except HandoverError:
            entries = []
        for e in entries:
            if e.kind == "school" and d.urn in (e.urn, e.org_id):
                return school_label(e)
    if d.name:
        return f"{d.name} (URN {d.urn})" if d.urn else d.name
    return f"URN {d.urn} (not in the signed directory)"


def _referrals_key() -> Any:
    from transfer.api.routes_referrals import REFERRALS_KEY

    return REFERRALS_KEY


# ------------------------------------------------------------------ a concern


async def concern_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    actor = visit.actor
    concern_id = request.match_info["concern_id"]
    concern = await app.store.get_concern(actor, concern_id)
    labels = {c.key: c.label for c in await app.store.list_categories(actor)}
    names = await app.store.pupil_names(actor, concern.pupil_ids)
    pupils = await _pupils(request, visit, concern)
    amendments = await app.store.concern_amendments(actor, concern.id)
    ids = [concern.recorded_by, *(a.amended_by for a in amendments)]
    context: dict[str, Any] = {"concern": concern, "pupils": pupils, "names": names}
    if actor.has(Permission.READ_CHRONOLOGY) and concern.pupil_ids:
        entries, _, categories, owners = await lines_for(request, visit, concern.pupil_ids[0])
        mine = [e for e in entries if e.concern_id == concern.id and e.kind != "concern"]
        ids += [getattr(e.record, "assignee_id", None) or "" for e in mine]
        context["triage"] = [
            _line(e, labels, owners, categories) for e in mine if e.kind == "triage"
        ]
        context["actions"] = [
            (e.record, _line(e, labels, owners, categories)) for e in mine if e.kind == "action"
        ]
        context["contacts"] = [
            _line(e, labels, owners, categories) for e in mine if e.kind == "contact"
        ]
        context["documents"] = [
            _line(e, labels, owners, categories) for e in mine if e.kind == "document"
        ]
    people = {p.id: person(p.name, _role(p.role)) for p in await app.store.people_named(actor, ids)}
    if concern.provenance is not None:
        logged_by = f"A member of staff at {concern.provenance.source_org_name}"
    else:
        logged_by = people.get(concern.recorded_by, "someone no longer known here")
    may_amend = concern.provenance is None and (
        actor.has(Permission.TRIAGE) or concern.recorded_by == actor.staff_id
    )
    done = {
        "triage": "The triage decision has been recorded.",
        "action": "The action has been added.",
        "contact": "The contact has been recorded.",
        "done": "The action has been marked as done.",
        "document": "The document has been added.",
        "amended": "The concern has been changed. The earlier text is kept below.",
    }
    return app.page(
        request,
        "concern.html",
        visit,
        title=f"Concern: {category_label(concern.category, labels)}",
        category=category_label(concern.category, labels),
        logged_by=logged_by,
        amendments=[
            (a, people.get(a.amended_by, "someone no longer known here")) for a in amendments
        ],
        status_tag=STATUS_TAGS.get(concern.status, (concern.status, "govuk-tag--grey")),
        sides=SIDES,
        may_triage=actor.has(Permission.TRIAGE),
        may_act=actor.has(Permission.MANAGE_ACTIONS),
        may_contact=actor.has(Permission.MANAGE_CONTACTS),
        may_amend=may_amend,
        may_document=actor.has(Permission.MANAGE_DOCUMENTS),
        done=done.get(request.query.get("done", "")),
        **context,
    )


async def _pupils(request: web.Request, visit: Visit, concern: ConcernRecord) -> list[Any]:
    """The concern's pupils with a link to each one's page (by UPN)."""
    app = webapp(request)
    out = []
    for pid in concern.pupil_ids:
        try:
            p = await app.store.get_pupil(visit.actor, pid)
        except NotFoundError:
            continue
        out.append({"name": pupil_name(p), "href": f"/pupils/{pupil_ref(p)}", "upn": p.upn})
    return out


# ------------------------------------------------------------------ documents


async def download(request: web.Request, visit: Visit) -> web.StreamResponse:
    """A document, streamed as it is decrypted (the store checks who may and audits it)."""
    app = webapp(request)
    ref, chunks = await app.store.read_document(visit.actor, request.match_info["document_id"])
    safe = "".join(ch for ch in ref.filename if ch.isalnum() or ch in "._- ")[:100] or "document"
    response = web.StreamResponse(
        headers={
            "Content-Type": ref.media_type,
            "Content-Disposition": f'attachment; filename="{safe}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        }
    )
    response.content_length = ref.size
    await response.prepare(request)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


ROUTES: Final = (
    WebRoute(
        "GET",
        "/pupils/{ref}",
        pupil_page,
        "Store.get_pupil, Store.chronology_lines, Store.list_concerns",
        name="pupil",
    ),
    WebRoute(
        "GET",
        f"/concerns/{{concern_id:{UUID}}}",
        concern_page,
        "Store.get_concern, Store.concern_amendments, Store.chronology_lines",
        name="concern",
    ),
    WebRoute(
        "GET",
        f"/documents/{{document_id:{UUID}}}",
        download,
        "Store.read_document",
        name="document",
    ),
)
