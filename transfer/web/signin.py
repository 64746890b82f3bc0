"""Signing in and out: password and authenticator code (or a recovery code), setting up
the authenticator on first sign-in (QR code and key), the recovery codes shown once,
the slow-down and lock-out in plain words, and keeping a session alive."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import segno
from aiohttp import web
from markupsafe import Markup

from transfer.auth.service import AccountLocked, SignInFailed, SlowDown, WrongCode
from transfer.errors import ConflictError, HandoverError, InputError
from transfer.web.binding import give_back
from transfer.web.core import (
    CSRF_FIELD,
    FORM_KEY,
    KEPT_FIELD,
    PRE_COOKIE,
    SESSION_COOKIE,
    CsrfRefused,
    FormErrors,
    Visit,
    WebRoute,
    form_data,
    safe_next,
    webapp,
)
from transfer.web.rendering import clock_time, long_date, redirect

_DIGITS: Final = frozenset("0123456789")


def _code_kind(code: str) -> str:
    """``totp`` for six digits, else ``recovery`` (a recovery code is 16 letters/digits)."""
    plain = "".join(code.split()).replace("-", "")
    return "totp" if len(plain) == 6 and set(plain) <= _DIGITS else "recovery"


async def sign_in_page(
    request: web.Request,
    *,
    status: int = 200,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    expired: bool = False,
    kept: str = "",
    notice: str | None = None,
) -> web.Response:
    """The sign-in page (with a new pre-sign-in cookie when the browser has none)."""
    app = webapp(request)
    binding, fresh = app.pre_binding(request)
    orgs = await app.organisations()
    values = values or {}
    if expired:
        notice = (
            f"You were signed out because you had not done anything for "
            f"{app.idle_minutes} minutes. Sign in again to carry on."
        )
        if kept:
            notice += " What you had typed has been kept: you will see it again."
    response = app.page(
        request,
        "sign_in.html",
        None,
        title="Sign in to Handover",
        status=status,
        errors=errors,
        orgs=orgs,
        values=values,
        csrf=app.keys.csrf_token(binding),
        kept=kept,
        kept_field=KEPT_FIELD,
        notice=notice,
        next_path=values.get("next") or request.query.get("next", ""),
    )
    if fresh:
        app.set_cookie(response, request, PRE_COOKIE, binding)
    return response


async def show_sign_in(request: web.Request, visit: Visit | None) -> web.StreamResponse:
    app = webapp(request)
    token = app.session_token(request)
    if token:
        try:
            await app.accounts.authenticate(token)
            return redirect(safe_next(request.query.get("next", "/"), app))
        except HandoverError:  # an ended session: the sign-in page
            pass
    notice = "You have signed out." if request.query.get("signed_out") else None
    return await sign_in_page(request, expired=bool(request.query.get("expired")), notice=notice)


async def do_sign_in(request: web.Request, visit: Visit | None) -> web.StreamResponse:
    app = webapp(request)
    data = await form_data(request)
    binding = request.cookies.get(app.cookie_name(request, PRE_COOKIE), "")
    if not app.keys.csrf_valid(binding, data.get(CSRF_FIELD, "")):
        raise CsrfRefused(
            "this sign-in form has expired or was not sent from this service; "
            "reload the page and sign in again"
        )
    orgs = await app.organisations()
    org = data.get("org", "") if len(orgs) > 1 else (orgs[0][0] if orgs else "")
    username, password = data.get("username", "").strip(), data.get("password", "")
    code = data.get("code", "").strip()
    kept = data.get(KEPT_FIELD, "")
    values = {"org": org, "username": username, "next": data.get("next", "")}
    errors = FormErrors()
    if len(orgs) > 1 and org not in {o for o, _ in orgs}:
        errors.add("org", "Select your school or organisation")
    if not username:
        errors.add("username", "Enter your username")
    if not password:
        errors.add("password", "Enter your password")
    if errors:
        return await sign_in_page(request, status=400, errors=errors, values=values, kept=kept)
    kind = _code_kind(code) if code else None
    try:
        result = await app.accounts.sign_in(
            org,
            username,
            password,
            totp=code if kind == "totp" else None,
            recovery_code=code if kind == "recovery" else None,
        )
    except SlowDown as err:
        errors.add(
            "username",
            f"Too many failed attempts. Wait {_seconds(err.retry_after)}, then try again.",
        )
        return await sign_in_page(request, status=429, errors=errors, values=values, kept=kept)
    except AccountLocked as err:
        until = err.detail.get("locked_until") if isinstance(err.detail, dict) else None
        when = _lock_time(str(until), app.accounts.now()) if until else "later"
        errors.add(
            "username",
            f"This account is locked until {when} after too many failed "
            "attempts. Ask your administrator to unlock it.",
        )
        return await sign_in_page(request, status=403, errors=errors, values=values, kept=kept)
    except SignInFailed:
        errors.add(
            "username", "The username, password or code is not right. Check them and try again."
        )
        return await sign_in_page(request, status=401, errors=errors, values=values, kept=kept)
    if result.state == "must_enrol_totp":
        response: web.StreamResponse = redirect("/sign-in/authenticator")
    else:
        principal = await app.accounts.authenticate(result.token)
        new_visit = await app.visit(request, result.token, principal)
        back = await give_back(request, app, new_visit, kept) if kept else None
        response = back or redirect(safe_next(values["next"] or "/", app))
    app.set_cookie(response, request, SESSION_COOKIE, result.token)
    app.clear_cookie(response, request, PRE_COOKIE)
    return response


def _seconds(n: int) -> str:
    return "1 second" if n == 1 else f"{n} seconds"


def _lock_time(iso: str, now: datetime) -> str:
    """``3:05pm`` (today, in England) or ``3:05pm on 7 September 2026``."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return "later"
    when = clock_time(moment)
    return when if long_date(moment) == long_date(now) else f"{when} on {long_date(moment)}"


