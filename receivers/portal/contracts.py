"""What the portal needs from the rest of the node, its settings and its input checks."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import (
    Any,
    Final,
    Literal,
    Protocol,
    runtime_checkable,
)

from transfer.auth.passwords import INTERACTIVE, HashingCost
from transfer.errors import (
    InputError,
)

Clock = Callable[[], datetime]

PORTAL_DIR: Final = "portal"
#: The page path of a link; the token travels in the query (never logged: the access log
#: is off and the request log keeps the path only).
OPEN_PATH: Final = "/portal/open"
MAX_RECORD_BYTES: Final = 4 * 1024 * 1024
#: The longest a link may stay open after the acknowledgement ("a short, stated grace").
MAX_ACK_GRACE_MINUTES: Final = 60
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


class PickupMailer(Protocol):
    """What the portal needs from ``transfer.mail.Mailer`` (docs/dev/contracts.md §6)."""

    @property
    def enabled(self) -> bool: ...

    async def send(self, to: Sequence[str], subject: str, body: str) -> None: ...


class AcknowledgementSink(Protocol):
    """``transfer.referrals.Referrals``: the portal's acknowledgement moves the referral on."""

    async def record_acknowledgement(
        self,
        referral_id: str,
        *,
        name: str,
        agency_reference: str,
        at: datetime,
        via: str = "portal",
    ) -> Any: ...


class TeamAlerts(Protocol):
    """``transfer.alerts.Alerts``: how the sending school's DSL team is told."""

    async def notify(
        self,
        org_id: str,
        *,
        key: str,
        level: Literal["info"],
        subject: str,
        message: str,
        pupil_id: str | None = None,
        ref: str | None = None,
    ) -> bool: ...


@runtime_checkable
class DeliverySink(Protocol):
    """``transfer.referrals.Referrals``: the agency's first view or download is the delivery.

    ``package_id`` is the pickup's package: the sink refuses (``NotFoundError``) a
    referral that was not sealed into it, so a pickup cannot move another referral on.
    """

    async def record_delivery(
        self,
        referral_id: str,
        *,
        at: datetime | None = None,
        via: str = "node",
        package_id: str | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class PortalSettings:
    #: How long a link stays valid unless the DSL says otherwise.
    link_days: int = 7
    #: The longest a DSL may ask for.
    max_link_days: int = 30
    #: Wrong passcodes (or authenticator codes) before the link locks.
    max_attempts: int = 5
    session_idle_minutes: int = 30
    session_max_hours: int = 8
    totp_drift_steps: int = 1
    passcode_cost: HashingCost = INTERACTIVE
    #: How long a link keeps working after the agency acknowledged receipt (to finish
    #: downloading); 0 closes it at the acknowledgement.
    ack_grace_minutes: int = 15

    def __post_init__(self) -> None:
        if not 1 <= self.link_days <= self.max_link_days:
            raise InputError("portal link_days must be between 1 and max_link_days")
        if not 1 <= self.max_attempts <= 100:
            raise InputError("portal max_attempts must be between 1 and 100")
        if not 0 <= self.ack_grace_minutes <= MAX_ACK_GRACE_MINUTES:
            raise InputError(
                f"portal ack_grace_minutes must be between 0 and {MAX_ACK_GRACE_MINUTES}"
            )

    @property
    def ack_grace(self) -> timedelta:
        return timedelta(minutes=self.ack_grace_minutes)


def utc_now() -> datetime:
    return datetime.now(UTC)


def clean_text(value: str, what: str, limit: int) -> str:
    text = " ".join(value.split())
    if not text:
        raise InputError(f"{what} is required")
    if len(text) > limit:
        raise InputError(f"{what} must be at most {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"{what} must not contain control characters")
    return text


def normalise_email(value: str) -> str:
    """A registered address, checked, with its domain in lower case."""
    text = value.strip()
    if len(text) > 254 or not _EMAIL.match(text):
        raise InputError(f"{text[:60]!r} is not an e-mail address")
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"
