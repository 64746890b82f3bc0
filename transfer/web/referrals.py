"""Referrals in the browser (issue 14, "Referrals"): a wizard from the pupil's page, the
referral's own page with its state, deadline and outcome, and the list of referrals.

The steps, each a page of its own (GOV.UK's question pages, then check your answers):

1. choose the agency, by name, from the signed directory (MASH / social care, LADO,
   police): ``/pupils/{ref}/referrals/new``;
2. that agency's form, the child prefilled from the pupil record and the referrer from
   the person signed in, consent with its reason; every problem at its field
   (:mod:`transfer.web.referral_forms`), and **no draft** until the form is valid:
   the service makes the draft whole or not at all;
3. which chronology entries and documents go (``/referrals/{id}/entries``), with a
   warning when none is chosen (the agency would get the form alone);
4. what to hide (``/referrals/{id}/redact``): the words typed are replaced by
   ``[redacted]`` wherever they appear in what is chosen, and the page shows every
   chosen entry exactly as it will be sealed (the service's own preview). Words rather
   than selected spans because a page without JavaScript cannot report a selection, and
   a third party's name usually appears many times: one mark hides every occurrence,
   and a mark that matches nothing is refused (a misspelt name is caught, not sent);
5. check and send (``/referrals/{id}/check``): the form as the agency reads it, the
   entries as sealed, the route (the agency's node, a pickup link with a passcode to
   read out by telephone, or an offline bundle to download) and a fresh authenticator
   code. The passcode and any passphrase are shown once, on the answer to the POST.

A draft is resumed from its page (a task list) and can be discarded. The services
(:class:`transfer.referrals.service.Referrals`, :mod:`receivers.sending`) decide who may
do what and audit it; every page asks a service first (the agency choice and a new
form :meth:`~transfer.referrals.service.Referrals.may_start`), so that a teacher typing an
address gets the refusal page and the refusal is in the audit log.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from multidict import MultiDict

from receivers.portal.service import PickupPortal
from receivers.sending import (
    RouteUnavailable,
    send_by_node,
    send_offline,
    send_via_portal,
    withdraw,
)
from schemas.records import ChronologyEntry
from schemas.referrals import NewRedaction, ReferralRecord, ReferralSummary, SelectedItem
from transfer.errors import ConflictError, HandoverError, InputError, NotFoundError
from transfer.exchange.outbox import Outbox
from transfer.referrals.forms import parse_outcome
from transfer.referrals.redaction import REDACTABLE_FIELDS
from transfer.referrals.service import NothingSelectedError, Referrals
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.pupils import UUID, find_pupil, pupil_name, pupil_ref
from transfer.web.referral_forms import (
    FORMS,
    KIND_NAMES,
    draft_values,
    form_values,
    prefill,
    read_form,
    repeats,
    row_counts,
)
from transfer.web.rendering import ENGLAND, long_date, redirect
from transfer.web.stepup import check_code
from transfer.web.tokens import KeptForm
from transfer.web.words import shorten

#: The referral's state in words, and its tag's colour.
STATES: Final = {
    "draft": ("Draft", "govuk-tag--grey"),
    "sent": ("Sent", "govuk-tag--blue"),
    "delivered": ("Picked up", "govuk-tag--turquoise"),
    "accepted": ("Acknowledged", "govuk-tag--green"),
    "rejected": ("Declined", "govuk-tag--red"),
    "closed": ("Outcome recorded", "govuk-tag--purple"),
}
#: A referral's events in words (the referral's page).
EVENTS: Final = {
    "drafted": "Drafted",
    "form_changed": "Form changed",
    "selected": "Entries chosen",
    "redaction_marked": "Words to hide added",
    "redaction_removed": "Words to hide removed",
    "sent": "Sent",
    "unsent": "Taken back to draft",
    "delivered": "Picked up by the agency",
    "handed_over": "Offline bundle handed over",
    "accepted": "Acknowledged by the agency",
    "rejected": "Declined by the agency",
    "outcome": "Outcome recorded",
}
ROUTES_IN_WORDS: Final = {
    "node": "To the agency's Handover node",
    "portal": "Pickup link, with a passcode you read out by telephone",
    "offline": "Offline bundle to download and hand over",
}
OUTCOME_CHOICES: Final[dict[str, dict[str, tuple[tuple[str, str], ...]]]] = {
    "social_care": {
        "rag": (("red", "Red"), ("amber", "Amber"), ("green", "Green")),
        "decision": (
            ("section_47", "Section 47 enquiry"),
            ("section_17", "Child in need (section 17)"),
            ("early_help", "Early help"),
            ("signposted", "Signposted to other services"),
            ("no_further_action", "No further action"),
            ("other", "Other"),
        ),
    },
    "lado": {
        "outcome": (
            ("substantiated", "Substantiated"),
            ("unsubstantiated", "Unsubstantiated"),
            ("malicious", "Malicious"),
            ("false", "False"),
            ("unfounded", "Unfounded"),
        ),
    },
}
_R: Final = f"/referrals/{{referral_id:{UUID}}}"


def _referrals(request: web.Request) -> Referrals:
    from transfer.api.routes_referrals import REFERRALS_KEY

    found = request.config_dict.get(REFERRALS_KEY)
    if found is None:
        raise NotFoundError("referrals are not set up on this node")
    return found


def _portal(request: web.Request) -> PickupPortal | None:
    from transfer.api.routes_portal import PORTAL_KEY

    return request.config_dict.get(PORTAL_KEY)


def _outbox(request: web.Request) -> Outbox | None:
    from transfer.api.routes_outbox import OUTBOX_KEY

    return request.config_dict.get(OUTBOX_KEY)


def _exports(request: web.Request) -> Path:
    from transfer.api.routing import EXPORTS_KEY

    return Path(request.config_dict[EXPORTS_KEY]) / "referrals"


def _today(request: web.Request) -> date:
    return webapp(request).accounts.now().astimezone(ENGLAND).date()


def deadline(summary_: ReferralSummary, today: date) -> dict[str, str] | None:
    """The LADO one-working-day deadline in words, with a tag when due or late."""
    if summary_.due_on is None:
        return None
    due = long_date(summary_.due_on)
    if summary_.state != "draft":
        return {
            "text": f"Was due by the end of {summary_.due_on:%A} {due}",
            "tag": "",
            "tag_class": "",
        }
    if summary_.due_on < today:
        return {
            "text": f"Overdue: it had to be sent by the end of {summary_.due_on:%A} {due}",
            "tag": "Overdue",
            "tag_class": "govuk-tag--red",
        }
    if summary_.due_on == today:
        return {
            "text": f"Send it today: due by the end of {summary_.due_on:%A} {due}",
            "tag": "Due today",
            "tag_class": "govuk-tag--orange",
        }
    return {
        "text": f"Due by the end of {summary_.due_on:%A} {due} (one working day from "
        "when the school learnt of the allegation)",
        "tag": "Due soon",
        "tag_class": "govuk-tag--yellow",
    }


async def _agency_names(referrals: Referrals, ids: set[str]) -> dict[str, str]:
    names = {}
    for org_id in ids:
        try:
            names[org_id] = (await referrals.directory.entry(org_id)).name
        except NotFoundError:
            names[org_id] = "an agency no longer in the directory"
    return names


async def referral_rows(
    request: web.Request, visit: Visit, pupil_id: str | None = None
) -> list[dict[str, Any]]:
    """The referrals (of one pupil, or all) as the lists show them."""
    referrals = _referrals(request)
    found = await referrals.list(visit.actor, pupil_id=pupil_id)
    names = await _agency_names(referrals, {r.agency_org_id for r in found})
    pupils = await webapp(request).store.pupil_names(visit.actor, {r.pupil_id for r in found})
    today = _today(request)
    return [
        {
            "id": r.id,
            "kind": KIND_NAMES[r.kind],
            "agency": names[r.agency_org_id],
            "pupil": pupils.get(r.pupil_id, "a pupil no longer on roll"),
            "state": STATES.get(r.state, (r.state, "govuk-tag--grey")),
            "created_at": r.created_at,
            "updated_at": r.updated_at,
            "deadline": deadline(r, today),
        }
        for r in sorted(found, key=lambda r: r.updated_at, reverse=True)
    ]


# ------------------------------------------------------------------ the list


async def list_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    rows = await referral_rows(request, visit)
    return webapp(request).page(request, "referrals.html", visit, title="Referrals", rows=rows)


# ------------------------------------------------------------------ 1. the agency


async def _agencies(referrals: Referrals) -> list[tuple[str, str, str]]:
    """(org id, name, kind) of the directory's agencies that take referrals, by name."""
    entries = await referrals.directory.entries()  # type: ignore[attr-defined]
    return sorted(
        ((e.org_id, e.name, e.kind) for e in entries if e.kind in FORMS),
        key=lambda a: (list(FORMS).index(a[2]), a[1]),
    )


