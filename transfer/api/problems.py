"""RFC 9457 problem documents for every error that reaches the HTTP edge.

Each :class:`HandoverError` becomes ``application/problem+json`` with its
``http_status``; a pydantic ``ValidationError`` becomes 422 with an
``errors`` list (locations and messages, never the submitted values); aiohttp's
own 404/405/413 become problems too. Anything unexpected is a bare 500 problem
(logged with the request id, no details sent).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from schemas.text import where as shown_where
from transfer.errors import HandoverError, InputError

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
