"""The route table of the HTTP API: every operation, its handler, and what it takes and gives.

The app registers exactly these routes, and the OpenAPI document is built
from this table (``transfer.api.openapi``); a test checks the two against the
routes aiohttp really serves. Handlers only parse, authenticate and call the
store or the accounts service, which check permissions themselves.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from schemas import jsontext
from schemas.api import (
    NewStaff,
    NewToken,
    PasswordChange,
    PasswordReset,
    SessionInfo,
    SignIn,
    StaffChanges,
    StatusChange,
    TotpConfirm,
)
from schemas.records import (
    UPN_PATTERN,
    ActionRecord,
    CategoryRecord,
    ChronologyLine,
    ConcernRecord,
    ConcernSummary,
    ContactRecord,
    CTFImportResult,
    Destination,
    DocumentRef,
    NewAction,
    NewConcern,
    NewContact,
    NewPupil,
    NewTriage,
    PupilChanges,
    PupilRecord,
    StaffRecord,
    TriageRecord,
)
from transfer.api.problems import (
    MalformedBody,
    RequestValidationFailed,
    UnsupportedMediaType,
    from_validation,
)
from transfer.auth.records import (
    AccountStatus,
    ApprovalRecord,
    IssuedToken,
    Principal,
    PrincipalKind,
    RecoveryCodes,
    SignInResult,
    TokenInfo,
    TotpEnrolment,
)
from transfer.auth.service import Accounts, SessionInvalid
from transfer.config import Config
from transfer.errors import HandoverError, InputError, NotFoundError, PolicyError, TooLargeError
from transfer.identifiers import validate_laestab, validate_urn
from transfer.store.permissions import Permission
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


# -------------------------------------------------------------- sign-in


async def sign_in(call: Call) -> web.StreamResponse:
    data = call.body_as(SignIn)
    result = await call.accounts.sign_in(
        data.org, data.username, data.password, totp=data.totp, recovery_code=data.recovery_code
    )
    return _json(result, 201)


async def whoami(call: Call) -> web.StreamResponse:
    p = call.who
    return _json(
        SessionInfo(
            staff_id=p.actor.staff_id,
            org_id=p.actor.org_id,
            display_name=p.actor.display_name,
            roles=tuple(sorted(r.value for r in p.actor.roles)),
            kind=p.kind,
            permissions=tuple(sorted(x.value for x in Permission if p.actor.has(x))),
        )
    )


async def sign_out(call: Call) -> web.StreamResponse:
    await call.accounts.sign_out(call.who)
    return _json(None)


async def begin_totp(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.begin_totp_enrolment(call.who), 201)


async def confirm_totp(call: Call) -> web.StreamResponse:
    code = call.body_as(TotpConfirm).code
    return _json(await call.accounts.confirm_totp_enrolment(call.who, code))


async def new_recovery_codes(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.regenerate_recovery_codes(call.who), 201)


async def change_password(call: Call) -> web.StreamResponse:
    data = call.body_as(PasswordChange)
    await call.accounts.change_password(call.who, data.current_password, data.new_password)
    return _json(None)


async def list_tokens(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.list_tokens(call.who))


async def create_token(call: Call) -> web.StreamResponse:
    data = call.body_as(NewToken)
    issued = await call.accounts.create_token(
        call.who,
        name=data.name,
        scopes=[s.value for s in data.scopes],
        expires_in_days=data.expires_in_days,
    )
    return _json(issued, 201)


async def revoke_token(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.revoke_token(call.who, call.path("token_id")))


# ------------------------------------------------------ staff administration


async def list_staff(call: Call) -> web.StreamResponse:
    return _json(await call.store.list_staff(call.who.actor))


async def create_staff(call: Call) -> web.StreamResponse:
    data = call.body_as(NewStaff)
    result = await call.accounts.create_account(
        call.who.actor,
        username=data.username,
        display_name=data.display_name,
        roles=[r.value for r in data.roles],
        password=data.password,
        email=data.email,
    )
    return _json(result, 202 if isinstance(result, ApprovalRecord) else 201)


async def get_staff(call: Call) -> web.StreamResponse:
    return _json(await call.store.get_staff(call.who.actor, call.path("staff_id")))


async def update_staff(call: Call) -> web.StreamResponse:
    data = call.body_as(StaffChanges)
    actor, staff_id = call.who.actor, call.path("staff_id")
    result: StaffRecord | ApprovalRecord
    if data.display_name is not None or data.email is not None or data.roles is None:
        result = await call.store.update_staff(
            actor, staff_id, display_name=data.display_name, email=data.email
        )
    if data.roles is not None:
        result = await call.accounts.set_roles(actor, staff_id, [r.value for r in data.roles])
    return _json(result, 202 if isinstance(result, ApprovalRecord) else 200)


async def deactivate_staff(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.deactivate(call.who.actor, call.path("staff_id")))


async def unlock_staff(call: Call) -> web.StreamResponse:
    await call.accounts.unlock(call.who.actor, call.path("staff_id"))
    return _json(None)


async def reset_password(call: Call) -> web.StreamResponse:
    data = call.body_as(PasswordReset)
    waiting = await call.accounts.reset_password(
        call.who.actor, call.path("staff_id"), data.password
    )
    return _json(waiting, 202)


async def reset_totp(call: Call) -> web.StreamResponse:
    waiting = await call.accounts.reset_totp(call.who.actor, call.path("staff_id"))
    return _json(waiting, 202)


async def list_staff_approvals(call: Call) -> web.StreamResponse:
    state = call.query.get("state", "pending")
    return _json(
        await call.accounts.list_approvals(call.who.actor, state=None if state == "all" else state)
    )


async def get_staff_approval(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.get_approval(call.who.actor, call.path("approval_id")))


async def approve_staff_change(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.approve(call.who.actor, call.path("approval_id")))


async def decline_staff_change(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.decline(call.who.actor, call.path("approval_id")))


async def sign_in_problems(call: Call) -> web.StreamResponse:
    return _json(await call.accounts.sign_in_problems(call.who.actor))


# -------------------------------------------------------------------- store


async def list_categories(call: Call) -> web.StreamResponse:
    return _json(await call.store.list_categories(call.who.actor))


async def list_pupils(call: Call) -> web.StreamResponse:
    return _json(await call.store.list_pupils(call.who.actor))


def _check_destination(d: Destination | None) -> None:
    """Refuse a destination the store would not fit in its columns.

    Work-around at the edge until ``Store.create_pupil``/``update_pupil`` validate
    the destination themselves (PostgreSQL otherwise fails on an over-long value).
    """
    if d is None:
        return
    if d.urn is not None:
        validate_urn(d.urn)
    if d.laestab is not None:
        validate_laestab(d.laestab)
    if d.name is not None and len(d.name) > 200:
        raise InputError("the destination school's name must be at most 200 characters")


async def create_pupil(call: Call) -> web.StreamResponse:
    data = call.body_as(NewPupil)
    _check_destination(data.destination)
    return _json(await call.store.create_pupil(call.who.actor, data), 201)


async def get_pupil(call: Call) -> web.StreamResponse:
    return _json(await call.store.get_pupil(call.who.actor, call.path("pupil_id")))


async def update_pupil(call: Call) -> web.StreamResponse:
    changes = call.body_as(PupilChanges)
    _check_destination(changes.destination)
    return _json(await call.store.update_pupil(call.who.actor, call.path("pupil_id"), changes))


def _flag(call: Call, name: str) -> bool:
    """A yes/no query parameter: ``true`` or ``false`` (absent: false)."""
    value = call.query.get(name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    error = {"location": f"query.{name}", "message": "must be true or false", "type": "bool_type"}
    raise RequestValidationFailed(f"query.{name} must be true or false", [error])


async def import_ctf(call: Call) -> web.StreamResponse:
    limit = call.request.app[CONFIG_KEY].server.max_body_bytes
    data = await read_limited(call.request, limit)
    force = _flag(call, "force")
    return _json(await call.store.import_ctf(call.who.actor, data, force=force), 201)


async def list_concerns(call: Call) -> web.StreamResponse:
    pupil_id = call.query.get("pupil_id")
    return _json(await call.store.list_concerns(call.who.actor, pupil_id=pupil_id))


async def record_concern(call: Call) -> web.StreamResponse:
    return _json(await call.store.record_concern(call.who.actor, call.body_as(NewConcern)), 201)


async def get_concern(call: Call) -> web.StreamResponse:
    return _json(await call.store.get_concern(call.who.actor, call.path("concern_id")))


async def set_concern_status(call: Call) -> web.StreamResponse:
    status = call.body_as(StatusChange).status
    return _json(
        await call.store.set_concern_status(call.who.actor, call.path("concern_id"), status)
    )


async def triage_concern(call: Call) -> web.StreamResponse:
    data = call.body_as(NewTriage)
    return _json(
        await call.store.triage_concern(call.who.actor, call.path("concern_id"), data), 201
    )


async def add_action(call: Call) -> web.StreamResponse:
    data = call.body_as(NewAction)
    return _json(await call.store.add_action(call.who.actor, call.path("concern_id"), data), 201)


async def complete_action(call: Call) -> web.StreamResponse:
    return _json(await call.store.complete_action(call.who.actor, call.path("action_id")))


async def add_contact(call: Call) -> web.StreamResponse:
    data = call.body_as(NewContact)
    return _json(await call.store.add_contact(call.who.actor, call.path("concern_id"), data), 201)


async def upload_document(call: Call) -> web.StreamResponse:
    request = call.request
    limit = request.app[CONFIG_KEY].server.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLargeError(f"the document is larger than the limit of {limit} bytes")

    async def chunks() -> AsyncIterator[bytes]:
        size = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > limit:
                raise TooLargeError(f"the document is larger than the limit of {limit} bytes")
            yield chunk
        if size == 0:
            # Found by the contract test: an empty body was stored as a 0-byte document.
            raise InputError("the document is empty: the request body is the file to upload")

    # The request's Content-Type says nothing reliable (a form's, curl's): the store reads
    # the document's kind from its first bytes and refuses kinds it does not keep.
    ref = await call.store.add_document(
        call.who.actor,
        call.path("pupil_id"),
        chunks(),
        filename=call.query["filename"],
        concern_id=call.query.get("concern_id"),
    )
    return _json(ref, 201)


def _content_disposition(filename: str) -> str:
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    quoted = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


async def download_document(call: Call) -> web.StreamResponse:
    ref, chunks = await call.store.read_document(call.who.actor, call.path("document_id"))
    digest = base64.b64encode(bytes.fromhex(ref.sha256)).decode()
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": _content_disposition(ref.filename),
            "Repr-Digest": f"sha-256=:{digest}:",
            "X-Handover-Media-Type": ref.media_type[:200],
        },
    )
    response.content_length = ref.size
    await response.prepare(call.request)
    try:
        async for piece in chunks:
            await response.write(piece)
    except HandoverError as err:
        # The headers are gone: the only honest signal left is to cut the connection short.
        log.error("document %s failed while streaming: %s", ref.id, err.diagnostics())
        transport = call.request.transport
        if transport is not None:
            transport.abort()
        return response
    await response.write_eof()
    return response


async def chronology(call: Call) -> web.StreamResponse:
    return _json(await call.store.chronology_lines(call.who.actor, call.path("pupil_id")))


async def subject_access_export(call: Call) -> web.StreamResponse:
    """The export streamed to the caller as a tar archive; nothing is kept on the node."""
    archive = await call.store.export_subject_access(call.who.actor, call.path("pupil_id"))
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "application/x-tar",
            "Content-Disposition": _content_disposition(f"{archive.name}.tar"),
        },
    )
    await response.prepare(call.request)
    try:
        async for piece in archive.chunks:
            await response.write(piece)
    except HandoverError as err:
        # The headers are gone: cut the connection so the caller never has a whole archive.
        log.error("a subject access export stopped while streaming: %s", err.diagnostics())
        transport = call.request.transport
        if transport is not None:
            transport.abort()
        return response
    await response.write_eof()
    return response


async def openapi_document(call: Call) -> web.StreamResponse:
    return web.json_response(call.request.app[OPENAPI_KEY])


# --------------------------------------------------------------- the table

_FORCE_CTF = QueryParam(
    "force",
    "true: import a CTF addressed to another school (your own leavers' CTF); without "
    "it such a CTF is refused (409 ctf-addressed-elsewhere, naming that school)",
    max_length=5,
)
_PUPIL_FILTER = QueryParam(
    "pupil_id", "only concerns about this pupil (its UPN, or its id)", kind="pupil"
)

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{API}/openapi.json",
        openapi_document,
        "This API's OpenAPI 3.1 document",
        "meta",
        NOBODY,
    ),
    Route(
        "POST",
        f"{API}/session",
        sign_in,
        "Sign in (password and TOTP or a recovery code)",
        "session",
        NOBODY,
        body=SignIn,
        response=SignInResult,
        status=201,
    ),
    Route(
        "GET",
        f"{API}/session",
        whoami,
        "Who the bearer token acts as",
        "session",
        ANYONE,
        response=SessionInfo,
    ),
    Route(
        "DELETE",
        f"{API}/session",
        sign_out,
        "Sign out (end this session)",
        "session",
        ENROLLING,
        status=204,
    ),
    Route(
        "POST",
        f"{API}/me/totp",
        begin_totp,
        "Start TOTP enrolment (otpauth URI and QR)",
        "session",
        ENROLLING,
        response=TotpEnrolment,
        status=201,
    ),
    Route(
        "POST",
        f"{API}/me/totp/confirm",
        confirm_totp,
        "Confirm TOTP enrolment with a first code; returns recovery codes",
        "session",
        ENROLLING,
        body=TotpConfirm,
        response=RecoveryCodes,
    ),
    Route(
        "POST",
        f"{API}/me/recovery-codes",
        new_recovery_codes,
        "Replace the recovery codes",
        "session",
        SESSION_ONLY,
        response=RecoveryCodes,
        status=201,
    ),
    Route(
        "PUT",
        f"{API}/me/password",
        change_password,
        "Change one's own password",
        "session",
        SESSION_ONLY,
        body=PasswordChange,
        status=204,
    ),
    Route(
        "GET",
        f"{API}/tokens",
        list_tokens,
        "One's own API tokens",
        "tokens",
        SESSION_ONLY,
        response=TokenInfo,
        many=True,
    ),
    Route(
        "POST",
        f"{API}/tokens",
        create_token,
        "Create a scoped API token (shown once)",
        "tokens",
        SESSION_ONLY,
        body=NewToken,
        response=IssuedToken,
        status=201,
    ),
    Route(
        "DELETE",
        f"{API}/tokens/{{token_id}}",
        revoke_token,
        "Revoke an API token",
        "tokens",
        SESSION_ONLY,
        response=TokenInfo,
    ),
    Route(
        "GET",
        f"{API}/staff",
        list_staff,
        "Staff of the organisation",
        "staff",
        SIGNED_IN,
        response=StaffRecord,
        many=True,
    ),
    Route(
        "POST",
        f"{API}/staff",
        create_staff,
        "Add a staff member with a first password (with a DSL-team or head-teacher role: "
        "202, waits for a DSL's approval)",
        "staff",
        SESSION_ONLY,
        body=NewStaff,
        response=StaffRecord,
        status=201,
        accepted=ApprovalRecord,
    ),
    Route(
        "GET",
        f"{API}/staff/{{staff_id}}",
        get_staff,
        "One staff member",
        "staff",
        SIGNED_IN,
        response=StaffRecord,
    ),
    Route(
        "PATCH",
        f"{API}/staff/{{staff_id}}",
        update_staff,
        "Change roles, name or email (granting or removing a DSL-team or head-teacher role: "
        "202, waits for a DSL's approval; never one's own roles)",
        "staff",
        SESSION_ONLY,
        body=StaffChanges,
        response=StaffRecord,
        accepted=ApprovalRecord,
    ),
    Route(
        "POST",
        f"{API}/staff/{{staff_id}}/deactivate",
        deactivate_staff,
        "Deactivate an account (sessions end, tokens revoked)",
        "staff",
        SESSION_ONLY,
        response=StaffRecord,
    ),
    Route(
        "POST",
        f"{API}/staff/{{staff_id}}/unlock",
        unlock_staff,
        "Unlock an account locked by failed sign-ins",
        "staff",
        SESSION_ONLY,
        status=204,
    ),
    Route(
        "PUT",
        f"{API}/staff/{{staff_id}}/password",
        reset_password,
        "Set a new password for someone (for the DSL team or a head teacher: 202, waits for "
        "a DSL's approval)",
        "staff",
        SESSION_ONLY,
        body=PasswordReset,
        status=204,
        accepted=ApprovalRecord,
    ),
    Route(
        "DELETE",
        f"{API}/staff/{{staff_id}}/totp",
        reset_totp,
        "Remove someone's TOTP, they must enrol again (for the DSL team or a head teacher: "
        "202, waits for a DSL's approval)",
        "staff",
        SESSION_ONLY,
        status=204,
        accepted=ApprovalRecord,
    ),
    Route(
        "GET",
        f"{API}/staff-approvals",
        list_staff_approvals,
        "Account changes waiting for a DSL's approval (or decided: ?state=)",
        "staff",
        SIGNED_IN,
        response=ApprovalRecord,
        many=True,
        query=(
            QueryParam("state", "pending (default), approved, declined, withdrawn, expired or all"),
        ),
    ),
    Route(
        "GET",
        f"{API}/staff-approvals/{{approval_id}}",
        get_staff_approval,
        "One account change request",
        "staff",
        SIGNED_IN,
        response=ApprovalRecord,
    ),
    Route(
        "POST",
        f"{API}/staff-approvals/{{approval_id}}/approve",
        approve_staff_change,
        "Approve an account change (a DSL other than whoever asked): it applies now",
        "staff",
        SESSION_ONLY,
        response=ApprovalRecord,
    ),
    Route(
        "POST",
        f"{API}/staff-approvals/{{approval_id}}/decline",
        decline_staff_change,
        "Decline an account change (or withdraw one's own request)",
        "staff",
        SESSION_ONLY,
        response=ApprovalRecord,
    ),
    Route(
        "GET",
        f"{API}/sign-in-problems",
        sign_in_problems,
        "Accounts locked or with failed sign-ins",
        "staff",
        SIGNED_IN,
        response=AccountStatus,
        many=True,
    ),
    Route(
        "GET",
        f"{API}/categories",
        list_categories,
        "Concern categories",
        "concerns",
        SIGNED_IN,
        response=CategoryRecord,
        many=True,
    ),
    Route(
        "GET",
        f"{API}/pupils",
        list_pupils,
        "Pupils on roll",
        "pupils",
        SIGNED_IN,
        response=PupilRecord,
        many=True,
    ),
    Route(
        "POST",
        f"{API}/pupils",
        create_pupil,
        "Add a pupil by hand",
        "pupils",
        SIGNED_IN,
        body=NewPupil,
        response=PupilRecord,
        status=201,
    ),
    Route(
        "GET",
        f"{API}/pupils/{{pupil_id}}",
        get_pupil,
        "One pupil",
        "pupils",
        SIGNED_IN,
        response=PupilRecord,
    ),
    Route(
        "PATCH",
        f"{API}/pupils/{{pupil_id}}",
        update_pupil,
        "Change a pupil's details",
        "pupils",
        SIGNED_IN,
        body=PupilChanges,
        response=PupilRecord,
    ),
    Route(
        "POST",
        f"{API}/ctf-imports",
        import_ctf,
        "Import a Common Transfer File (XML)",
        "pupils",
        SIGNED_IN,
        raw_body=("application/xml", "text/xml"),
        response=CTFImportResult,
        status=201,
        query=(_FORCE_CTF,),
    ),
    Route(
        "GET",
        f"{API}/concerns",
        list_concerns,
        "Concerns one may read (no content)",
        "concerns",
        SIGNED_IN,
        response=ConcernSummary,
        many=True,
        query=(_PUPIL_FILTER,),
    ),
    Route(
        "POST",
        f"{API}/concerns",
        record_concern,
        "Record a concern",
        "concerns",
        SIGNED_IN,
        body=NewConcern,
        response=ConcernRecord,
        status=201,
    ),
    Route(
        "GET",
        f"{API}/concerns/{{concern_id}}",
        get_concern,
        "One concern with its content",
        "concerns",
        SIGNED_IN,
        response=ConcernRecord,
    ),
    Route(
        "PUT",
        f"{API}/concerns/{{concern_id}}/status",
        set_concern_status,
        "Change a concern's status",
        "concerns",
        SIGNED_IN,
        body=StatusChange,
        response=ConcernRecord,
    ),
    Route(
        "POST",
        f"{API}/concerns/{{concern_id}}/triage",
        triage_concern,
        "Record the DSL's triage decision",
        "concerns",
        SIGNED_IN,
        body=NewTriage,
        response=TriageRecord,
        status=201,
    ),
    Route(
        "POST",
        f"{API}/concerns/{{concern_id}}/actions",
        add_action,
        "Add an action",
        "concerns",
        SIGNED_IN,
        body=NewAction,
        response=ActionRecord,
        status=201,
    ),
    Route(
        "POST",
        f"{API}/actions/{{action_id}}/complete",
        complete_action,
        "Mark an action done",
        "concerns",
        SIGNED_IN,
        response=ActionRecord,
    ),
    Route(
        "POST",
        f"{API}/concerns/{{concern_id}}/contacts",
        add_contact,
        "Record an external contact",
        "concerns",
        SIGNED_IN,
        body=NewContact,
        response=ContactRecord,
        status=201,
    ),
    Route(
        "POST",
        f"{API}/pupils/{{pupil_id}}/documents",
        upload_document,
        "Upload a document (streamed; the body is the file)",
        "documents",
        SIGNED_IN,
        raw_body=("*/*",),
        response=DocumentRef,
        status=201,
        query=(
            QueryParam("filename", "the document's file name", True, 255),
            QueryParam("concern_id", "the concern it belongs to", kind="uuid"),
        ),
    ),
    Route(
        "GET",
        f"{API}/documents/{{document_id}}",
        download_document,
        "Download a document (streamed)",
        "documents",
        SIGNED_IN,
        response_media="application/octet-stream",
    ),
    Route(
        "GET",
        f"{API}/pupils/{{pupil_id}}/chronology",
        chronology,
        "A pupil's chronology, in time order, each line saying who recorded it",
        "pupils",
        SIGNED_IN,
        response=ChronologyLine,
        many=True,
    ),
    Route(
        "POST",
        f"{API}/pupils/{{pupil_id}}/subject-access-export",
        subject_access_export,
        "A subject access export for review, streamed as a tar archive (export.json and "
        "the documents); nothing is kept on the node",
        "pupils",
        SIGNED_IN,
        response_media="application/x-tar",
    ),
)
