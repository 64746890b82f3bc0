"""Referrals in the browser, steps 3 and 4 (:mod:`transfer.web.referrals`): which
chronology entries and documents go, and the words to hide in them.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from schemas.records import ChronologyEntry
from schemas.referrals import NewRedaction, SelectedItem
from transfer.errors import InputError
from transfer.referrals.redaction import REDACTABLE_FIELDS
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.pupils import UUID
from transfer.web.referral_common import REFERRAL, find_referral, referrals_of
from transfer.web.rendering import long_date, redirect
from transfer.web.words import shorten

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
    _, record = await find_referral(request, visit)
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
    referrals, record = await find_referral(request, visit)
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
    referrals, record = await find_referral(request, visit)
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
    referrals, record = await find_referral(request, visit)
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
    referrals = referrals_of(request)
    rid = request.match_info["referral_id"]
    await referrals.remove_redaction(visit.actor, rid, request.match_info["mark_id"])
    return redirect(f"/referrals/{rid}/redact")


ROUTES: Final = (
    WebRoute("GET", f"{REFERRAL}/entries", entries_page, "Referrals.get, Store.chronology_lines"),
    WebRoute("POST", f"{REFERRAL}/entries", save_entries, "Referrals.select"),
    WebRoute("GET", f"{REFERRAL}/redact", redact_page, "Referrals.preview"),
    WebRoute("POST", f"{REFERRAL}/redact", add_mark, "Referrals.add_redaction"),
    WebRoute(
        "POST",
        f"{REFERRAL}/redactions/{{mark_id:{UUID}}}/remove",
        remove_mark,
        "Referrals.remove_redaction",
    ),
)
