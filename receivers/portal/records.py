"""What the pickup portal gives the DSL's side (API answers) and the page (views)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

PickupState = Literal["waiting", "opened", "acknowledged", "expired", "revoked", "locked"]
EventKind = Literal[
    "created",
    "emailed",
    "opened",
    "download",
    "printed",
    "acknowledged",
    "passcode_failed",
    "locked",
    "revoked",
    "totp_enrolled",
    "totp_replaced",
    "totp_replace_failed",
    "totp_reset",
    "expired",
    "closed",
]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class PickupEvent(_Out):
    """One line of a pickup's receipt trail."""

    kind: str
    at: datetime
    ip: str | None = None
    who: str | None = None
    what: str | None = None


class PickupInfo(_Out):
    """A pickup as the sending DSL sees it (never the token, passcode or package)."""

    id: str
    org_id: str
    referral_id: str
    email: str
    agency_name: str | None
    package_id: str
    package_kind: str
    state: PickupState
    emailed: bool
    created_by: str
    created_at: datetime
    expires_at: datetime
    failed_attempts: int
    locked_at: datetime | None
    revoked_at: datetime | None
    first_opened_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    agency_reference: str | None
    events: tuple[PickupEvent, ...] = ()


class IssuedPickup(_Out):
    """What the DSL is shown once when a pickup is made."""

    pickup: PickupInfo
    #: To read out to the agency by telephone; never e-mailed, shown only now.
    passcode: str
    #: The one-time link, when it was not e-mailed (pass it on by another route).
    link: str | None
    emailed: bool
    #: Why the e-mail could not be sent, when SMTP is configured but failed.
    mail_problem: str | None = None


@dataclass(frozen=True)
class LinkInfo:
    """What the sign-in page may say about a valid link."""

    pickup_id: str
    sender_name: str
    agency_name: str | None
    expires_at: datetime
    totp_available: bool


@dataclass(frozen=True)
class DocumentView:
    index: int
    path: str
    filename: str
    size: int
    sha256: str
    media_type: str


@dataclass(frozen=True)
class RecordView:
    path: str
    title: str
    value: Any
    #: Set when the record could not be shown (too large, not JSON).
    problem: str | None = None


@dataclass(frozen=True)
class ReferralView:
    """A verified referral package, as the agency user sees it."""

    pickup_id: str
    package_id: str
    kind: str
    sender_org_id: str
    sender_name: str
    subject: str
    created_at: datetime
    form: RecordView | None
    records: tuple[RecordView, ...]
    documents: tuple[DocumentView, ...]
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    agency_reference: str | None
    expires_at: datetime
    totp_enrolled: bool
    email: str
    #: When the link closes because receipt was acknowledged (``None``: not yet).
    closes_at: datetime | None = None
    #: The agency's name as the school gave it (``None``: not given).
    agency_name: str | None = None


@dataclass(frozen=True)
class TotpSetup:
    """The authenticator set-up page: a new secret, and the same sealed for the form."""

    secret: str
    uri: str
    svg: str
    #: The secret sealed to this session and address (the form's hidden field).
    sealed: str
    #: An app is already set up for the address: a code from it is needed to replace it.
    replacing: bool


@dataclass
class PortalVisit:
    """A signed-in agency user's session, checked for this request."""

    session_id: str
    pickup_id: str
    org_id: str
    email: str
    referral_id: str
    opened: bool
    identity: bytes = field(repr=False)
