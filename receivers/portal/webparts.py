"""The pickup portal's pages' parts (:mod:`receivers.portal.web` has the pages): its
headers and cookies, the referral as the page and the PDF read it, the templates, the
forms (size, CSRF) and the visit from the session cookie.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import jinja2
from aiohttp import web

from receivers.portal.records import PortalVisit, ReferralView
from receivers.portal.service import PickupPortal, PortalSessionEnded
from transfer.errors import HandoverError, InputError, TooLargeError
from transfer.referrals.reading import ReadableReferral, date_and_time, readable_referral
from transfer.wording import plural

PREFIX: Final = "/portal"
PORTAL_APP_KEY: Final = web.AppKey("pickup_portal", PickupPortal)
SECURE_KEY: Final = web.AppKey("portal_behind_tls_proxy", bool)
ENV_KEY: Final = web.AppKey("portal_templates", jinja2.Environment)

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


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("receivers.portal", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["size"] = size_text
    env.filters["when"] = when
    return env


# ------------------------------------------------------------------ helpers


def portal_of(request: web.Request) -> PickupPortal:
    return request.app[PORTAL_APP_KEY]


def is_secure(request: web.Request) -> bool:
    return request.secure or request.app[SECURE_KEY]


def cookie_name(request: web.Request, base: str) -> str:
    return f"__Host-{base}" if is_secure(request) else base


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    base: str,
    value: str,
    *,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        cookie_name(request, base),
        value,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=is_secure(request),
        max_age=max_age,
    )


def clear_cookie(response: web.StreamResponse, request: web.Request, base: str) -> None:
    response.del_cookie(
        cookie_name(request, base),
        path="/",
        secure=is_secure(request),
        httponly=True,
        samesite="Strict",
    )


def client_ip(request: web.Request) -> str | None:
    if request.app[SECURE_KEY]:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return request.remote


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    env = request.app[ENV_KEY]
    html = env.get_template(template).render(**context)
    return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


#: The portal's forms are a few short fields. The sub-application's own ``client_max_size``
#: does not apply (aiohttp reads bodies with the root application's limit), so check here.
MAX_FORM_BYTES = 64 * 1024


async def read_form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise InputError("this page takes a form")
    if request.content_length is None or request.content_length > MAX_FORM_BYTES:
        raise TooLargeError("this form is too large to be one of ours")
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def visit_of(request: web.Request) -> PortalVisit:
    secret = request.cookies.get(cookie_name(request, SESSION_COOKIE), "")
    if not secret:
        raise PortalSessionEnded("open the link from your e-mail to see the referral")
    return await portal_of(request).visit(secret)


class CsrfRefused(HandoverError):
    http_status = 403
    slug = "portal-csrf"
    title = "This form has expired"


def check_csrf(request: web.Request, binding: str, form: str, data: dict[str, str]) -> None:
    token = data.get("csrf", "")
    if not binding or not token or not portal_of(request).csrf_valid(binding, form, token):
        raise CsrfRefused(
            "this form was not sent from this page, or it has expired; go back, reload the "
            "page and try again"
        )
