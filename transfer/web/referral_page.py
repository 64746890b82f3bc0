"""A referral's own page (:mod:`transfer.web.referrals`): its state, deadline, history
and outcome, the task list of a draft, and what is done from it: take it back, record the
hand-over of an offline bundle or the agency's acknowledgement, discard a draft, record
the agency's outcome.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from receivers.sending import RouteUnavailable, withdraw
from schemas.referrals import ReferralRecord
from transfer.errors import ConflictError, HandoverError, InputError
from transfer.referrals.forms import parse_outcome
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.pupils import find_pupil, pupil_name, pupil_ref
from transfer.web.referral_common import (
    REFERRAL,
    ROUTES_IN_WORDS,
    STATES,
    bundles_of,
    deadline,
    exports_of,
    find_referral,
    outbox_of,
    portal_of,
    referrals_of,
    today_of,
)
from transfer.web.referral_forms import KIND_NAMES
from transfer.web.rendering import redirect

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
    _, record = await find_referral(request, visit)
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
        deadline=deadline(record, today_of(request)),
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
    referrals, record = await find_referral(request, visit)
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
                portal=portal_of(request),
                outbox=outbox_of(request),
            )
        except InputError as err:
            errors.add("withdraw_reason", _words(err))
        except (ConflictError, RouteUnavailable) as err:
            text = _words(err)
            errors.add("withdraw_reason", f"It was not taken back: {text[:1].lower()}{text[1:]}")
    if errors:
        return await _referral_page(request, visit, errors=errors, values=values)
    if record.route == "offline":
        for path in await asyncio.to_thread(bundles_of, exports_of(request), record.id):
            await asyncio.to_thread(path.unlink, missing_ok=True)
    return redirect(f"/referrals/{record.id}?done=withdrawn")


async def hand_over(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The offline bundle was handed to the agency: to whom and how."""
    referrals, record = await find_referral(request, visit)
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
    referrals, record = await find_referral(request, visit)
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
    _, record = await find_referral(request, visit)
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
    referrals = referrals_of(request)
    gone = await referrals.discard(visit.actor, request.match_info["referral_id"])
    pupil = await find_pupil(request, visit, gone.pupil_id)
    return redirect(f"/pupils/{pupil_ref(pupil)}?done=discarded#referrals")


# ------------------------------------------------------------------ outcome


async def _outcome_page(
    request: web.Request, visit: Visit, values: dict[str, str], *, errors: FormErrors | None = None
) -> web.StreamResponse:
    _, record = await find_referral(request, visit)
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
    referrals, record = await find_referral(request, visit)
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
    WebRoute("GET", REFERRAL, referral_page, "Referrals.get", name="referral"),
    WebRoute("GET", f"{REFERRAL}/discard", discard_page, "Referrals.get"),
    WebRoute("POST", f"{REFERRAL}/discard", discard, "Referrals.discard"),
    WebRoute("POST", f"{REFERRAL}/handover", hand_over, "Referrals.record_handover"),
    WebRoute("POST", f"{REFERRAL}/withdraw", take_back, "receivers.sending.withdraw"),
    WebRoute("POST", f"{REFERRAL}/acknowledgement", acknowledgement, "Referrals.acknowledge"),
    WebRoute("GET", f"{REFERRAL}/outcome", outcome_page, "Referrals.get"),
    WebRoute("POST", f"{REFERRAL}/outcome", save_outcome, "Referrals.record_outcome"),
)