async def start_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals = _referrals(request)
    pupil = await find_pupil(request, visit, request.match_info["ref"])
    await referrals.may_start(visit.actor, pupil.id)  # refused and audited outside the team
    agencies = await _agencies(referrals)
    chosen = request.query.get("agency", "")
    if chosen:
        found = next((a for a in agencies if a[0] == chosen), None)
        if found is not None:
            values = prefill(
                found[2],
                pupil,
                school=visit.org_name,
                name=visit.actor.display_name,
                role=_role_words(visit),
            )
            return await _form_page(request, visit, pupil_ref(pupil), found, values)
    errors = FormErrors()
    if "agency" in request.query:
        errors.add("agency", "Select the agency to refer to")
    return webapp(request).page(
        request,
        "referral_agency.html",
        visit,
        title="Who are you referring to?",
        status=400 if errors else 200,
        errors=errors,
        pupil=pupil,
        name=pupil_name(pupil),
        ref=pupil_ref(pupil),
        agencies=[(a[0], a[1], KIND_NAMES[a[2]]) for a in agencies],
    )


def _role_words(visit: Visit) -> str:
    from transfer.store.permissions import Role

    if Role.DSL in visit.roles:
        return "Designated safeguarding lead"
    if Role.DEPUTY_DSL in visit.roles:
        return "Deputy designated safeguarding lead"
    return ", ".join(visit.role_names)


