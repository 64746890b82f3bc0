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

This module is the list of referrals; the steps' pages are
:mod:`~transfer.web.referral_drafting` (1 and 2), :mod:`~transfer.web.referral_selection`
(3 and 4), :mod:`~transfer.web.referral_sending` (5), and the referral's own page
:mod:`~transfer.web.referral_page`; what they share is :mod:`~transfer.web.referral_common`.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from transfer.errors import NotFoundError
from transfer.referrals.service import Referrals
from transfer.web.core import Visit, WebRoute, webapp
from transfer.web.referral_common import STATES, deadline, referrals_of, today_of
from transfer.web.referral_forms import KIND_NAMES


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
    referrals = referrals_of(request)
    found = await referrals.list(visit.actor, pupil_id=pupil_id)
    names = await _agency_names(referrals, {r.agency_org_id for r in found})
    pupils = await webapp(request).store.pupil_names(visit.actor, {r.pupil_id for r in found})
    today = today_of(request)
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


ROUTES: Final = (WebRoute("GET", "/referrals", list_page, "Referrals.list", name="referrals"),)
