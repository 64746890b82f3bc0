"""Request and response bodies of the HTTP API that are not store records.

The store's own inputs and records (``schemas.records``: ``NewPupil``,
``PupilRecord``…) are used as they are. Every request model refuses unknown
fields. Secrets (passwords, codes) are plain strings here and go no further
than the accounts service.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.records import ConcernStatus
from schemas.text import Line
from transfer.auth.passwords import MAX_LENGTH, MIN_LENGTH
from transfer.store.permissions import Permission, Role

_Name = Annotated[Line, Field(min_length=1, max_length=100)]
_Secret = Annotated[str, Field(min_length=1, max_length=1024)]
_Code = Annotated[str, Field(min_length=1, max_length=64)]
#: A new password: the length the policy asks for is said in the schema (the service checks
#: it, and the rest of the policy, and names every problem).
_NewSecret = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        json_schema_extra={"minLength": MIN_LENGTH, "maxLength": MAX_LENGTH},
        description=f"{MIN_LENGTH} to {MAX_LENGTH} characters, not a common password, "
        "not containing the username",
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SignIn(_Body):
    """Sign in: organisation id (a school's URN), username, password, and, once TOTP is set
    up, either the current code (``totp``) or one unused recovery code."""

    org: Annotated[str, Field(min_length=1, max_length=64)]
    username: _Name
    password: _Secret
    totp: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    recovery_code: _Code | None = None


class SessionInfo(_Body):
    """Who the bearer token acts as."""

    staff_id: str
    org_id: str
    display_name: str
    roles: tuple[str, ...]
    kind: str
    permissions: tuple[str, ...]


class TotpConfirm(_Body):
    code: Annotated[str, Field(min_length=1, max_length=16)]


class PasswordChange(_Body):
    current_password: _Secret
    new_password: _NewSecret


class PasswordReset(_Body):
    password: _NewSecret


class NewToken(_Body):
    name: _Name
    scopes: Annotated[tuple[Permission, ...], Field(min_length=1, max_length=len(Permission))]
    expires_in_days: Annotated[int, Field(ge=1, le=366)] | None = None


class NewStaff(_Body):
    username: _Name
    display_name: Annotated[Line, Field(min_length=1, max_length=200)]
    roles: Annotated[tuple[Role, ...], Field(min_length=1, max_length=len(Role))]
    password: _NewSecret
    email: Annotated[Line, Field(max_length=320)] | None = None


class StaffChanges(_Body):
    """Only the fields given change; a change of roles ends the person's sessions."""

    roles: Annotated[tuple[Role, ...], Field(min_length=1, max_length=len(Role))] | None = None
    display_name: Annotated[Line, Field(min_length=1, max_length=200)] | None = None
    email: Annotated[Line, Field(max_length=320)] | None = None


class StatusChange(_Body):
    status: ConcernStatus
