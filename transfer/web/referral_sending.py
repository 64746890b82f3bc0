"""Referrals in the browser, step 5 (:mod:`transfer.web.referrals`): check and send by
the agency's node, a pickup link or an offline bundle, and the bundle's download.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web

from receivers.sending import RouteUnavailable, send_by_node, send_offline, send_via_portal
from schemas.referrals import ReferralRecord
from transfer.errors import HandoverError, NotFoundError
from transfer.referrals.service import NothingSelectedError, Referrals
from transfer.web.core import FORM_KEY, FormErrors, Visit, WebRoute, webapp
from transfer.web.pupils import find_pupil, pupil_name
from transfer.web.referral_common import (
    REFERRAL,
    ROUTES_IN_WORDS,
    bundles_of,
    deadline,
    exports_of,
    find_referral,
    outbox_of,
    portal_of,
    today_of,
)
from transfer.web.referral_forms import KIND_NAMES
from transfer.web.rendering import redirect
from transfer.web.stepup import check_code

# ------------------------------------------------------------------ 5. check and send


async def _routes(
    request: web.Request, referrals: Referrals, record: ReferralRecord
) -> list[tuple[str, str]]:
    """The ways this referral can go from this node, in words."""
    entry = await referrals.directory.entry(record.agency_org_id)
    out = []
    if getattr(entry, "endpoint", None) and outbox_of(request) is not None:
        out.append(("node", ROUTES_IN_WORDS["node"]))
    if getattr(entry, "email", None) and portal_of(request) is not None:
        out.append(("portal", ROUTES_IN_WORDS["portal"]))
    out.append(("offline", ROUTES_IN_WORDS["offline"]))
    return out


async def _check_page(
    request: web.Request, visit: Visit, *, errors: FormErrors | None = None, route: str = ""
) -> web.StreamResponse:
    referrals, record = await find_referral(request, visit)
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
        deadline=deadline(record, today_of(request)),
        without_consent=not record.form.consent.consent_given,
    )


async def check_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _check_page(request, visit)


async def send(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    referrals, record = await find_referral(request, visit)
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
            outbox = outbox_of(request)
            if outbox is None:
                raise RouteUnavailable("this node has no outbox configured")
            await send_by_node(referrals, outbox, visit.actor, record.id, form_only=form_only)
        elif route == "portal":
            portal = portal_of(request)
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
                exports_of(request),
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


async def bundle_download(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The offline bundle (a zip of the encrypted, signed referral and how to check it)."""
    _, record = await find_referral(request, visit)
    if record.route != "offline" or record.state == "draft":
        raise NotFoundError("this referral has no offline bundle")
    folder = exports_of(request)
    found = await asyncio.to_thread(bundles_of, folder, record.id)
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


ROUTES: Final = (
    WebRoute(
        "GET", f"{REFERRAL}/check", check_page, "Referrals.get, Referrals.as_the_agency_reads_it"
    ),
    WebRoute(
        "POST",
        f"{REFERRAL}/send",
        send,
        "Accounts.step_up, receivers.sending.send_by_node, send_via_portal, send_offline",
    ),
    WebRoute("GET", f"{REFERRAL}/bundle", bundle_download, "Referrals.get"),
)
