"""What transfer requests are given (the other services, as protocols), answer (the
records, the API bodies) and share (the constants and small helpers)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any, Final, Literal, Protocol, TypeVar, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.engine import CursorResult

from schemas.manifest import PackageKind
from schemas.peer import MAX_NOTE, MAX_REASON
from schemas.text import Prose, where
from transfer.errors import (
    InputError,
)
from transfer.store.permissions import Actor

Side = Literal["sent", "received"]
RequestState = Literal[
    "pending", "sent", "received", "authorising", "authorised", "declined", "failed"
]
PEER_PATH: Final = "/peer/v1/transfer-requests"
#: How long an "authorising" claim holds before another DSL may take the request over.
AUTHORISING_GRACE: Final = timedelta(minutes=10)
M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------- what others give us


class DirectoryLookup(Protocol):
    """``transfer.directory.service.Directory``, as far as requests need it."""

    async def entry(self, org_id: str) -> Any: ...


class LeaverFileQueue(Protocol):
    """``transfer.exchange.outbox.Outbox``, as far as requests need it."""

    async def queue_leaver_file(
        self,
        actor: Actor,
        pupil_id: str,
        to_org_id: str,
        *,
        via: str | None = None,
        reason: str | None = None,
    ) -> Any: ...

    async def latest_for_pupil(
        self, org_id: str, pupil_id: str, kind: PackageKind = "leaver_file"
    ) -> Any: ...


class PeerJsonClient(Protocol):
    """``transfer.transport.base.PeerTransport``, as far as requests need it."""

    async def request_json(
        self,
        from_org: str,
        to_org: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...


# -------------------------------------------------------------------- models


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class NewTransferRequest(_Body):
    """What a DSL gives to ask another school for a pupil's file (API body)."""

    upn: str = Field(min_length=1, max_length=20)
    from_org_id: str = Field(min_length=1, max_length=64)
    note: Prose | None = Field(default=None, max_length=MAX_NOTE)


class AuthoriseRequest(_Body):
    """Authorise a received request; ``pupil_id`` when the UPN matched none of ours."""

    pupil_id: str | None = Field(default=None, max_length=36)


class DeclineRequest(_Body):
    reason: Prose = Field(min_length=1, max_length=MAX_REASON)


class TransferRequestRecord(BaseModel):
    """A transfer request as one side's DSL team sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    org_id: str
    side: Side
    requester_org_id: str
    holder_org_id: str
    upn: str
    dob: date | None
    surname: str
    forename: str
    note: str | None
    #: Our pupil (requester: the new pupil; holder: the one whose UPN matched, if any).
    pupil_id: str | None
    #: Holder side: whether the UPN matched one of our pupils (None on the sent side).
    matched: bool | None = None
    #: Holder side: whether our pupil's date of birth is the one the requester gave.
    dob_matches: bool | None = None
    state: RequestState
    reason: str | None
    package_id: str | None
    created_by: str | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    decided_at: AwareDatetime | None
    decided_by: str | None
    #: What this node still has to send the other one ("request", "decision"), if anything.
    outbound: str | None
    attempts: int
    next_attempt_at: AwareDatetime | None
    last_error: str | None


def _parse(model: type[M], body: Mapping[str, Any], what: str) -> M:
    try:
        return model.model_validate(dict(body))
    except ValidationError as err:
        first = err.errors()[0]
        at = where(first["loc"], "body")
        raise InputError(f"the {what} is not valid: {at} {first['msg']}") from None


def _rowcount(result: object) -> int:
    return cast("CursorResult[Any]", result).rowcount


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean_text(value: str | None, what: str, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > limit or "\x00" in value:
        raise InputError(f"the {what} must be at most {limit} characters")
    return value


def alert_key(request_id: str) -> str:
    return f"transfer-request:{request_id}"
