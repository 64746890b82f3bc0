"""RFC 9457 problem documents for every error that reaches the HTTP edge.

Each :class:`HandoverError` becomes ``application/problem+json`` with its
``http_status``; a pydantic ``ValidationError`` becomes 422 with an
``errors`` list (locations and messages, never the submitted values); aiohttp's
own 404/405/413 become problems too. Anything unexpected is a bare 500 problem
(logged with the request id, no details sent).

:func:`problem_middleware` does this for both JSON faces, the staff API
(``transfer.api.app``) and the peer server (``transfer.api.peer``); a
:class:`ProblemEdge` says what each adds (its audit of a crash, its own headers).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import ValidationError

from schemas.text import where as shown_where
from transfer.audit.request_ids import HEADER, REQUEST_ID, request_id_from
from transfer.errors import (
    DamagedStateError,
    HandoverError,
    InputError,
    OutOfSpaceError,
    TooLargeError,
)
from transfer.space import as_out_of_space

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:handover:problem:"


class MalformedBody(InputError):
    """The request body is not well-formed (e.g. not JSON)."""

    slug = "malformed-body"
    title = "The request body is not well-formed"


class UnsupportedMediaType(InputError):
    """The request's Content-Type is not one this operation takes."""

    http_status = 415
    slug = "unsupported-media-type"
    title = "Unsupported content type"


class RequestValidationFailed(InputError):
    """The request body or parameters do not match the operation's schema."""

    http_status = 422
    slug = "validation-failed"
    title = "The request does not match the schema"

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.errors = errors


class RouteNotFound(HandoverError):
    http_status = 404
    slug = "no-such-route"
    title = "No such route"


class MethodNotAllowed(HandoverError):
    http_status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


def validation_errors(err: ValidationError, where: str = "body") -> list[dict[str, str]]:
    """Locations, messages and types of a ``ValidationError``; the submitted input is left out."""
    out = []
    for e in err.errors(include_input=False, include_url=False, include_context=False):
        loc = shown_where((where, *e["loc"]))
        msg = "is not a known field" if e["type"] == "extra_forbidden" else e["msg"]
        out.append({"location": loc, "message": msg, "type": e["type"]})
    return out


def from_validation(err: ValidationError, where: str = "body") -> HandoverError:
    if any(e["type"] == "json_invalid" for e in err.errors(include_input=False)):
        return MalformedBody("the request body is not valid JSON")
    errors = validation_errors(err, where)
    first = errors[0] if errors else {"location": where, "message": "is not valid"}
    return RequestValidationFailed(f"{first['location']} {first['message']}", errors)


def problem_text(
    status: int,
    *,
    slug: str,
    title: str,
    detail: str,
    request_id: str | None,
    extra: dict[str, Any] | None = None,
) -> str:
    """The JSON text of a problem document."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": f"urn:handover:request:{request_id or 'unknown'}",
    }
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return json.dumps(body, default=str)


def problem_response(
    status: int,
    *,
    slug: str,
    title: str,
    detail: str,
    request_id: str | None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        text=problem_text(
            status, slug=slug, title=title, detail=detail, request_id=request_id, extra=extra
        ),
        content_type=MEDIA_TYPE,
        headers=headers,
    )


def error_response(err: HandoverError, request_id: str | None) -> web.Response:
    extra: dict[str, Any] = dict(err.detail)
    if isinstance(err, RequestValidationFailed):
        extra["errors"] = err.errors
    headers = {}
    retry_after = err.detail.get("retry_after")
    if isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    if err.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="handover"'
    return problem_response(
        err.http_status,
        slug=err.slug,
        title=err.title,
        detail=err.diagnostics(),
        request_id=request_id,
        extra=extra,
        headers=headers,
    )


# ------------------------------------------------------------------ the middleware

log = logging.getLogger("transfer.api")

#: Where the request id is kept on the request (a typed key on aiohttp >= 3.14); an
#: application mounted inside another takes the id the outer one gave the request.
RID_KEY: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"


def request_id_of(request: web.Request) -> str:
    """The id :func:`problem_middleware` gave ``request`` ("unknown" before it ran)."""
    value = request.get(RID_KEY)
    return value if isinstance(value, str) else "unknown"


def from_http(exc: web.HTTPException, request: web.Request) -> web.StreamResponse:
    """aiohttp's own error (no route, wrong method, body too large...) as a problem."""
    rid = request_id_of(request)
    if isinstance(exc, web.HTTPNotFound):
        err: HandoverError = RouteNotFound(f"there is no route {request.path[:200]!r}")
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        resp = error_response(
            MethodNotAllowed(
                f"{request.method} is not allowed here; allowed: {', '.join(allowed)}",
                detail={"allowed": allowed},
            ),
            rid,
        )
        resp.headers["Allow"] = ", ".join(allowed)
        return resp
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        err = TooLargeError("the request body is too large")
    else:
        return problem_response(
            exc.status,
            slug=f"http-{exc.status}",
            title=exc.reason,
            detail=exc.reason,
            request_id=rid,
        )
    return error_response(err, rid)


