"""Binding the web app's routes to aiohttp: each :class:`~transfer.web.core.WebRoute`'s
handler with its session, CSRF check and kept form around it (:func:`bind`), the kept form
given back after signing in again (:func:`give_back`), and :func:`mount`, which adds the
pages and the error pages (:mod:`transfer.web.errorpages`) to the node's application.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiDict

from transfer.auth.service import SessionInvalid, TotpEnrolmentRequired
from transfer.web.core import (
    CSRF_FIELD,
    FORM_KEY,
    KEEP_MINUTES,
    OWNER_FIELD,
    SECRET_FIELDS,
    SESSION_COOKIE,
    WEB_APP_KEY,
    CsrfRefused,
    Visit,
    WebApp,
    WebRoute,
    WebServices,
    form_data,
    path_matches,
    sign_in_url,
    upload_fields,
    webapp,
)
from transfer.web.errorpages import page_errors
from transfer.web.rendering import redirect
from transfer.web.static import PREFIX as STATIC_PREFIX


def bind(route: WebRoute) -> Handler:
    """The aiohttp handler of ``route``: session, CSRF and kept forms around it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        app = webapp(request)
        if route.access == "public":
            return await route.handler(request, None)
        token = app.session_token(request)
        data: MultiDict[str] | None = None
        if request.method == "POST":
            data = await (upload_fields(request) if route.upload else form_data(request))
            sent = data.get(CSRF_FIELD) or request.headers.get("X-CSRF-Token") or ""
            if not token or not app.keys.csrf_valid(token, sent):
                raise CsrfRefused(
                    "this form was not sent from a page of this service, or it belongs to a "
                    "session that has ended; go back, reload the page and try again"
                )
        if not token:
            return redirect(sign_in_url(next_path=request.path))
        try:
            principal = await app.accounts.authenticate(
                token, allow_enrolment=route.access == "enrolment"
            )
        except TotpEnrolmentRequired:
            return redirect("/sign-in/authenticator")
        except SessionInvalid:
            if data is not None and route.form is not None:
                return await _keep_form(request, app, token, data)
            response = redirect(sign_in_url(next_path=request.path, expired=True))
            app.clear_cookie(response, request, SESSION_COOKIE)
            return response
        visit = await app.visit(request, token, principal)
        if data is not None:
            request[FORM_KEY] = data
        return await route.handler(request, visit)

    handler.__name__ = route.name or route.handler.__name__
    return handler


async def _keep_form(
    request: web.Request, app: WebApp, token: str, data: MultiDict[str]
) -> web.StreamResponse:
    """A form that arrived after its session expired: sign in again, then have it back."""
    owner = app.keys.owner_of(token, data.get(OWNER_FIELD, ""))
    kept = ""
    if owner is not None:
        fields = [
            (k, v)
            for k, v in data.items()
            if k not in SECRET_FIELDS and k not in (CSRF_FIELD, OWNER_FIELD)
        ]
        try:
            kept = app.keys.keep_form(
                path=request.path,
                fields=fields,
                owner=owner,
                now=app.accounts.now(),
                minutes=KEEP_MINUTES,
            )
        except ValueError:
            kept = ""
    from transfer.web.signin import sign_in_page

    response = await sign_in_page(request, expired=True, kept=kept)
    app.clear_cookie(response, request, SESSION_COOKIE)
    return response


async def give_back(
    request: web.Request, app: WebApp, visit: Visit, sealed: str
) -> web.StreamResponse | None:
    """After signing in: the kept form's page, filled in, if it is this person's."""
    kept = app.keys.open_kept(sealed, app.accounts.now())
    if kept is None or kept.owner != visit.principal.actor.staff_id:
        return None
    route = app.forms.get(kept.path) or next(
        (
            r
            for pattern, r in app.forms.items()
            if "{" in pattern and path_matches(pattern, kept.path)
        ),
        None,
    )
    if route is None or route.form is None:
        return None
    return await route.form(request, visit, kept)


def mount(app: web.Application, services: WebServices, routes: Sequence[WebRoute]) -> WebApp:
    """Add the pages to the node's application (at ``/``, beside ``/api`` and ``/peer``)."""
    pages = WebApp(services, routes)
    app[WEB_APP_KEY] = pages
    app.middlewares.append(page_errors)
    app.router.add_get(STATIC_PREFIX + "/{digest}/{path:.+}", pages.static.handle)
    for route in routes:
        app.router.add_route(route.method, route.path, bind(route))
    return pages
