"""Pages: the Jinja environment (our templates and GOV.UK Frontend's macros), the
filters that write dates and times as people read them, and the page response
with its headers (a strict CSP, ``no-store``) and compression."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from transfer.web.static import accepted_coding, compress

ENGLAND: Final = ZoneInfo("Europe/London")

#: No inline script or style anywhere; scripts, styles and images only from this origin.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'none'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
#: Every page's headers (the API's own security headers are added by its middleware too).
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Strict-Transport-Security": "max-age=31536000",
    "Vary": "Accept-Encoding",
}


# ------------------------------------------------------------------ filters


def _local(value: datetime | date) -> datetime | date:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(ENGLAND)
    return value


def long_date(value: datetime | date | None) -> str:
    """``6 December 2026`` (in England, for a moment in time)."""
    if value is None:
        return ""
    day = _local(value)
    return f"{day.day} {day:%B %Y}"


def clock_time(value: datetime | None) -> str:
    """``3:05pm``, ``3pm``, ``midday``, ``midnight`` (GOV.UK style, in England)."""
    if value is None:
        return ""
    moment = _local(value)
    assert isinstance(moment, datetime)
    if moment.hour == 0 and moment.minute == 0:
        return "midnight"
    if moment.hour == 12 and moment.minute == 0:
        return "midday"
    hour = moment.hour % 12 or 12
    suffix = "am" if moment.hour < 12 else "pm"
    return f"{hour}{suffix}" if moment.minute == 0 else f"{hour}:{moment.minute:02d}{suffix}"


def date_and_time(value: datetime | None) -> str:
    """``6 December 2026 at 3:05pm``."""
    if value is None:
        return ""
    return f"{long_date(value)} at {clock_time(value)}"


def age(value: datetime | date | None, now: datetime | None = None) -> str:
    """How long ago, in the largest whole unit: ``3 days``, ``1 hour``, ``less than a minute``."""
    if value is None:
        return ""
    now = now or datetime.now(UTC)
    if not isinstance(value, datetime):
        days = (now.astimezone(ENGLAND).date() - value).days
        return _plural(days, "day") if days > 0 else "today"
    seconds = (now - value).total_seconds()
    if seconds < 60:
        return "less than a minute"
    for size, unit in ((86400 * 7, "week"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and not (unit == "week" and seconds < 86400 * 14):
            return _plural(int(seconds // size), unit)
    return "less than a minute"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def plural(n: int, singular: str, many: str | None = None) -> str:
    """``1 concern``, ``3 concerns``."""
    return f"{n} {singular}" if n == 1 else f"{n} {many or singular + 's'}"


def environment() -> jinja2.Environment:
    loader = jinja2.ChoiceLoader(
        [
            jinja2.PackageLoader("transfer.web", "templates"),
            jinja2.PrefixLoader(
                {"govuk_frontend_jinja": jinja2.PackageLoader("govuk_frontend_jinja", "templates")}
            ),
        ]
    )
    env = jinja2.Environment(
        loader=loader,
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["long_date"] = long_date
    env.filters["clock_time"] = clock_time
    env.filters["date_and_time"] = date_and_time
    env.filters["age"] = age
    env.globals["plural"] = plural
    return env


def page_response(
    request: web.Request, html: str, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """An HTML page with the pages' headers, compressed when the browser accepts it."""
    body = html.encode("utf-8")
    out = {**PAGE_HEADERS, "Content-Type": "text/html; charset=utf-8", **(headers or {})}
    coding = accepted_coding(request.headers.get("Accept-Encoding", ""))
    if coding is not None:
        body = compress(body, coding)
        out["Content-Encoding"] = coding
    return web.Response(status=status, body=body, headers=out)


def redirect(location: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """303 See Other (POST, then redirect, then GET), with the pages' headers."""
    return web.Response(
        status=303, headers={**PAGE_HEADERS, "Location": location, **(headers or {})}
    )


def render(env: jinja2.Environment, template: str, context: dict[str, Any]) -> str:
    return env.get_template(template).render(**context)
