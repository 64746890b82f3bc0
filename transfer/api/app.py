"""The aiohttp application: :func:`create_app`.

Middleware gives every request an id (``X-Request-Id``, in logs and audit
events), adds security headers to every response (streamed ones included),
turns every error into an RFC 9457 problem document, and never lets bad
input become a 500. Authentication is by ``Authorization: Bearer`` (a
session token from ``POST /api/v1/session`` or an API token); the store and
the accounts service decide what the caller may do.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from receivers.portal.service import PickupPortal
from receivers.portal.web import create_portal_app
from schemas.auditing import AuditEvent, AuditSink
from transfer import __version__
from transfer.api.headers import SECURITY_HEADERS, SERVER
from transfer.api.openapi import build_openapi
from transfer.api.problems import ProblemEdge, problem_middleware, request_id_of
from transfer.api.routes import ROUTES
from transfer.api.routes_inbox import INBOX_KEY, INBOX_ROUTES
from transfer.api.routes_outbox import OUTBOX_KEY, OUTBOX_ROUTES
from transfer.api.routes_portal import PORTAL_KEY, PORTAL_ROUTES
from transfer.api.routes_referrals import REFERRAL_ROUTES, REFERRALS_KEY
from transfer.api.routes_requests import ALERT_ROUTES, ALERTS_KEY, REQUEST_ROUTES, REQUESTS_KEY
from transfer.api.routing import (
    ACCOUNTS_KEY,
    CONFIG_KEY,
    EXPORTS_KEY,
    OPENAPI_KEY,
    STORE_KEY,
    Route,
    bind,
)
from transfer.audit.request_ids import HEADER
from transfer.auth.service import Accounts
from transfer.config import Config
from transfer.errors import OutOfSpaceError
from transfer.store.service import Store

if TYPE_CHECKING:
    from transfer.alerts import Alerts
    from transfer.api.peer import PeerServices
    from transfer.exchange.inbox import Inbox
    from transfer.exchange.outbox import Outbox
    from transfer.exchange.requests import TransferRequests
    from transfer.referrals.service import Referrals
    from transfer.web import WebServices

log = logging.getLogger("transfer.api")

__all__ = ["AUDIT_KEY", "SECURITY_HEADERS", "create_app", "request_context"]

AUDIT_KEY = web.AppKey("audit", AuditSink)


def _data_dir(request: web.Request) -> str:
    return str(request.config_dict[STORE_KEY].data_dir)


def _out_of_space(request: web.Request, err: OutOfSpaceError, rid: str) -> None:
    """A request refused for want of space: one log line, and the node's watch told (it
    alerts the DSL teams once the database can take it)."""
    request.config_dict[STORE_KEY].space.noticed(err, f"{request.method} {request.path}", rid)


async def _audit_crash(request: web.Request, rid: str) -> None:
    try:
        await request.app[AUDIT_KEY].record(
            AuditEvent(
                action="api.error",
                outcome="failed",
                request_id=rid,
                detail={"method": request.method, "path": request.path[:200]},
            )
        )
    except Exception:
        log.exception("could not audit an API error [request %s]", rid)


#: Give the request an id, log it, and turn every error into a problem document.
request_context = problem_middleware(
    ProblemEdge(
        data_dir=_data_dir,
        out_of_space=_out_of_space,
        crashed=_audit_crash,
        access_log=True,
        logger=log,
    )
)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = SERVER
    response.headers[HEADER] = request_id_of(request)


def create_app(
    *,
    store: Store,
    accounts: Accounts,
    audit: AuditSink,
    config: Config,
    exports_dir: Path | None = None,
    routes: tuple[Route, ...] = ROUTES,
    portal: PickupPortal | None = None,
    inbox: Inbox | None = None,
    peer: PeerServices | None = None,
    alerts: Alerts | None = None,
    transfer_requests: TransferRequests | None = None,
    referrals: Referrals | None = None,
    outbox: Outbox | None = None,
    web_pages: WebServices | None = None,
) -> web.Application:
    """The API application over a store and an accounts service.

    ``audit`` receives the API's own events (``api.error``); pass the same
    sink, wrapped in :class:`transfer.audit.request_ids.RequestIdAudit`, to the
    store and the accounts service so that their events carry request ids.
    Subject access exports are written under ``exports_dir`` (default:
    ``<data dir>/exports``). With ``portal``, the pickup portal's JSON API
    (``/api/v1/portal/...``) and its pages (``/portal/``) are served too.
    With ``inbox``, the DSL's inbox (``/api/v1/inbox...``); with ``peer``, the
    signed node-to-node protocol at ``/peer/v1`` (``docs/protocol.md``). With
    ``web_pages``, the staff web app's pages at ``/`` (``transfer.web``).
    """
    if inbox is not None:
        routes = (*routes, *INBOX_ROUTES)
    if alerts is not None:
        routes = (*routes, *ALERT_ROUTES)
    if transfer_requests is not None:
        routes = (*routes, *REQUEST_ROUTES)
    if portal is not None:
        routes = (*routes, *PORTAL_ROUTES)
    if referrals is not None:
        routes = (*routes, *REFERRAL_ROUTES)
    if outbox is not None:
        routes = (*routes, *OUTBOX_ROUTES)
    app = web.Application(
        middlewares=[request_context], client_max_size=config.server.max_body_bytes
    )
    app[STORE_KEY] = store
    app[ACCOUNTS_KEY] = accounts
    app[CONFIG_KEY] = config
    app[AUDIT_KEY] = audit
    app[EXPORTS_KEY] = exports_dir or store.data_dir / "exports"
    app[OPENAPI_KEY] = build_openapi(routes, title="Handover API", version=__version__)
    for route in routes:
        app.router.add_route(route.method, route.path, bind(route))
    if portal is not None:
        app[PORTAL_KEY] = portal
        app.add_subapp(
            "/portal/",
            create_portal_app(portal, behind_tls_proxy=config.server.behind_proxy),
        )
    if inbox is not None:
        app[INBOX_KEY] = inbox
    if referrals is not None:
        app[REFERRALS_KEY] = referrals
    if outbox is not None:
        app[OUTBOX_KEY] = outbox
    if alerts is not None:
        app[ALERTS_KEY] = alerts
    if transfer_requests is not None:
        app[REQUESTS_KEY] = transfer_requests
    if peer is not None:
        from transfer.api.peer import mount as mount_peer

        mount_peer(app, peer)
    if web_pages is not None:
        from transfer.web import mount as mount_web

        mount_web(app, web_pages)
    app.on_response_prepare.append(_headers)
    return app
