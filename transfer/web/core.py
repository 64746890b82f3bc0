"""The web app's machinery: its services, routes that declare their operation, the
session cookie, CSRF, kept forms and the page context. Binding the routes to aiohttp
and mounting them is :mod:`transfer.web.binding`; the error pages :mod:`transfer.web.errorpages`.

Every route is a :class:`WebRoute`: its method and path, the domain operation it
performs (the service method it calls, for the permission matrix and the docs),
who may reach it (``public``; ``enrolment``: signed in with a password, setting up
an authenticator; ``session``: fully signed in) and, for a form, how to show the
form again with what was typed (:attr:`WebRoute.form`). The services decide what
the person may do; a refusal becomes the 403 page.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import BodyPartReader, web
from multidict import MultiDict

from schemas.auditing import AuditSink
from transfer.audit.request_ids import current_request_id
from transfer.auth.records import Principal
from transfer.auth.service import Accounts
from transfer.config import Config
from transfer.errors import (
    InputError,
    NotFoundError,
    PolicyError,
    TooLargeError,
)
from transfer.store.permissions import Permission, Role
from transfer.store.service import Store
from transfer.web.rendering import environment, page_response, render
from transfer.web.static import StaticFiles
from transfer.web.tokens import KeptForm, WebKeys

if TYPE_CHECKING:
    from schemas.directory import DirectoryEntry
    from transfer.alerts import Alerts
    from transfer.audit.trail import AuditTrail
    from transfer.directory.administration import KeyAdministration
    from transfer.exchange.inbox import Inbox
    from transfer.exchange.outbox import Outbox
    from transfer.exchange.requests import TransferRequests

log = logging.getLogger("transfer.web")

SESSION_COOKIE: Final = "handover_session"
PRE_COOKIE: Final = "handover_pre"
CSRF_FIELD: Final = "csrf"
OWNER_FIELD: Final = "form_owner"
KEPT_FIELD: Final = "kept_form"
#: How long a form kept over an expired session may wait for its person to sign in again.
KEEP_MINUTES: Final = 60
MAX_FORM_BYTES: Final = 256 * 1024
#: Paths that belong to other faces of the node (never answered with a page).
NOT_PAGES: Final = ("/api/", "/peer/", "/portal/", "/portal")
#: Field names that are never kept over an expiry nor shown again (passwords, codes).
SECRET_FIELDS: Final = frozenset(
    {"password", "current_password", "new_password", "confirm_password", "code"}
)

ROLE_NAMES: Final = {
    Role.DSL: "Designated safeguarding lead",
    Role.DEPUTY_DSL: "Deputy designated safeguarding lead",
    Role.HEAD_TEACHER: "Head teacher",
    Role.STAFF: "Staff",
    Role.ADMINISTRATOR: "Administrator",
    Role.AUDITOR: "Data protection officer",
}

#: Who has an Administration area (``transfer.web.admin_staff``): what each part needs.
ADMIN_PERMISSIONS: Final = (
    Permission.MANAGE_STAFF,
    Permission.APPROVE_STAFF_CHANGES,
    Permission.MANAGE_KEYS,
    Permission.RUN_RETENTION,
)


@dataclass
class WebServices:
    """What the pages call: the same domain services the API calls."""

    store: Store
    accounts: Accounts
    config: Config
    audit: AuditSink
    #: The node's web key (:attr:`transfer.node.Node.web_key`).
    web_key: bytes
    alerts: Alerts | None = None
    inbox: Inbox | None = None
    #: The audit trail for those who may read it (the Audit area); None: no Audit area.
    trail: AuditTrail | None = None
    #: The organisation's keys and the node's directory, behind ``keys.manage``.
    key_admin: KeyAdministration | None = None
    #: Asking another school for a pupil's file, and answering such requests.
    transfer_requests: TransferRequests | None = None
    #: The signed directory (schools chosen by name).
    directory: WebDirectory | None = None
    #: Sending leavers' files (the outbox).
    outbox: Outbox | None = None


class WebDirectory(Protocol):
    """What the pages read of the node's directory (``transfer.directory.service.Directory``)."""

    async def entries(self) -> list[DirectoryEntry]: ...

    async def entry(self, org_id: str) -> DirectoryEntry: ...


