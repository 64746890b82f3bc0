"""Referrals in the browser, steps 1 and 2 (:mod:`transfer.web.referrals`): choose the
agency, then fill in its form; a draft's form changed later, and a form sent after the
session expired given back filled in.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from multidict import MultiDict

from schemas.referrals import ReferralRecord
from transfer.referrals.service import Referrals
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.pupils import find_pupil, pupil_name, pupil_ref
from transfer.web.referral_common import REFERRAL, find_referral, referrals_of
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
from transfer.web.rendering import redirect
from transfer.web.tokens import KeptForm

# ------------------------------------------------------------------ 1. the agency


async def _agencies(referrals: Referrals) -> list[tuple[str, str, str]]:
    """(org id, name, kind) of the directory's agencies that take referrals, by name."""
    entries = await referrals.directory.entries()  # type: ignore[attr-defined]
    return sorted(
        ((e.org_id, e.name, e.kind) for e in entries if e.kind in FORMS),
        key=lambda a: (list(FORMS).index(a[2]), a[1]),
    )


async def start_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals = referrals_of(request)
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
    referrals = referrals_of(request)
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

    referrals = referrals_of(request)
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


async def _agency_of(referrals: Referrals, record: ReferralRecord) -> tuple[str, str, str]:
    return (record.agency_org_id, record.agency_name or "the agency", record.kind)


async def change_form_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    referrals, record = await find_referral(request, visit)
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
    referrals, record = await find_referral(request, visit)
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


ROUTES: Final = (
    WebRoute(
        "GET",
        "/pupils/{ref}/referrals/new",
        start_page,
        "Referrals.may_start, Directory.entries, Store.get_pupil",
    ),
    WebRoute(
        "POST", "/pupils/{ref}/referrals/new", create_draft, "Referrals.draft", form=kept_create
    ),
    WebRoute("GET", f"{REFERRAL}/form", change_form_page, "Referrals.get"),
    WebRoute("POST", f"{REFERRAL}/form", change_form, "Referrals.update_form", form=kept_change),
)
