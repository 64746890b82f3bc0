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
from datetime import datetime
from importlib import resources
from typing import Any, Final

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from markupsafe import Markup

from receivers.portal.records import PortalVisit, ReferralView
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
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
    NotFoundError,
    TooLargeError,
)
from transfer.printing import PrintedBy
from transfer.referrals.reading import (
    ReadableReferral,
    date_and_time,
    readable_referral,
    referral_pdf,
)
from transfer.wording import plural

log = logging.getLogger("receivers.portal")

PREFIX: Final = "/portal"
PORTAL_APP_KEY: Final = web.AppKey("pickup_portal", PickupPortal)
_SECURE_KEY: Final = web.AppKey("portal_behind_tls_proxy", bool)
_ENV_KEY: Final = web.AppKey("portal_templates", jinja2.Environment)

CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PORTAL_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
SESSION_COOKIE: Final = "portal_session"
PRE_COOKIE: Final = "portal_pre"


# ------------------------------------------------------------ rendering data

_CHRONOLOGY: Final = "records/chronology.json"
_PEOPLE: Final = "records/people.json"


def readable(view: ReferralView) -> ReadableReferral:
    """The referral as the agency reads it, built once for the page and its PDF."""
    by_path = {r.path: r for r in view.records}
    chronology, people = by_path.get(_CHRONOLOGY), by_path.get(_PEOPLE)
    others = [
        (r.title, r.value if r.problem is None else f"This record is {r.problem}.")
        for r in view.records
        if r.path not in (_CHRONOLOGY, _PEOPLE)
    ]
    built = readable_referral(
        view.form.value if view.form is not None else None,
        chronology=chronology.value if chronology is not None else None,
        people=people.value if people is not None else None,
        records=others,
    )
    if view.form is None:
        return ReadableReferral(built.title, built.sections, "This package has no referral form.")
    if view.form.problem is not None:
        return ReadableReferral(
            built.title, built.sections, f"The referral form is {view.form.problem}."
        )
    return built


def lead(view: ReferralView, model: ReadableReferral) -> str:
    """What the referral is, from whom, about whom and when: the page's lead, the PDF's
    subtitle."""
    return (
        f"{model.title} from {view.sender_name}, about {view.subject}. "
        f"Sent {date_and_time(view.created_at)}."
    )


def size_text(size: int) -> str:
    if size < 1024:
        return plural(size, "byte")
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def when(value: datetime) -> str:
    return f"{value:%-d %B %Y at %H:%M} UTC"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("receivers.portal", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["size"] = size_text
    env.filters["when"] = when
    return env


# ------------------------------------------------------------------ helpers


def _portal(request: web.Request) -> PickupPortal:
    return request.app[PORTAL_APP_KEY]


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[_SECURE_KEY]


def _cookie_name(request: web.Request, base: str) -> str:
    return f"__Host-{base}" if _secure(request) else base


def _set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    base: str,
    value: str,
    *,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        _cookie_name(request, base),
        value,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        max_age=max_age,
    )


def _clear_cookie(response: web.StreamResponse, request: web.Request, base: str) -> None:
    response.del_cookie(
        _cookie_name(request, base),
        path="/",
        secure=_secure(request),
        httponly=True,
        samesite="Strict",
    )


def client_ip(request: web.Request) -> str | None:
    if request.app[_SECURE_KEY]:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return request.remote


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    env = request.app[_ENV_KEY]
    html = env.get_template(template).render(**context)
    return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


#: The portal's forms are a few short fields. The sub-application's own ``client_max_size``
#: does not apply (aiohttp reads bodies with the root application's limit), so check here.
MAX_FORM_BYTES = 64 * 1024


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise InputError("this page takes a form")
    if request.content_length is None or request.content_length > MAX_FORM_BYTES:
        raise TooLargeError("this form is too large to be one of ours")
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def _visit(request: web.Request) -> PortalVisit:
    secret = request.cookies.get(_cookie_name(request, SESSION_COOKIE), "")
    if not secret:
        raise PortalSessionEnded("open the link from your e-mail to see the referral")
    return await _portal(request).visit(secret)


class CsrfRefused(HandoverError):
    http_status = 403
    slug = "portal-csrf"
    title = "This form has expired"