Access = Literal["public", "enrolment", "session"]
PageHandler = Callable[[web.Request, "Visit"], Awaitable[web.StreamResponse]]
PublicHandler = Callable[[web.Request, "Visit | None"], Awaitable[web.StreamResponse]]
FormPage = Callable[[web.Request, "Visit", KeptForm], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class WebRoute:
    method: str
    path: str
    handler: Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
    #: The domain operation performed, as ``Service.method`` (several: comma-separated).
    operation: str
    access: Access = "session"
    #: For a form (a POST): shows the form again with what was typed (after an expiry).
    form: FormPage | None = None
    name: str = ""
    #: A form with a file (``multipart/form-data``): its fields are read up to the file,
    #: which the handler streams (:data:`UPLOAD_KEY`); never held whole, never on disk.
    upload: bool = False


@dataclass(frozen=True)
class Visit:
    """A signed-in person's request: who, their session, and what every form carries."""

    principal: Principal
    token: str
    csrf: str
    owner_mark: str
    org_name: str
    #: When the session ends if nothing else happens (idle limit, from now).
    idle_until: datetime
    idle_minutes: int
    #: Open alerts for this person (the header's bell); None: no bell for them.
    alert_count: int | None = None

    @property
    def actor(self) -> Any:
        return self.principal.actor

    @property
    def roles(self) -> frozenset[Role]:
        return frozenset(self.principal.actor.roles)

    @property
    def role_names(self) -> list[str]:
        return [ROLE_NAMES[r] for r in Role if r in self.roles]

    @property
    def in_dsl_team(self) -> bool:
        return bool(self.roles & {Role.DSL, Role.DEPUTY_DSL})


class CsrfRefused(PolicyError):
    """A form came without our token, or with one for another session."""

    http_status = 403
    slug = "csrf"
    title = "This form could not be accepted"


@dataclass
class FormErrors:
    """Messages by field, in the order of the form (for the error summary)."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, message: str) -> None:
        if name not in self.by_field:
            self.items.append((name, message))

    @property
    def by_field(self) -> dict[str, str]:
        return dict(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


WEB_APP_KEY: Final = web.AppKey("handover_web", object)
#: The POSTed form, read once (for the CSRF check) and kept on the request for the page.
FORM_KEY: Any = web.RequestKey("handover_form", MultiDict) if hasattr(web, "RequestKey") else "form"


class WebApp:
    """The pages of one node: routes, templates, static files, keys."""

    def __init__(self, services: WebServices, routes: Sequence[WebRoute]) -> None:
        self.services = services
        self.keys = WebKeys.from_web_key(services.web_key)
        self.env: jinja2.Environment = environment()
        self.static = StaticFiles()
        self.env.globals["static"] = self.static.url
        self.routes = list(routes)
        self.forms = {r.path: r for r in routes if r.method == "POST" and r.form is not None}
        self._org_names: dict[str, str] = {}

    # ------------------------------------------------------------ services

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def accounts(self) -> Accounts:
        return self.services.accounts

    @property
    def idle_minutes(self) -> int:
        return self.services.config.security.session_idle_minutes

    def secure(self, request: web.Request) -> bool:
        return request.secure or self.services.config.server.behind_proxy

    async def org_name(self, org_id: str) -> str:
        if org_id not in self._org_names:
            try:
                self._org_names[org_id] = (await self.store.get_organisation(org_id)).name
            except NotFoundError:
                return "your organisation"
        return self._org_names[org_id]

    async def organisations(self) -> list[tuple[str, str]]:
        """The schools and agencies hosted here, (id, name), for the sign-in page."""
        orgs = await self.store.list_organisations()
        return [(o.id, o.name) for o in sorted(orgs, key=lambda o: o.name)]

    # ------------------------------------------------------------- cookies

    def cookie_name(self, request: web.Request, base: str) -> str:
        return f"__Host-{base}" if self.secure(request) else base

    def set_cookie(
        self, response: web.StreamResponse, request: web.Request, base: str, value: str
    ) -> None:
        response.set_cookie(
            self.cookie_name(request, base),
            value,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.secure(request),
        )

    def clear_cookie(self, response: web.StreamResponse, request: web.Request, base: str) -> None:
        response.del_cookie(
            self.cookie_name(request, base),
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="Strict",
        )

    def session_token(self, request: web.Request) -> str:
        value = request.cookies.get(self.cookie_name(request, SESSION_COOKIE), "")
        return value if 10 <= len(value) <= 200 else ""

    def pre_binding(self, request: web.Request) -> tuple[str, bool]:
        """The pre-sign-in cookie's value (a new one when absent): binds the sign-in form."""
        value = request.cookies.get(self.cookie_name(request, PRE_COOKIE), "")
        if 20 <= len(value) <= 100:
            return value, False
        return secrets.token_urlsafe(24), True

    # ------------------------------------------------------------- visits

    async def visit(self, request: web.Request, token: str, principal: Principal) -> Visit:
        now = self.accounts.now()
        alert_count = None
        if self.services.alerts is not None and principal.kind == "session":
            count = await self.services.alerts.count_open(principal.actor)
            if count or principal.actor.has(Permission.HANDLE_ALERTS):
                alert_count = count
        return Visit(
            principal=principal,
            token=token,
            csrf=self.keys.csrf_token(token),
            owner_mark=self.keys.owner_mark(token, principal.actor.staff_id),
            org_name=await self.org_name(principal.actor.org_id),
            idle_until=now + timedelta(minutes=self.idle_minutes),
            idle_minutes=self.idle_minutes,
            alert_count=alert_count,
        )

    # ------------------------------------------------------------- pages

    def page(
        self,
        request: web.Request,
        template: str,
        visit: Visit | None,
        *,
        title: str,
        status: int = 200,
        errors: FormErrors | None = None,
        **context: Any,
    ) -> web.Response:
        """Render ``template`` in the shell; the title starts with "Error: " when there
        are errors (GOV.UK's pattern, so a screen reader hears it first)."""
        errors = errors or FormErrors()
        full_title = f"{'Error: ' if errors else ''}{title}"
        html = render(
            self.env,
            template,
            {
                "title": full_title,
                "heading": title,
                "visit": visit,
                "errors": errors,
                "error_list": [{"text": msg, "href": f"#{name}"} for name, msg in errors.items],
                "field_errors": errors.by_field,
                "csrf_field": CSRF_FIELD,
                "owner_field": OWNER_FIELD,
                "nav": self.navigation(request, visit),
                "request_id": current_request_id() or "",
                **context,
            },
        )
        return page_response(request, html, status=status)

    def navigation(self, request: web.Request, visit: Visit | None) -> list[dict[str, Any]]:
        if visit is None or visit.principal.kind != "session":
            return []
        items = [("/", "Home")]
        if visit.actor.has(Permission.RECORD_CONCERN):
            items.append(("/concerns/new", "Log a concern"))
        if visit.actor.has(Permission.READ_PUPILS):
            items.append(("/search", "Search"))
        if visit.actor.has(Permission.RECEIVE_TRANSFER):
            items.append(("/inbox", "Inbox"))
        if visit.actor.has(Permission.SEND_TRANSFER):
            items.append(("/outbox", "Outbox"))
        if visit.actor.has(Permission.SEND_REFERRAL):
            items.append(("/referrals", "Referrals"))
        if visit.actor.has(Permission.READ_REPORTS):
            items.append(("/reports", "Reports"))
        if visit.actor.has(Permission.READ_AUDIT) and self.services.trail is not None:
            items.append(("/audit", "Audit"))
        if any(visit.actor.has(p) for p in ADMIN_PERMISSIONS):
            items.append(("/admin", "Administration"))
        items.append(("/account", "Your account"))
        path = request.path
        return [
            {
                "href": href,
                "text": text,
                "active": path == href or (href != "/" and path.startswith(href)),
            }
            for href, text in items
        ]


def webapp(request: web.Request) -> WebApp:
    app = request.config_dict[WEB_APP_KEY]
    assert isinstance(app, WebApp)
    return app


async def form_data(request: web.Request) -> MultiDict[str]:
    """The urlencoded form of a POST (at most :data:`MAX_FORM_BYTES`)."""
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise TooLargeError("this form is too large")
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return MultiDict()
    data = await request.post()
    return MultiDict((k, v) for k, v in data.items() if isinstance(v, str))


#: The file part of an upload form, left unread for the handler to stream.
UPLOAD_KEY: Any = (
    web.RequestKey("handover_upload", object) if hasattr(web, "RequestKey") else "upload"
)


async def upload_fields(request: web.Request) -> MultiDict[str]:
    """The fields of a ``multipart/form-data`` POST that come before its first file (the
    CSRF token among them: a page's hidden fields come first); the file part itself is
    left in ``request[UPLOAD_KEY]`` for the handler to stream."""
    fields: MultiDict[str] = MultiDict()
    request[UPLOAD_KEY] = None
    if request.content_type != "multipart/form-data":
        return await form_data(request)  # no file sent: the form's other fields, if any
    reader = await request.multipart()
    total = 0
    while True:
        part = await reader.next()
        if part is None:
            return fields
        if not isinstance(part, BodyPartReader):
            raise InputError("a form cannot hold nested parts")
        if part.filename is not None:
            request[UPLOAD_KEY] = part
            return fields
        value = bytearray()
        while chunk := await part.read_chunk(8192):
            value += chunk
            total += len(chunk)
            if total > MAX_FORM_BYTES:
                raise TooLargeError("this form is too large")
        fields.add(part.name or "", value.decode("utf-8", errors="replace"))


def safe_next(value: str, app: WebApp) -> str:
    """A local page to go to after signing in (a known GET page), or the home page."""
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return "/"
    for route in app.routes:
        if (
            route.method == "GET"
            and route.access == "session"
            and path_matches(route.path, parts.path)
        ):
            return parts.path
    return "/"


def path_matches(pattern: str, path: str) -> bool:
    a, b = pattern.strip("/").split("/"), path.strip("/").split("/")
    return len(a) == len(b) and all(x == y or x.startswith("{") for x, y in zip(a, b, strict=True))


def sign_in_url(*, next_path: str = "/", expired: bool = False) -> str:
    query = []
    if expired:
        query.append("expired=1")
    if next_path and next_path != "/":
        query.append(f"next={quote(next_path, safe='/')}")
    return "/sign-in" + ("?" + "&".join(query) if query else "")