@dataclass(frozen=True)
class ProblemEdge:
    """What one HTTP face adds to :func:`problem_middleware`."""

    #: The data directory a full disk is recognised by.
    data_dir: Callable[[web.Request], str]
    #: Told of a request refused for want of space (the node's watch alerts the DSLs).
    out_of_space: Callable[[web.Request, OutOfSpaceError, str], None]
    #: Audits an unexpected error (after it is logged with its traceback).
    crashed: Callable[[web.Request, str], Awaitable[None]]
    #: Adds the face's own headers to an error's problem document.
    decorate: Callable[[HandoverError, web.StreamResponse], None] | None = None
    #: Headers every answer gets unless the handler set them.
    headers: tuple[tuple[str, str], ...] = ()
    #: Log one line per request (the outermost face does).
    access_log: bool = False
    logger: logging.Logger = log


def problem_middleware(edge: ProblemEdge) -> Middleware:
    """Give the request an id, and turn every error into an RFC 9457 problem document.

    A :class:`HandoverError` is its own problem; a ``ValidationError`` is 422; aiohttp's
    404, 405 and 413 are ``no-such-route``, ``method-not-allowed`` and ``too-large``; a
    full disk is 503 ``out-of-space``; anything else is logged with its traceback,
    audited, and answered 500 ``internal-error`` with nothing of the error in it.
    """

    @web.middleware
    async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.get(RID_KEY)
        if not isinstance(rid, str):
            rid = request_id_from(request.headers.get(HEADER))
            request[RID_KEY] = rid
        token = REQUEST_ID.set(rid)
        started = time.monotonic()
        status = 500
        try:
            response = await _answer(request, handler, rid, edge)
            status = response.status
            if not response.prepared:
                response.headers[HEADER] = rid
                for name, value in edge.headers:
                    response.headers.setdefault(name, value)
            return response
        finally:
            if edge.access_log:
                edge.logger.info(
                    "%s %s -> %s in %.1f ms [request %s]",
                    request.method,
                    request.path,
                    status,
                    (time.monotonic() - started) * 1000,
                    rid,
                )
            REQUEST_ID.reset(token)

    return problems


async def _answer(
    request: web.Request, handler: Handler, rid: str, edge: ProblemEdge
) -> web.StreamResponse:
    try:
        return await handler(request)
    except HandoverError as err:
        return _error(request, err, rid, edge)
    except ValidationError as err:
        return error_response(from_validation(err), rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http(exc, request)
    except Exception as exc:
        full = as_out_of_space(exc, edge.data_dir(request))
        if full is not None:
            return _error(request, full, rid, edge)
        edge.logger.exception(
            "unexpected error in %s %s [request %s]", request.method, request.path, rid
        )
        await edge.crashed(request, rid)
        return problem_response(
            500,
            slug="internal-error",
            title="Something went wrong on the server",
            detail="an unexpected error occurred; quote the request id to the operator",
            request_id=rid,
        )


def _error(
    request: web.Request, err: HandoverError, rid: str, edge: ProblemEdge
) -> web.StreamResponse:
    if isinstance(err, OutOfSpaceError):
        edge.out_of_space(request, err, rid)
    elif isinstance(err, DamagedStateError):
        # Not the caller's doing, and the operator must act: one line, no traceback.
        edge.logger.error(
            "%s %s failed: %s [request %s]", request.method, request.path, err.diagnostics(), rid
        )
    response = error_response(err, rid)
    if edge.decorate is not None:
        edge.decorate(err, response)
    return response
