"""The web app's error pages: a refusal, a missing page, a full disk or a crash on a page
is a page (never JSON, never a traceback, never a raw id), by :func:`page_errors`, the
middleware :func:`transfer.web.binding.mount` adds.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from schemas.auditing import AuditEvent
from transfer.audit.request_ids import current_request_id
from transfer.errors import HandoverError, OutOfSpaceError
from transfer.space import as_out_of_space
from transfer.web.core import (
    NOT_PAGES,
    CsrfRefused,
    sign_in_url,
    webapp,
)
from transfer.web.rendering import redirect

log = logging.getLogger("transfer.web")

_TITLES: Final = {
    400: ("There is a problem with what was sent", None),
    403: ("You cannot do this", None),
    404: (
        "Page not found",
        "If you typed the web address, check it is correct. If you "
        "followed a link, it may be out of date.",
    ),
    405: ("This page cannot be used that way", "Go back and use the page's own buttons."),
    409: ("This has changed in the meantime", None),
    413: ("What was sent is too large", None),
    500: (
        "Sorry, there is a problem with the service",
        "Try again later. If it keeps "
        "happening, tell whoever runs Handover at your school, and quote the reference "
        "below.",
    ),
    503: (
        "Sorry, the service is not available just now",
        "The server has run out of "
        "storage space, so what you just did was not saved. Nothing else was lost. Try "
        "again later. If it keeps happening, tell whoever runs Handover at your school, and "
        "quote the reference below.",
    ),
}


def _is_page(request: web.Request) -> bool:
    return not request.path.startswith(NOT_PAGES)


async def _error_page(request: web.Request, status: int, text: str | None) -> web.Response:
    app = webapp(request)
    heading, default = _TITLES.get(status, _TITLES[400] if status < 500 else _TITLES[500])
    visit = None
    token = app.session_token(request)
    if token and status < 500:
        try:
            visit = await app.visit(request, token, await app.accounts.authenticate(token))
        except HandoverError:
            visit = None
    return app.page(
        request,
        "error.html",
        visit,
        title=heading,
        status=status,
        text=text or default,
        status_code=status,
    )


@web.middleware
async def page_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors on pages become pages: never JSON, never a traceback, never a raw id."""
    if not _is_page(request):
        return await handler(request)
    try:
        return await handler(request)
    except CsrfRefused as err:
        return await _error_page(request, 403, err.diagnostics())
    except OutOfSpaceError as err:
        return await _out_of_space(request, err)
    except HandoverError as err:
        status = err.http_status if 400 <= err.http_status < 500 else 500
        if status == 401:
            return redirect(sign_in_url(expired=True))
        if status == 404:
            return await _error_page(request, 404, None)
        if status == 500:
            log.error("web page failed: %s [request %s]", err.diagnostics(), current_request_id())
            return await _error_page(request, 500, None)
        return await _error_page(request, status, _sentence(err.diagnostics()))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return await _error_page(request, exc.status, None)
    except Exception as exc:
        full = as_out_of_space(exc, str(webapp(request).services.store.data_dir))
        if full is not None:
            return await _out_of_space(request, full)
        log.exception(
            "unexpected error on page %s %s [request %s]",
            request.method,
            request.path,
            current_request_id(),
        )
        await _audit_crash(request)
        return await _error_page(request, 500, None)


async def _out_of_space(request: web.Request, err: OutOfSpaceError) -> web.Response:
    """A page refused for want of space: one log line, the watch told, a plain 503 page."""
    webapp(request).services.store.space.noticed(
        err, f"{request.method} {request.path}", current_request_id()
    )
    return await _error_page(request, 503, None)


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


async def _audit_crash(request: web.Request) -> None:
    try:
        await webapp(request).services.audit.record(
            AuditEvent(
                action="web.error",
                outcome="failed",
                request_id=current_request_id(),
                detail={"method": request.method, "path": request.path[:200]},
            )
        )
    except Exception:
        log.exception("could not audit a page error")
