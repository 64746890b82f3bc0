"""The pickup portal's web pages: an aiohttp sub-application mounted at ``/portal/``.

Plain HTML from Jinja2 templates (autoescaped), one stylesheet served from
here, no script at all, no third-party asset. Every response carries a strict
Content-Security-Policy, ``Cache-Control: no-store`` and
``Referrer-Policy: no-referrer``. Every form carries a CSRF token (an HMAC
bound to the browser: the session, or a random pre-sign-in cookie). Cookies
are ``HttpOnly``, ``SameSite=Strict`` and, over TLS, ``Secure`` with the
``__Host-`` prefix.

The referral is shown from one page model (:mod:`transfer.referrals.reading`: sections
in the form's order, labels and values in words) and ``/portal/referral.pdf`` draws the
same model as a PDF, so the page and the paper say the same thing.

The link token arrives once, in the query of ``GET /portal/open``; it is
carried on in the sign-in form's body, never in another URL, and never logged
(the request log records the path only).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import urllib.parse
from importlib import resources
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from markupsafe import Markup

from receivers.portal.records import PortalVisit
from receivers.portal.service import (
    LinkClosed,
    LinkExpired,
    LinkLocked,
    LinkNotValid,
    LinkRevoked,
    PickupPortal,
    PortalSessionEnded,
    WrongCurrentCode,
    WrongPortalCode,
)
from receivers.portal.webparts import (
    ENV_KEY,
    PORTAL_APP_KEY,
    PORTAL_HEADERS,
    PRE_COOKIE,
    PREFIX,
    SECURE_KEY,
    SESSION_COOKIE,
    check_csrf,
    clear_cookie,
    client_ip,
    cookie_name,
    environment,
    lead,
    portal_of,
    read_form,
    readable,
    render,
    see_other,
    set_cookie,
    visit_of,
)
from transfer.errors import ConflictError, HandoverError, InputError, NotFoundError
from transfer.printing import PrintedBy
from transfer.referrals.reading import referral_pdf

log = logging.getLogger("receivers.portal")


# -------------------------------------------------------------------- pages


async def home(request: web.Request) -> web.StreamResponse:
    return render(request, "home.html", title="Referral pickup")


async def stylesheet(request: web.Request) -> web.StreamResponse:
    css = resources.files("receivers.portal").joinpath("static/portal.css").read_bytes()
    return web.Response(body=css, content_type="text/css", charset="utf-8")


def _pre_binding(request: web.Request, response_cookies: dict[str, str]) -> str:
    name = cookie_name(request, PRE_COOKIE)
    value = request.cookies.get(name, "")
    if not (20 <= len(value) <= 100):
        value = secrets.token_urlsafe(24)
        response_cookies[PRE_COOKIE] = value
    return value


async def _sign_in_page(
    request: web.Request,
    token: str,
    *,
    status: int = 200,
    error: str | None = None,
    field: str | None = None,
) -> web.Response:
    info = await portal_of(request).link_info(token)
    new: dict[str, str] = {}
    binding = _pre_binding(request, new)
    response = render(
        request,
        "open.html",
        status=status,
        title=f"A referral from {info.sender_name}",
        info=info,
        token=token,
        csrf=portal_of(request).csrf_token(binding, "open"),
        error=error,
        error_field=field,
    )
    for base, value in new.items():
        set_cookie(response, request, base, value)
    return response


async def open_link(request: web.Request) -> web.StreamResponse:
    token = request.query.get("t", "")
    return await _sign_in_page(request, token)


async def sign_in(request: web.Request) -> web.StreamResponse:
    data = await read_form(request)
    token = data.get("t", "")
    binding = request.cookies.get(cookie_name(request, PRE_COOKIE), "")
    check_csrf(request, binding, "open", data)
    method = data.get("method", "passcode")
    field_name = "totp" if method == "totp" else "passcode"
    code = data.get(field_name, "")
    if not code.strip():
        what = "passcode" if field_name == "passcode" else "code from your authenticator app"
        return await _sign_in_page(
            request, token, status=400, error=f"Enter the {what}.", field=field_name
        )
    try:
        secret = await portal_of(request).sign_in(
            token,
            ip=client_ip(request),
            **({"totp": code} if field_name == "totp" else {"passcode": code}),
        )
    except WrongPortalCode as err:
        return await _sign_in_page(
            request, token, status=401, error=err.diagnostics(), field=field_name
        )
    response = see_other(f"{PREFIX}/referral")
    set_cookie(response, request, SESSION_COOKIE, secret)
    clear_cookie(response, request, PRE_COOKIE)
    return response


async def _referral_page(
    request: web.Request,
    visit: PortalVisit,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    notice: str | None = None,
) -> web.Response:
    portal = portal_of(request)
    view = await portal.referral(visit, ip=client_ip(request))
    model = readable(view)
    return render(
        request,
        "referral.html",
        status=status,
        title=f"Referral from {view.sender_name}",
        view=view,
        model=model,
        lead=lead(view, model),
        errors=errors or {},
        values=values or {},
        notice=notice,
        csrf_ack=portal.csrf_token(visit.session_id, "acknowledge"),
        csrf_out=portal.csrf_token(visit.session_id, "sign-out"),
        grace_minutes=portal.settings.ack_grace_minutes,
    )


async def referral(request: web.Request) -> web.StreamResponse:
    visit = await visit_of(request)
    notice = {
        "acknowledged": "Thank you. Your acknowledgement has been sent to the school.",
        "authenticator": "Your authenticator app is set up. Next time, you can sign in "
        "with a code from it.",
        "authenticator-replaced": "Your new authenticator app is set up; the old one no "
        "longer works. Next time, sign in with a code from the new one.",
    }.get(request.query.get("done", ""))
    return await _referral_page(request, visit, notice=notice)


async def referral_as_pdf(request: web.Request) -> web.StreamResponse:
    """The referral as a PDF: the page's own model, so the same sections, rows and order.

    Only in a signed-in session on a link that is still open (the same check as the page);
    a view like the page's, recorded in the receipt trail and the audit log."""
    visit = await visit_of(request)
    portal = portal_of(request)
    view = await portal.referral(visit, ip=client_ip(request))
    model = readable(view)
    agency = f"{view.email} ({view.agency_name})" if view.agency_name else view.email
    pdf = await asyncio.to_thread(
        referral_pdf,
        model,
        PrintedBy(view.sender_name, agency, portal.now()),
        lead=lead(view, model),
    )
    await portal.printed(visit, ip=client_ip(request))
    name = f"referral-{view.created_at:%Y-%m-%d}.pdf"
    return web.Response(
        body=pdf,
        headers={
            "Content-Type": "application/pdf",
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


async def download(request: web.Request) -> web.StreamResponse:
    visit = await visit_of(request)
    raw = request.match_info["index"]
    if not raw.isdigit() or len(raw) > 6:
        raise NotFoundError("there is no such document in this referral")
    doc, chunks = await portal_of(request).download(visit, int(raw), ip=client_ip(request))
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in doc.filename
    )
    quoted = urllib.parse.quote(doc.filename, safe="")
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{quoted}",
        },
    )
    response.content_length = doc.size
    started = False
    try:
        async for piece in chunks:
            if not started:
                await response.prepare(request)
                started = True
            await response.write(piece)
    except HandoverError as err:
        if not started:
            raise
        log.error("a portal download stopped: %s", err.diagnostics())
        if request.transport is not None:
            request.transport.abort()
        return response
    if not started:
        await response.prepare(request)
    await response.write_eof()
    return response


