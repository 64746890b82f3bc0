"""The machinery of the HTTP API's route tables: :class:`Route`, :class:`Call`, parsing,
authentication, and :func:`bind`, which turns a route into an aiohttp handler.

The tables themselves are ``transfer.api.routes`` (accounts and the store, by way of
``routes_accounts`` and ``routes_store``) and the other ``routes_*`` modules. The app
registers exactly these routes, and the OpenAPI document is built from them
(``transfer.api.openapi``); a test checks the two against the routes aiohttp really serves.
Handlers only parse, authenticate and call the store or the accounts service, which check
permissions themselves.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from schemas import jsontext
from schemas.records import UPN_PATTERN
from transfer.api.problems import (
    MalformedBody,
    RequestValidationFailed,
    UnsupportedMediaType,
    from_validation,
)
from transfer.auth.records import Principal, PrincipalKind
from transfer.auth.service import Accounts, SessionInvalid
from transfer.config import Config
from transfer.errors import NotFoundError, PolicyError, TooLargeError
from transfer.store.service import Store

log = logging.getLogger("transfer.api")

API: Final = "/api/v1"
JSON: Final = "application/json"
CHUNK: Final = 64 * 1024

STORE_KEY: Final = web.AppKey("store", Store)
ACCOUNTS_KEY: Final = web.AppKey("accounts", Accounts)
CONFIG_KEY: Final = web.AppKey("config", Config)
EXPORTS_KEY: Final = web.AppKey("exports_dir", Path)
OPENAPI_KEY: Final = web.AppKey("openapi", dict)

M = TypeVar("M", bound=BaseModel)

ANYONE: Final = frozenset[PrincipalKind]({"session", "enrolment", "token"})
SIGNED_IN: Final = frozenset[PrincipalKind]({"session", "token"})
SESSION_ONLY: Final = frozenset[PrincipalKind]({"session"})
ENROLLING: Final = frozenset[PrincipalKind]({"session", "enrolment"})
NOBODY: Final = frozenset[PrincipalKind]()


@dataclass(frozen=True)
class QueryParam:
    """A query parameter: checked by the route before its handler runs, and described so
    in the OpenAPI document (``choices``: one of these; ``kind``: a UUID or a whole number
    from ``minimum`` to ``maximum``)."""

    name: str
    description: str
    required: bool = False
    max_length: int = 64
    choices: tuple[str, ...] = ()
    kind: Literal["text", "uuid", "pupil", "integer"] = "text"
    minimum: int = 0
    maximum: int = 0


@dataclass
class Call:
    """One request as a handler sees it: parsed body, principal, services."""

    request: web.Request
    principal: Principal | None
    body: BaseModel | None
    query: dict[str, str]

    @property
    def store(self) -> Store:
        return self.request.app[STORE_KEY]

    @property
    def accounts(self) -> Accounts:
        return self.request.app[ACCOUNTS_KEY]

    @property
    def who(self) -> Principal:
        if self.principal is None:
            raise SessionInvalid("sign in first")
        return self.principal

    def body_as(self, model: type[M]) -> M:
        if not isinstance(self.body, model):
            raise TypeError(f"route body is not a {model.__name__}")
        return self.body

    def path(self, name: str) -> str:
        return self.request.match_info[name]


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    handler: Handler
    summary: str
    tag: str
    #: Which principals may call it; empty: no authentication.
    auth: frozenset[PrincipalKind]
    #: JSON request body model.
    body: type[BaseModel] | None = None
    #: Media types of a raw (non-JSON) request body; ``*/*`` means any, streamed.
    raw_body: tuple[str, ...] = ()
    response: type[BaseModel] | None = None
    many: bool = False
    status: int = 200
    #: Media type of a non-JSON response (a streamed document).
    response_media: str = JSON
    #: The body of a 202 response: the change waits for a DSL's approval (two-person rule).
    accepted: type[BaseModel] | None = None
    query: tuple[QueryParam, ...] = field(default_factory=tuple)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.lstrip("_")


# ------------------------------------------------------------------ helpers


def _json(value: BaseModel | Sequence[BaseModel] | None, status: int = 200) -> web.Response:
    if value is None:
        return web.Response(status=204)
    if isinstance(value, BaseModel):
        text = value.model_dump_json()
    else:
        text = json.dumps({"items": [m.model_dump(mode="json") for m in value]})
    return web.Response(status=status, text=text, content_type=JSON)


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole request body, refusing (413) anything over ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLargeError(f"the request body is larger than the limit of {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"the request body is larger than the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _unstorable(value: object, where: str) -> tuple[str, str] | None:
    """The first value no database can store (a NUL in text, a time that overflows in
    UTC), as (location, message); None when every value is fine."""
    if isinstance(value, str):
        return (where, "must not contain NUL characters") if "\x00" in value else None
    if isinstance(value, datetime):
        try:
            value.astimezone(UTC)
        except (OverflowError, ValueError):
            return where, "is out of range"
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _unstorable(item, f"{where}.{key}")
        if found:
            return found
    return None


def _media_type(request: web.Request) -> str:
    return request.content_type.lower() if request.headers.get("Content-Type") else ""


async def _parse_body(route: Route, request: web.Request, limit: int) -> BaseModel | None:
    if route.body is None:
        return None
    if _media_type(request) != JSON:
        raise UnsupportedMediaType(f"this operation takes {JSON}")
    raw = await read_limited(request, limit)
    try:
        jsontext.refuse_duplicate_keys(raw)
    except jsontext.JSONRefused as exc:
        raise MalformedBody(f"the request body is not acceptable JSON: {exc}") from None
    try:
        model = route.body.model_validate_json(raw, strict=True)
    except ValidationError as err:
        raise from_validation(err) from None
    bad = _unstorable(model.model_dump(mode="python"), "body")
    if bad is not None:
        error = {"location": bad[0], "message": bad[1], "type": "value_error"}
        raise RequestValidationFailed(f"{bad[0]} {bad[1]}", [error])
    return model


def _parse_query(route: Route, request: web.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    errors = []
    for q in route.query:
        value = request.query.get(q.name)
        if value is None:
            if q.required:
                errors.append(
                    {"location": f"query.{q.name}", "message": "is required", "type": "missing"}
                )
            continue
        if _has_control(value):
            errors.append(
                {
                    "location": f"query.{q.name}",
                    "message": "must not contain control characters",
                    "type": "string_pattern_mismatch",
                }
            )
            continue
        if not 1 <= len(value) <= q.max_length:
            errors.append(
                {
                    "location": f"query.{q.name}",
                    "message": f"must be 1 to {q.max_length} characters",
                    "type": "string_length",
                }
            )
            continue
        problem = _query_value_problem(q, value)
        if problem is not None:
            errors.append(
                {"location": f"query.{q.name}", "message": problem[0], "type": problem[1]}
            )
            continue
        out[q.name] = value
    if errors:
        raise RequestValidationFailed(f"{errors[0]['location']} {errors[0]['message']}", errors)
    return out


def _query_value_problem(q: QueryParam, value: str) -> tuple[str, str] | None:
    """Why ``value`` is not one ``q`` takes, as (message, type); None when it is."""
    if q.choices and value not in q.choices:
        return f"must be one of {', '.join(q.choices)}", "literal_error"
    if q.kind == "uuid" and not is_uuid(value):
        return "must be a UUID", "uuid_parsing"
    if q.kind == "pupil" and not is_pupil_reference(value):
        return "must be a pupil's UPN or record id", "string_pattern_mismatch"
    if q.kind == "integer":
        if not (value.isascii() and value.isdigit()) or not q.minimum <= int(value) <= q.maximum:
            return f"must be a whole number from {q.minimum} to {q.maximum}", "int_parsing"
    return None


def is_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in its usual written form (36 characters, hyphens)."""
    if len(text) != 36:
        return False
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