# ------------------------------------------------------------ authenticator


def grouped(secret: str) -> str:
    """A TOTP key in groups of four, to type into an app by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def qr_svg(uri: str) -> Markup:
    """The QR code of ``uri`` as inline SVG (no style attribute: allowed by the CSP)."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#0b0c0c", light="#ffffff")
    svg = svg.replace(
        "<svg ", '<svg role="img" aria-labelledby="qr-title" focusable="false" ', 1
    ).replace(">", '><title id="qr-title">QR code to scan with your authenticator app</title>', 1)
    return Markup(svg)  # noqa: S704 - segno's SVG of our own URI: no user text


async def _enrol_page(
    request: web.Request, visit: Visit, *, sealed: str = "", errors: FormErrors | None = None
) -> web.StreamResponse:
    app = webapp(request)
    opened = app.keys.open_enrolment(visit.token, sealed) if sealed else None
    if opened is None:
        try:
            enrolment = await app.accounts.begin_totp_enrolment(visit.principal)
        except ConflictError:
            return app.page(
                request, "authenticator_done.html", visit, title="Your authenticator app is set up"
            )
        secret, uri = enrolment.secret, enrolment.uri
        sealed = app.keys.seal_enrolment(visit.token, secret, uri)
    else:
        secret, uri = opened
    return app.page(
        request,
        "authenticator.html",
        visit,
        title="Set up your authenticator app",
        status=400 if errors else 200,
        errors=errors,
        qr=qr_svg(uri),
        key=grouped(secret),
        sealed=sealed,
    )


async def show_enrol(request: web.Request, visit: Visit) -> web.StreamResponse:
    return await _enrol_page(request, visit)


async def do_enrol(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    data = request[FORM_KEY]
    code, sealed = data.get("code", "").strip(), data.get("enrolment", "")
    errors = FormErrors()
    if not code:
        errors.add("code", "Enter the 6-digit code from your authenticator app")
        return await _enrol_page(request, visit, sealed=sealed, errors=errors)
    try:
        recovery = await app.accounts.confirm_totp_enrolment(visit.principal, code)
    except (WrongCode, InputError):
        errors.add(
            "code",
            "That code is not right. Check the time on your phone is right, "
            "then enter the code the app shows now.",
        )
        return await _enrol_page(request, visit, sealed=sealed, errors=errors)
    except ConflictError:
        return redirect("/sign-in/authenticator")
    return app.page(
        request,
        "recovery_codes.html",
        visit,
        title="Save your recovery codes",
        codes=list(recovery.codes),
    )


# ------------------------------------------------------------------ sign out, keep alive


async def do_sign_out(request: web.Request, visit: Visit) -> web.StreamResponse:
    app = webapp(request)
    await app.accounts.sign_out(visit.principal)
    response = redirect("/sign-in?signed_out=1")
    app.clear_cookie(response, request, SESSION_COOKIE)
    return response


async def keep_alive(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The timeout warning's "stay signed in": the session was used, so it goes on."""
    return web.json_response(
        {"idle_seconds": visit.idle_minutes * 60}, headers={"Cache-Control": "no-store"}
    )


ROUTES: Final = (
    WebRoute("GET", "/sign-in", show_sign_in, "Accounts.authenticate", "public", name="sign-in"),
    WebRoute("POST", "/sign-in", do_sign_in, "Accounts.sign_in", "public"),
    WebRoute(
        "GET",
        "/sign-in/authenticator",
        show_enrol,
        "Accounts.begin_totp_enrolment",
        "enrolment",
        name="authenticator",
    ),
    WebRoute(
        "POST", "/sign-in/authenticator", do_enrol, "Accounts.confirm_totp_enrolment", "enrolment"
    ),
    WebRoute("POST", "/sign-out", do_sign_out, "Accounts.sign_out", "enrolment", name="sign-out"),
    WebRoute("POST", "/session/keep-alive", keep_alive, "Accounts.authenticate", "enrolment"),
)