# ------------------------------------------------------------------ 2. the form


async def _form_page(
    request: web.Request,
    visit: Visit,
    ref: str,
    agency: tuple[str, str, str],
    values: dict[str, Any],
    *,
    errors: FormErrors | None = None,
    notice: str = "",
    referral_id: str = "",
    counts: dict[str, int] | None = None,
) -> web.StreamResponse:
    org_id, name, kind = agency
    counts = counts or {r.path: r.blank for r in repeats(kind)}
    action = f"/referrals/{referral_id}/form" if referral_id else f"/pupils/{ref}/referrals/new"
    return webapp(request).page(
        request,
        "referral_form.html",
        visit,
        title=f"Referral to {name}",
        status=400 if errors else 200,
        errors=errors,
        sections=FORMS[kind],
        values=values,
        counts=counts,
        agency_id=org_id,
        kind_name=KIND_NAMES[kind],
        action=action,
        ref=ref,
        notice=notice,
        back=f"/referrals/{referral_id}" if referral_id else f"/pupils/{ref}",
    )


def _errors(problems: dict[str, str]) -> FormErrors:
    errors = FormErrors()
    for fid, message in problems.items():
        errors.add(fid, message)
    return errors


async def create_draft(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _create(request, visit, request[FORM_KEY], request.match_info["ref"])


async def _create(
    request: web.Request, visit: Visit, data: Any, ref: str, notice: str = ""
) -> web.StreamResponse:
    referrals = _referrals(request)
    pupil = await find_pupil(request, visit, ref)
    await referrals.may_start(visit.actor, pupil.id)
    agency = next((a for a in await _agencies(referrals) if a[0] == data.get("agency", "")), None)
    if agency is None:
        return redirect(f"/pupils/{pupil_ref(pupil)}/referrals/new")
    counts, added = row_counts(agency[2], data)
    values = form_values(agency[2], data, counts)
    if notice or added:  # given back after signing in again, or a row added: as typed
        return await _form_page(
            request, visit, pupil_ref(pupil), agency, values, notice=notice, counts=counts
        )
    form, problems = read_form(agency[2], values, counts)
    if form is None:
        return await _form_page(
            request,
            visit,
            pupil_ref(pupil),
            agency,
            values,
            errors=_errors(problems),
            counts=counts,
        )
    record = await referrals.draft(
        visit.actor, pupil_id=pupil.id, agency_org_id=agency[0], form=form
    )
    return redirect(f"/referrals/{record.id}/entries")


async def kept_create(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    from transfer.web.triage import KEPT_NOTICE

    ref = kept.path.strip("/").split("/")[1]
    return await _create(request, visit, _Kept(kept), ref, KEPT_NOTICE)


class _Kept:
    """A kept form as a POST's fields (``get`` and ``getall``)."""

    def __init__(self, kept: KeptForm) -> None:
        self.data: MultiDict[str] = MultiDict(kept.fields)

    def get(self, name: str, default: str = "") -> str:
        return self.data.get(name, default)

    def getall(self, name: str, default: list[str]) -> list[str]:
        return self.data.getall(name, default)


async def kept_change(request: web.Request, visit: Visit, kept: KeptForm) -> web.StreamResponse:
    """A draft's changed form sent after the session expired, given back filled in."""
    from transfer.web.triage import KEPT_NOTICE

    referrals = _referrals(request)
    record = await referrals.get(visit.actor, kept.path.strip("/").split("/")[1])
    pupil = await find_pupil(request, visit, record.pupil_id)
    counts, _ = row_counts(record.kind, _Kept(kept))
    return await _form_page(
        request,
        visit,
        pupil_ref(pupil),
        await _agency_of(referrals, record),
        form_values(record.kind, _Kept(kept), counts),
        notice=KEPT_NOTICE,
        referral_id=record.id,
        counts=counts,
    )


async def _draft(request: web.Request, visit: Visit) -> tuple[Referrals, ReferralRecord]:
    referrals = _referrals(request)
    record = await referrals.get(visit.actor, request.match_info["referral_id"])
    return referrals, record


async def _agency_of(referrals: Referrals, record: ReferralRecord) -> tuple[str, str, str]:
    return (record.agency_org_id, record.agency_name or "the agency", record.kind)


async def change_form_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals, record = await _draft(request, visit)
    if record.state != "draft":
        return redirect(f"/referrals/{record.id}")
    pupil = await find_pupil(request, visit, record.pupil_id)
    values, counts = draft_values(record.kind, record.form)
    return await _form_page(
        request,
        visit,
        pupil_ref(pupil),
        await _agency_of(referrals, record),
        values,
        referral_id=record.id,
        counts=counts,
    )


async def change_form(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals, record = await _draft(request, visit)
    pupil = await find_pupil(request, visit, record.pupil_id)
    counts, added = row_counts(record.kind, request[FORM_KEY])
    values = form_values(record.kind, request[FORM_KEY], counts)
    form, problems = (None, {}) if added else read_form(record.kind, values, counts)
    if form is None:
        return await _form_page(
            request,
            visit,
            pupil_ref(pupil),
            await _agency_of(referrals, record),
            values,
            errors=_errors(problems) if problems else None,
            referral_id=record.id,
            counts=counts,
        )
    await referrals.update_form(visit.actor, record.id, form)
    return redirect(f"/referrals/{record.id}/check")


# ------------------------------------------------------------------ 3. what goes


def _entry_label(e: ChronologyEntry) -> tuple[str, str]:
    """A chronology entry as a choice: its title and a line of its text."""
    from transfer.web.words import KINDS

    r: Any = e.record
    when = long_date(e.occurred_at)
    if e.kind == "concern":
        return f"Concern of {when}", shorten(r.account, 160)
    if e.kind == "triage":
        return f"Triage decision of {when}", shorten(r.reason, 160)
    if e.kind == "action":
        return f"Action of {when}", shorten(r.text, 160)
    if e.kind == "contact":
        return f"Contact with {r.agency} on {when}", shorten(r.outcome, 160)
    if e.kind == "document":
        return f"Document: {r.filename} ({when})", "The file goes as it is: it is not redacted."
    return f"{KINDS.get(e.kind, e.kind)} of {when}", ""


async def entries_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    _, record = await _draft(request, visit)
    if record.state != "draft":
        return redirect(f"/referrals/{record.id}")
    app = webapp(request)
    lines = await app.store.chronology_lines(visit.actor, record.pupil_id)
    chosen = {(s.kind, s.id) for s in record.selection}
    items = [
        {
            "value": f"{e.kind}:{e.id}",
            "text": _entry_label(e)[0],
            "hint": {"text": _entry_label(e)[1]} if _entry_label(e)[1] else None,
            "checked": (e.kind, e.id) in chosen,
        }
        for e in lines
        if e.kind in REDACTABLE_FIELDS
    ]
    return app.page(
        request,
        "referral_entries.html",
        visit,
        title="Which entries go with the referral?",
        record=record,
        items=items,
        none_chosen=not record.selection,
        done="Draft saved." if request.query.get("done") else None,
    )


async def save_entries(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals, record = await _draft(request, visit)
    items = []
    for value in request[FORM_KEY].getall("entry", []):
        kind, _, ident = value.partition(":")
        if kind in REDACTABLE_FIELDS and ident:
            items.append(SelectedItem.model_validate({"kind": kind, "id": ident[:64]}))
    await referrals.select(visit.actor, record.id, items)
    return redirect(f"/referrals/{record.id}/redact")


# ------------------------------------------------------------------ 4. what to hide


def _as_sent(entries: list[ChronologyEntry]) -> list[dict[str, Any]]:
    """Each chosen entry's text fields exactly as they will be sealed."""
    out = []
    for e in entries:
        r: Any = e.record
        title, _ = _entry_label(e)
        texts = []
        for name in REDACTABLE_FIELDS.get(e.kind, ()):
            value = getattr(r, name, "")
            if value:
                texts.append((name.replace("_", " ").capitalize(), value))
        for mark in getattr(r, "body_map", ()) or ():
            texts.append(("Body map", mark.description))
        out.append({"title": title, "texts": texts})
    return out


async def _redact_page(
    request: web.Request, visit: Visit, *, errors: FormErrors | None = None, typed: str = ""
) -> web.StreamResponse:
    referrals, record = await _draft(request, visit)
    if record.state != "draft":
        return redirect(f"/referrals/{record.id}")
    preview = await referrals.preview(visit.actor, record.id)
    return webapp(request).page(
        request,
        "referral_redact.html",
        visit,
        title="Hide names and other details",
        status=400 if errors else 200,
        errors=errors,
        record=record,
        entries=_as_sent(preview),
        marks=[m for m in record.redactions if m.text is not None],
        spans=len([m for m in record.redactions if m.text is None]),
        typed=typed,
        none_chosen=not record.selection,
    )


async def redact_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _redact_page(request, visit)


async def add_mark(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals, record = await _draft(request, visit)
    text = request[FORM_KEY].get("text", "").strip()
    errors = FormErrors()
    if len(text) < 2:
        errors.add(
            "text", "Enter the words to hide, at least 2 characters, exactly as they are written"
        )
    elif len(text) > 500 or not text.isprintable():
        errors.add("text", "Enter words on one line, at most 500 characters")
    elif not record.selection:
        errors.add("text", "Choose the entries that go first: there is nothing to hide yet")
    else:
        try:
            await referrals.add_redaction(visit.actor, record.id, NewRedaction(text=text))
        except InputError as err:
            if "not selected" in err.diagnostics() or "found" not in err.diagnostics():
                raise
            errors.add(
                "text",
                f"'{text}' is not in any chosen entry: check the spelling "
                "and capitals, exactly as written",
            )
    if errors:
        return await _redact_page(request, visit, errors=errors, typed=text)
    return redirect(f"/referrals/{record.id}/redact")


async def remove_mark(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals = _referrals(request)
    rid = request.match_info["referral_id"]
    await referrals.remove_redaction(visit.actor, rid, request.match_info["mark_id"])
    return redirect(f"/referrals/{rid}/redact")


# ------------------------------------------------------------------ 5. check and send


async def _routes(
    request: web.Request, referrals: Referrals, record: ReferralRecord
) -> list[tuple[str, str]]:
    """The ways this referral can go from this node, in words."""
    entry = await referrals.directory.entry(record.agency_org_id)
    out = []
    if getattr(entry, "endpoint", None) and _outbox(request) is not None:
        out.append(("node", ROUTES_IN_WORDS["node"]))
    if getattr(entry, "email", None) and _portal(request) is not None:
        out.append(("portal", ROUTES_IN_WORDS["portal"]))
    out.append(("offline", ROUTES_IN_WORDS["offline"]))
    return out


async def _check_page(
    request: web.Request, visit: Visit, *, errors: FormErrors | None = None, route: str = ""
) -> web.StreamResponse:
    referrals, record = await _draft(request, visit)
    if record.state != "draft":
        return redirect(f"/referrals/{record.id}")
    readable = await referrals.as_the_agency_reads_it(visit.actor, record.id)
    pupil = await find_pupil(request, visit, record.pupil_id)
    return webapp(request).page(
        request,
        "referral_check.html",
        visit,
        title="Check the referral before sending it",
        status=400 if errors else 200,
        errors=errors,
        record=record,
        agency=record.agency_name or "the agency",
        kind_name=KIND_NAMES[record.kind],
        readable=readable,
        routes=await _routes(request, referrals, record),
        route=route,
        marks=[m.text for m in record.redactions if m.text],
        name=pupil_name(pupil),
        deadline=deadline(record, _today(request)),
        without_consent=not record.form.consent.consent_given,
    )


async def check_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _check_page(request, visit)


async def send(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    referrals, record = await _draft(request, visit)
    if record.state != "draft":
        return redirect(f"/referrals/{record.id}")
    data = request[FORM_KEY]
    route = data.get("route", "")
    errors = FormErrors()
    routes = dict(await _routes(request, referrals, record))
    if route not in routes:
        errors.add("route", "Select how the referral goes to the agency")
    form_only = data.get("form_only") == "yes"
    if not record.selection and not form_only:
        errors.add(
            "form_only",
            "No entry is chosen: confirm that the agency gets the form "
            "alone, or choose the entries that go",
        )
    if not errors:
        await check_code(app, visit, data.get("code", ""), errors)
    if errors:
        return await _check_page(request, visit, errors=errors, route=route)
    context: dict[str, Any] = {"route": route}
    try:
        if route == "node":
            outbox = _outbox(request)
            if outbox is None:
                raise RouteUnavailable("this node has no outbox configured")
            await send_by_node(referrals, outbox, visit.actor, record.id, form_only=form_only)
        elif route == "portal":
            portal = _portal(request)
            if portal is None:
                raise RouteUnavailable("this node has no pickup portal configured")
            done = await send_via_portal(
                referrals, portal, visit.actor, record.id, form_only=form_only
            )
            issued = done.issued
            context.update(
                passcode=issued.passcode,
                link=issued.link,
                emailed=issued.emailed,
                mail_problem=issued.mail_problem,
                email=issued.pickup.email,
                expires_at=issued.pickup.expires_at,
            )
        else:
            bundle = await send_offline(
                referrals,
                visit.actor,
                record.id,
                _exports(request),
                as_zip=True,
                form_only=form_only,
            )
            context.update(bundle=bundle.path.name)
    except NothingSelectedError:
        errors.add(
            "form_only",
            "No entry is chosen: confirm that the agency gets the form "
            "alone, or choose the entries that go",
        )
        return await _check_page(request, visit, errors=errors, route=route)
    except HandoverError as err:
        if err.http_status >= 500 and not isinstance(err, RouteUnavailable):
            raise
        text = err.diagnostics().strip().rstrip(".")
        errors.add("route", f"It was not sent: {text[:1].lower() + text[1:]}. It is still a draft.")
        return await _check_page(request, visit, errors=errors, route=route)
    sent = await referrals.get(visit.actor, record.id)
    return app.page(
        request,
        "referral_sent.html",
        visit,
        title="Referral sent",
        record=sent,
        agency=sent.agency_name or "the agency",
        **context,
    )


def _bundles(folder: Path, referral_id: str) -> list[Path]:
    """The referral's zipped bundles in the exports folder, oldest first."""
    found = folder.glob(f"referral-*-{referral_id[:8]}*.zip")
    return sorted(found, key=lambda p: p.stat().st_mtime)


async def bundle_download(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The offline bundle (a zip of the encrypted, signed referral and how to check it)."""
    _, record = await _draft(request, visit)
    if record.route != "offline" or record.state == "draft":
        raise NotFoundError("this referral has no offline bundle")
    folder = _exports(request)
    found = await asyncio.to_thread(_bundles, folder, record.id)
    if not found:
        raise NotFoundError("the offline bundle is no longer on the server")
    path = found[-1]
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/zip",
            "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


# ------------------------------------------------------------------ the referral's page


def _event_rows(record: ReferralRecord) -> list[dict[str, Any]]:
    rows = []
    for e in record.events:
        who = ""
        if e.actor_name and e.actor is not None:  # the role is in words already
            who = f"{e.actor_name} ({e.actor_role})" if e.actor_role else e.actor_name
        via = e.note.removeprefix("via=") if e.note.startswith("via=") else ""
        how = {
            "portal": "pickup link",
            "node": "the agency's node",
            "offline": "by hand",
            "api": "recorded by hand",
            "web": "recorded by hand",
        }.get(via, "")
        rows.append(
            {
                "at": e.at,
                "what": EVENTS.get(e.action, e.action.replace("_", " ")),
                "who": who,
                "how": how,
            }
        )
    return rows


def _outcome_rows(record: ReferralRecord) -> list[tuple[str, str]]:
    o: Any = record.outcome
    if o is None:
        return []
    if o.kind == "social_care":
        names = dict(OUTCOME_CHOICES["social_care"]["decision"])
        rows = [("Rating", o.rag.capitalize()), ("Decision", names[o.decision])]
    elif o.kind == "lado":
        rows = [
            ("Outcome", o.outcome.capitalize()),
            ("Referred to the DBS", "Yes" if o.dbs_referral else "No"),
        ]
    else:
        rows = [("Crime reference", o.crime_reference)]
    if o.notes:
        rows.append(("Notes", o.notes))
    return rows


async def referral_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _referral_page(request, visit)


async def _referral_page(
    request: web.Request,
    visit: Visit,
    *,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
) -> web.StreamResponse:
    _, record = await _draft(request, visit)
    pupil = await find_pupil(request, visit, record.pupil_id)
    done = {
        "outcome": "The outcome has been recorded.",
        "handed_over": "The hand-over has been recorded.",
        "acknowledged": "The agency's acknowledgement has been recorded.",
        "withdrawn": "The referral has been taken back: it is a draft again, and the "
        "agency cannot open what was sent.",
    }.get(request.query.get("done", ""))
    tasks = []
    if record.state == "draft":
        chosen = len(record.selection)
        tasks = [
            ("The form", f"/referrals/{record.id}/form", "Completed", ""),
            (
                "What goes",
                f"/referrals/{record.id}/entries",
                f"{chosen} chosen" if chosen else "Nothing chosen",
                "" if chosen else "govuk-tag--yellow",
            ),
            (
                "Hide names and other details",
                f"/referrals/{record.id}/redact",
                f"{len(record.redactions)} hidden" if record.redactions else "Not started",
                "" if record.redactions else "govuk-tag--blue",
            ),
            ("Check and send", f"/referrals/{record.id}/check", "Not sent", "govuk-tag--blue"),
        ]
    return webapp(request).page(
        request,
        "referral.html",
        visit,
        title=f"{KIND_NAMES[record.kind]} referral: {pupil.forename} {pupil.surname}",
        record=record,
        name=pupil_name(pupil),
        ref=pupil_ref(pupil),
        agency=record.agency_name or "an agency no longer in the directory",
        kind_name=KIND_NAMES[record.kind],
        state=STATES.get(record.state, (record.state, "govuk-tag--grey")),
        deadline=deadline(record, _today(request)),
        events=_event_rows(record),
        outcome=_outcome_rows(record),
        tasks=tasks,
        done=done,
        may_record_outcome=record.state in ("delivered", "accepted"),
        route_words=ROUTES_IN_WORDS.get(record.route or "", ""),
        may_hand_over=record.route == "offline" and record.state == "sent",
        may_acknowledge=record.route in ("offline", "node")
        and record.state in ("sent", "delivered"),
        # shown again with its refusal at its field when the referral moved on meanwhile
        may_take_back=record.state == "sent"
        or bool(errors and "withdraw_reason" in errors.by_field),
        errors=errors,
        status=400 if errors else 200,
        values=values or {},
    )


async def take_back(request: web.Request, visit: Visit) -> web.StreamResponse:
    """Take back a sent referral that has not reached the agency, with the reason: the
    pickup link withdrawn, the outbox's send cancelled or, for an offline bundle, the DSL's
    word that it was not handed over (the copy on the server is then deleted)."""
    referrals, record = await _draft(request, visit)
    data = request[FORM_KEY]
    values = {
        "withdraw_reason": data.get("withdraw_reason", "").strip(),
        "not_handed_over": data.get("not_handed_over", ""),
    }
    errors = FormErrors()
    if not values["withdraw_reason"]:
        errors.add("withdraw_reason", "Enter why you are taking the referral back")
    elif len(values["withdraw_reason"]) > 500 or not values["withdraw_reason"].isprintable():
        errors.add("withdraw_reason", "Enter the reason on one line, at most 500 characters")
    if record.route == "offline" and values["not_handed_over"] != "yes":
        errors.add(
            "not_handed_over",
            "Confirm that the offline bundle was not handed over and no copy of it was kept",
        )
    if not errors:
        try:
            await withdraw(
                referrals,
                visit.actor,
                record.id,
                reason=values["withdraw_reason"],
                portal=_portal(request),
                outbox=_outbox(request),
            )
        except InputError as err:
            errors.add("withdraw_reason", _words(err))
        except (ConflictError, RouteUnavailable) as err:
            text = _words(err)
            errors.add("withdraw_reason", f"It was not taken back: {text[:1].lower()}{text[1:]}")
    if errors:
        return await _referral_page(request, visit, errors=errors, values=values)
    if record.route == "offline":
        for path in await asyncio.to_thread(_bundles, _exports(request), record.id):
            await asyncio.to_thread(path.unlink, missing_ok=True)
    return redirect(f"/referrals/{record.id}?done=withdrawn")


async def hand_over(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The offline bundle was handed to the agency: to whom and how."""
    referrals, record = await _draft(request, visit)
    data = request[FORM_KEY]
    values = {k: data.get(k, "").strip() for k in ("to_whom", "how")}
    errors = FormErrors()
    if not values["to_whom"]:
        errors.add("to_whom", "Enter who you gave the bundle to")
    if not values["how"]:
        errors.add("how", "Enter how you gave it, for example by hand on an encrypted USB stick")
    if not errors:
        try:
            await referrals.record_handover(
                visit.actor, record.id, to_whom=values["to_whom"], how=values["how"]
            )
        except InputError as err:
            errors.add("to_whom", _words(err))
    if errors:
        return await _referral_page(request, visit, errors=errors, values=values)
    return redirect(f"/referrals/{record.id}?done=handed_over")


async def acknowledgement(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The agency confirmed it by telephone or e-mail: who, and their reference."""
    referrals, record = await _draft(request, visit)
    data = request[FORM_KEY]
    values = {k: data.get(k, "").strip() for k in ("ack_name", "reference")}
    errors = FormErrors()
    if not values["ack_name"]:
        errors.add("ack_name", "Enter the name of who acknowledged it at the agency")
    if not values["reference"]:
        errors.add("reference", "Enter the agency's reference number")
    if not errors:
        try:
            await referrals.acknowledge(
                visit.actor,
                record.id,
                name=values["ack_name"],
                agency_reference=values["reference"],
                via="web",
            )
        except InputError as err:
            errors.add("reference", _words(err))
    if errors:
        return await _referral_page(request, visit, errors=errors, values=values)
    return redirect(f"/referrals/{record.id}?done=acknowledged")


def _words(err: HandoverError) -> str:
    text = err.diagnostics().strip().rstrip(".")
    return text[:1].upper() + text[1:]


async def discard_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    _, record = await _draft(request, visit)
    if record.state != "draft":
        return redirect(f"/referrals/{record.id}")
    pupil = await find_pupil(request, visit, record.pupil_id)
    return webapp(request).page(
        request,
        "referral_discard.html",
        visit,
        title="Discard this draft referral?",
        record=record,
        name=pupil_name(pupil),
        agency=record.agency_name or "the agency",
    )


async def discard(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals = _referrals(request)
    gone = await referrals.discard(visit.actor, request.match_info["referral_id"])
    pupil = await find_pupil(request, visit, gone.pupil_id)
    return redirect(f"/pupils/{pupil_ref(pupil)}?done=discarded#referrals")


# ------------------------------------------------------------------ outcome


async def _outcome_page(
    request: web.Request, visit: Visit, values: dict[str, str], *, errors: FormErrors | None = None
) -> web.StreamResponse:
    _, record = await _draft(request, visit)
    if record.state not in ("delivered", "accepted"):
        return redirect(f"/referrals/{record.id}")
    return webapp(request).page(
        request,
        "referral_outcome.html",
        visit,
        title="Record the agency's outcome",
        status=400 if errors else 200,
        errors=errors,
        record=record,
        values=values,
        choices=OUTCOME_CHOICES.get(record.kind, {}),
        agency=record.agency_name or "the agency",
    )


async def outcome_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _outcome_page(request, visit, {})


_OUTCOME_FIELDS: Final = ("rag", "decision", "outcome", "dbs_referral", "crime_reference", "notes")


async def save_outcome(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals, record = await _draft(request, visit)
    data = request[FORM_KEY]
    values = {k: data.get(k, "").strip() for k in _OUTCOME_FIELDS}
    errors = FormErrors()
    raw: dict[str, Any] = {"kind": record.kind, "notes": values["notes"]}
    if record.kind == "social_care":
        for name, what in (("rag", "the rating"), ("decision", "the decision")):
            if values[name] not in dict(OUTCOME_CHOICES["social_care"][name]):
                errors.add(name, f"Select {what}")
            raw[name] = values[name]
    elif record.kind == "lado":
        if values["outcome"] not in dict(OUTCOME_CHOICES["lado"]["outcome"]):
            errors.add("outcome", "Select the outcome")
        raw.update(outcome=values["outcome"], dbs_referral=values["dbs_referral"] == "yes")
    else:
        if not values["crime_reference"]:
            errors.add("crime_reference", "Enter the crime reference")
        raw["crime_reference"] = values["crime_reference"]
    if errors:
        return await _outcome_page(request, visit, values, errors=errors)
    outcome = parse_outcome(raw)
    await referrals.record_outcome(visit.actor, record.id, outcome)
    return redirect(f"/referrals/{record.id}?done=outcome")


ROUTES: Final = (
    WebRoute("GET", "/referrals", list_page, "Referrals.list", name="referrals"),
    WebRoute(
        "GET",
        "/pupils/{ref}/referrals/new",
        start_page,
        "Referrals.may_start, Directory.entries, Store.get_pupil",
    ),
    WebRoute(
        "POST", "/pupils/{ref}/referrals/new", create_draft, "Referrals.draft", form=kept_create
    ),
    WebRoute("GET", _R, referral_page, "Referrals.get", name="referral"),
    WebRoute("GET", f"{_R}/form", change_form_page, "Referrals.get"),
    WebRoute("POST", f"{_R}/form", change_form, "Referrals.update_form", form=kept_change),
    WebRoute("GET", f"{_R}/entries", entries_page, "Referrals.get, Store.chronology_lines"),
    WebRoute("POST", f"{_R}/entries", save_entries, "Referrals.select"),
    WebRoute("GET", f"{_R}/redact", redact_page, "Referrals.preview"),
    WebRoute("POST", f"{_R}/redact", add_mark, "Referrals.add_redaction"),
    WebRoute(
        "POST",
        f"{_R}/redactions/{{mark_id:{UUID}}}/remove",
        remove_mark,
        "Referrals.remove_redaction",
    ),
    WebRoute("GET", f"{_R}/check", check_page, "Referrals.get, Referrals.as_the_agency_reads_it"),
    WebRoute(
        "POST",
        f"{_R}/send",
        send,
        "Accounts.step_up, receivers.sending.send_by_node, send_via_portal, send_offline",
    ),
    WebRoute("GET", f"{_R}/bundle", bundle_download, "Referrals.get"),
    WebRoute("GET", f"{_R}/discard", discard_page, "Referrals.get"),
    WebRoute("POST", f"{_R}/discard", discard, "Referrals.discard"),
    WebRoute("POST", f"{_R}/handover", hand_over, "Referrals.record_handover"),
    WebRoute("POST", f"{_R}/withdraw", take_back, "receivers.sending.withdraw"),
    WebRoute("POST", f"{_R}/acknowledgement", acknowledgement, "Referrals.acknowledge"),
    WebRoute("GET", f"{_R}/outcome", outcome_page, "Referrals.get"),
    WebRoute("POST", f"{_R}/outcome", save_outcome, "Referrals.record_outcome"),
)