#: The shape of a UPN (its check letter and LA code are the store's to check, with the
#: DfE's own messages).
_UPN_SHAPE: Final = re.compile(UPN_PATTERN)


def is_pupil_reference(text: str) -> bool:
    """Whether ``text`` can name a pupil: a record id, or something shaped like a UPN."""
    return is_uuid(text) or _UPN_SHAPE.fullmatch(text) is not None


def is_pupil_parameter(name: str) -> bool:
    """``pupil_id`` takes the pupil's UPN as well as its record id (people know the UPN)."""
    return name == "pupil_id"


#: Other path parameters named ``..._id`` are record ids: UUIDs (the OpenAPI document
#: says so).
def is_id_parameter(name: str) -> bool:
    return name.endswith("_id") and not is_pupil_parameter(name)


async def _authenticate(route: Route, request: web.Request) -> Principal | None:
    if not route.auth:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SessionInvalid("sign in first: send Authorization: Bearer <session or API token>")
    principal = await request.app[ACCOUNTS_KEY].authenticate(
        token.strip(), allow_enrolment="enrolment" in route.auth
    )
    if principal.kind not in route.auth:
        raise PolicyError("this operation needs a signed-in session, not an API token")
    return principal


def bind(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler for ``route``: authenticate, parse, then call the route's handler."""

    async def handle(request: web.Request) -> web.StreamResponse:
        config = request.app[CONFIG_KEY]
        principal = await _authenticate(route, request)
        for name, value in request.match_info.items():
            if len(value) > 200 or _has_control(value):
                raise NotFoundError(f"there is no such record (bad {name})")
            if is_id_parameter(name) and not is_uuid(value):
                raise NotFoundError(f"there is no such record ({name} is a UUID)")
            if is_pupil_parameter(name) and not is_pupil_reference(value):
                raise NotFoundError("there is no such pupil (name a pupil by UPN or record id)")
        query = _parse_query(route, request)
        body = await _parse_body(route, request, config.server.max_body_bytes)
        if route.raw_body and route.raw_body != ("*/*",):
            if _media_type(request) not in route.raw_body:
                raise UnsupportedMediaType(f"this operation takes {' or '.join(route.raw_body)}")
        return await route.handler(Call(request, principal, body, query))

    handle.__name__ = route.operation_id
    return handle
