"""The staff web app: server-rendered pages at ``/`` of the node, beside the API.

One module per area (``signin``, ``dashboard``, ``account``...), templates in
``templates/``, static files in ``static/`` (GOV.UK Frontend vendored under
``static/govuk/``). :func:`mount` adds every page to the node's aiohttp
application; the pages call the same domain services the API calls. See
``docs/adr/0009-web-design-system.md`` and ``docs/adr/0010-web-sessions.md``.
"""

from __future__ import annotations

from aiohttp import web

from transfer.web import (
    account,
    admin_org,
    admin_pupils,
    admin_retention,
    admin_staff,
    alerts,
    audit,
    concerns,
    dashboard,
    inbox,
    outbox,
    pupils,
    referral_drafting,
    referral_page,
    referral_selection,
    referral_sending,
    referrals,
    reports,
    requests,
    search,
    sending,
    signin,
    subject_access,
    triage,
)
from transfer.web.binding import mount as _mount
from transfer.web.core import WebApp, WebRoute, WebServices

#: Every page of the web app (a later area adds its module's ROUTES here).
ROUTES: tuple[WebRoute, ...] = (
    *signin.ROUTES,
    *dashboard.ROUTES,
    *account.ROUTES,
    *concerns.ROUTES,
    *alerts.ROUTES,
    *pupils.ROUTES,
    *triage.ROUTES,
    *search.ROUTES,
    *audit.ROUTES,
    *subject_access.ROUTES,
    *admin_staff.ROUTES,
    *admin_pupils.ROUTES,
    *admin_org.ROUTES,
    *admin_retention.ROUTES,
    *inbox.ROUTES,
    *requests.ROUTES,
    *referrals.ROUTES,
    *referral_drafting.ROUTES,
    *referral_selection.ROUTES,
    *referral_sending.ROUTES,
    *referral_page.ROUTES,
    *reports.ROUTES,
    *sending.ROUTES,
    *outbox.ROUTES,
)


def mount(app: web.Application, services: WebServices) -> WebApp:
    """Serve the web app's pages from ``app`` (the node's application)."""
    return _mount(app, services, ROUTES)


__all__ = ["ROUTES", "WebApp", "WebRoute", "WebServices", "mount"]