def _check_csrf(request: web.Request, binding: str, form: str, data: dict[str, str]) -> None:
    token = data.get("csrf", "")
    if not binding or not token or not _portal(request).csrf_valid(binding, form, token):
        raise CsrfRefused(
            "this form was not sent from this page, or it has expired; go back, reload the "
            "page and try again"
        )


# -------------------------------------------------------------------- pages


async def home(request: web.Request) -> web.StreamResponse:
    return render(request, "home.html", title="Referral pickup")


async def stylesheet(request: web.Request) -> web.StreamResponse:
    css = resources.files("receivers.portal").joinpath("static/portal.css").read_bytes()
    return web.Response(body=css, content_type="text/css", charset="utf-8")


def _pre_binding(request: web.Request, response_cookies: dict[str, str]) -> str:
    name = _cookie_name(request, PRE_COOKIE)
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
    info = await _portal(request).link_info(token)
    new: dict[str, str] = {}
    binding = _pre_binding(request, new)
    response = render(
        request,
        "open.html",
        status=status,
        title=f"A referral from {info.sender_name}",
        info=info,
        token=token,
        csrf=_portal(request).csrf_token(binding, "open"),
        error=error,
        error_field=field,
    )
    for base, value in new.items():
        _set_cookie(response, request, base, value)
    return response


async def open_link(request: web.Request) -> web.StreamResponse:
    token = request.query.get("t", "")
    return await _sign_in_page(request, token)


async def sign_in(request: web.Request) -> web.StreamResponse:
    data = await _form(request)
    token = data.get("t", "")
    binding = request.cookies.get(_cookie_name(request, PRE_COOKIE), "")
    _check_csrf(request, binding, "open", data)
    method = data.get("method", "passcode")
    field_name = "totp" if method == "totp" else "passcode"
    code = data.get(field_name, "")
    if not code.strip():
        what = "passcode" if field_name == "passcode" else "code from your authenticator app"
        return await _sign_in_page(
            request, token, status=400, error=f"Enter the {what}.", field=field_name
        )
    try:
        secret = await _portal(request).sign_in(
            token,
            ip=client_ip(request),
            **({"totp": code} if field_name == "totp" else {"passcode": code}),
        )
    except WrongPortalCode as err:
        return await _sign_in_page(
            request, token, status=401, error=err.diagnostics(), field=field_name
        )
    response = _see_other(f"{PREFIX}/referral")
    _set_cookie(response, request, SESSION_COOKIE, secret)
    _clear_cookie(response, request, PRE_COOKIE)
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
    portal = _portal(request)
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
    visit = await _visit(request)
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
    visit = await _visit(request)
    portal = _portal(request)
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
    visit = await _visit(request)
    raw = request.match_info["index"]
    if not raw.isdigit() or len(raw) > 6:
        raise NotFoundError("there is no such document in this referral")
    doc, chunks = await _portal(request).download(visit, int(raw), ip=client_ip(request))
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
    visit = await _visit(request)
    data = await _form(request)
    _check_csrf(request, visit.session_id, "acknowledge", data)
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
    portal = _portal(request)
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
        _clear_cookie(response, request, SESSION_COOKIE)
        return response
    return _see_other(f"{PREFIX}/referral?done=acknowledged")


async def _authenticator_page(
    request: web.Request,
    visit: PortalVisit,
    *,
    status: int = 200,
    error: str | None = None,
    error_field: str | None = None,
    sealed: str | None = None,
) -> web.Response:
    portal = _portal(request)
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
    return await _authenticator_page(request, await _visit(request))


async def confirm_authenticator(request: web.Request) -> web.StreamResponse:
    visit = await _visit(request)
    data = await _form(request)
    _check_csrf(request, visit.session_id, "authenticator", data)
    sealed = data.get("setup", "")
    try:
        replaced = await _portal(request).enrol_totp(
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
    return _see_other(f"{PREFIX}/referral?done={done}")


async def sign_out(request: web.Request) -> web.StreamResponse:
    visit = await _visit(request)
    data = await _form(request)
    _check_csrf(request, visit.session_id, "sign-out", data)
    await _portal(request).sign_out(visit)
    response = render(request, "signed_out.html", title="Signed out")
    _clear_cookie(response, request, SESSION_COOKIE)
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
            _clear_cookie(response, request, SESSION_COOKIE)
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
    app[_SECURE_KEY] = behind_tls_proxy
    app[_ENV_KEY] = _environment()
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