async def acknowledge(request: web.Request) -> web.StreamResponse:
    visit = await visit_of(request)
    data = await read_form(request)
    check_csrf(request, visit.session_id, "acknowledge", data)
    name, reference = data.get("name", "").strip(), data.get("reference", "").strip()
    errors = {}
    if not name:
        errors["name"] = "Enter your name."
    elif len(name) > 200:
        errors["name"] = "Your name must be at most 200 characters."
    if not reference:
        errors["reference"] = "Enter your agency's reference for this referral."
    elif len(reference) > 100:
        errors["reference"] = "The reference must be at most 100 characters."
    values = {"name": name[:200], "reference": reference[:100]}
    if errors:
        return await _referral_page(request, visit, status=400, errors=errors, values=values)
    portal = portal_of(request)
    try:
        await portal.acknowledge(
            visit, name=name, agency_reference=reference, ip=client_ip(request)
        )
    except ConflictError as err:
        return await _referral_page(request, visit, status=409, notice=err.diagnostics())
    except InputError as err:
        target = "name" if "name" in err.message else "reference"
        return await _referral_page(
            request,
            visit,
            status=400,
            values=values,
            errors={target: err.diagnostics().capitalize() + "."},
        )
    if portal.settings.ack_grace_minutes == 0:
        # The link closed with the acknowledgement: there is no referral page to go back to.
        response = render(request, "acknowledged.html", title="Receipt acknowledged")
        clear_cookie(response, request, SESSION_COOKIE)
        return response
    return see_other(f"{PREFIX}/referral?done=acknowledged")


async def _authenticator_page(
    request: web.Request,
    visit: PortalVisit,
    *,
    status: int = 200,
    error: str | None = None,
    error_field: str | None = None,
    sealed: str | None = None,
) -> web.Response:
    portal = portal_of(request)
    setup = await portal.totp_setup(visit, sealed)
    svg = setup.svg.replace(
        "<svg ", '<svg role="img" aria-labelledby="qr-title" focusable="false" ', 1
    )
    return render(
        request,
        "authenticator.html",
        status=status,
        title="Replace your authenticator app" if setup.replacing else "Sign in faster next time",
        setup=setup,
        qr=Markup(svg),  # noqa: S704 (segno's SVG of our own URI: no user text)
        error=error,
        error_field=error_field,
        csrf=portal.csrf_token(visit.session_id, "authenticator"),
    )


async def authenticator(request: web.Request) -> web.StreamResponse:
    """The set-up page: shows a new secret (sealed into its form); changes nothing stored."""
    return await _authenticator_page(request, await visit_of(request))


async def confirm_authenticator(request: web.Request) -> web.StreamResponse:
    visit = await visit_of(request)
    data = await read_form(request)
    check_csrf(request, visit.session_id, "authenticator", data)
    sealed = data.get("setup", "")
    try:
        replaced = await portal_of(request).enrol_totp(
            visit,
            setup=sealed,
            code=data.get("code", ""),
            current_code=data.get("current"),
            ip=client_ip(request),
        )
    except WrongCurrentCode as err:
        return await _authenticator_page(
            request,
            visit,
            status=400,
            error=err.diagnostics(),
            error_field="current",
            sealed=sealed,
        )
    except WrongPortalCode as err:
        return await _authenticator_page(
            request,
            visit,
            status=400,
            error=err.diagnostics(),
            error_field="code",
            sealed=sealed,
        )
    except (InputError, ConflictError) as err:
        # An expired or altered set-up form, or a change a moment ago: start again.
        return await _authenticator_page(
            request, visit, status=err.http_status, error=err.diagnostics(), error_field="code"
        )
    done = "authenticator-replaced" if replaced else "authenticator"
    return see_other(f"{PREFIX}/referral?done={done}")


async def sign_out(request: web.Request) -> web.StreamResponse:
    visit = await visit_of(request)
    data = await read_form(request)
    check_csrf(request, visit.session_id, "sign-out", data)
    await portal_of(request).sign_out(visit)
    response = render(request, "signed_out.html", title="Signed out")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


# --------------------------------------------------------- errors, headers

_PAGES: Final[dict[type[HandoverError], tuple[str, str]]] = {
    LinkNotValid: (
        "This link is not valid",
        "Check that you copied the whole link from the e-mail. If it still does not "
        "work, ask the school that sent it for a new link.",
    ),
    LinkExpired: (
        "This link has expired",
        "Links work for a limited time. Ask the school that sent it to send the referral again.",
    ),
    LinkClosed: (
        "This link is closed",
        "Receipt of this referral has been acknowledged, so the link no longer works. If "
        "you need the referral again, ask the school that sent it.",
    ),
    LinkRevoked: (
        "This link has been withdrawn",
        "The school has withdrawn this link. Contact them if you still need the referral.",
    ),
    LinkLocked: (
        "This link is locked",
        "The wrong passcode was entered too many times. Ask the school that sent it "
        "for a new link.",
    ),
    PortalSessionEnded: (
        "Please open your link again",
        "Your session has ended, for your security. Open the link from your "
        "e-mail again and enter the passcode.",
    ),
}


@web.middleware
async def portal_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a plain page (never a traceback, never JSON)."""
    try:
        return await handler(request)
    except HandoverError as err:
        heading, text = next(
            (v for k, v in _PAGES.items() if isinstance(err, k)),
            (err.title, err.diagnostics()),
        )
        if isinstance(err, PortalSessionEnded):
            response = render(
                request, "error.html", status=401, title=heading, heading=heading, text=text
            )
            clear_cookie(response, request, SESSION_COOKIE)
            return response
        return render(
            request, "error.html", status=err.http_status, title=heading, heading=heading, text=text
        )
    except web.HTTPNotFound:
        return render(
            request,
            "error.html",
            status=404,
            title="Page not found",
            heading="Page not found",
            text="There is no page at this address.",
        )
    except web.HTTPMethodNotAllowed:
        return render(
            request,
            "error.html",
            status=405,
            title="Not allowed",
            heading="Not allowed",
            text="This page cannot be used that way.",
        )


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in PORTAL_HEADERS.items():
        response.headers[name] = value


def create_portal_app(portal: PickupPortal, *, behind_tls_proxy: bool = False) -> web.Application:
    """The portal's pages, to mount with ``app.add_subapp("/portal/", ...)``."""
    app = web.Application(middlewares=[portal_errors], client_max_size=64 * 1024)
    app[PORTAL_APP_KEY] = portal
    app[SECURE_KEY] = behind_tls_proxy
    app[ENV_KEY] = environment()
    app.router.add_get("/", home)
    app.router.add_get("/static/portal.css", stylesheet)
    app.router.add_get("/open", open_link)
    app.router.add_post("/open", sign_in)
    app.router.add_get("/referral", referral)
    app.router.add_get("/referral.pdf", referral_as_pdf)
    app.router.add_get("/documents/{index}", download)
    app.router.add_post("/acknowledge", acknowledge)
    app.router.add_get("/authenticator", authenticator)
    app.router.add_post("/authenticator", confirm_authenticator)
    app.router.add_post("/sign-out", sign_out)
    app.on_response_prepare.append(_headers)
    return app
