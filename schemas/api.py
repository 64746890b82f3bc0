"""The staff API's request and response bodies (``docs/api.md``), those that are not the
store's own records (``schemas.records``: ``NewPupil``, ``PupilRecord``... are used as they
are) nor a service's. Every request model refuses unknown fields. Secrets (passwords,
codes) are plain strings here and go no further than the accounts service.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.receipt import MAX_REFERENCE
from schemas.records import ConcernStatus
from schemas.referrals import NewRedaction, ReferralForm, ReferralOutcome, SelectedItem
from schemas.roles import Permission, Role
from schemas.text import Line, Prose

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "AcceptBody",
    "AcknowledgementBody",
    "FormBody",
    "HandoverBody",
    "NewReferral",
    "NewStaff",
    "NewToken",
    "NoBody",
    "OutcomeBody",
    "PasswordChange",
    "PasswordReset",
    "RejectBody",
    "SelectionBody",
    "SendLeaverFile",
    "SendReferral",
    "SessionInfo",
    "SignIn",
    "StaffChanges",
    "StatusChange",
    "TotpConfirm",
    "WithdrawBody",
]

#: The password policy's lengths (``transfer.auth.passwords`` checks the rest of it).
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 256

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
        json_schema_extra={"minLength": MIN_PASSWORD_LENGTH, "maxLength": MAX_PASSWORD_LENGTH},
        description=f"{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters, "
        "not a common password, not containing the username",
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


# ------------------------------------------------------------------ the inbox


class AcceptBody(BaseModel):
    """A leaver's file: accept into the pupil matched by UPN and date of birth (default), into
    a pupil the DSL chooses (``pupil_id``), or as a new pupil (``create_new``). A referral:
    accept with the agency's own ``reference`` number (required), sent back in the receipt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pupil_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    create_new: bool = False
    reference: Annotated[Line, Field(min_length=1, max_length=MAX_REFERENCE)] | None = None


class RejectBody(BaseModel):
    """Why the package is refused (sent to the sender in the signed receipt)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: Annotated[Prose, Field(min_length=1, max_length=500)]


# ------------------------------------------------------------------ the outbox


class SendLeaverFile(BaseModel):
    """Which pupil's file to send (UPN or id), and to which school (its id in the directory).

    ``reason`` is needed (422 ``reason-required`` otherwise, saying why) when the file
    already reached that school, or when it is not the pupil's recorded destination.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pupil_id: Annotated[
        str, Field(min_length=1, max_length=64, description="the pupil's UPN, or its id")
    ]
    to_org_id: Annotated[str, Field(min_length=1, max_length=64)]
    reason: Annotated[str | None, Field(min_length=1, max_length=500)] = None


# ------------------------------------------------------------------ transfer requests


class NoBody(BaseModel):
    """An empty JSON object."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# ------------------------------------------------------------------ referrals

_ShortLine = Annotated[Line, Field(min_length=1, max_length=200)]


class NewReferral(_Body):
    """A draft: the child (UPN or pupil id), the agency (directory id), the form, and
    optionally what goes. Checked whole: a refusal makes no draft."""

    pupil_id: Annotated[
        str, Field(min_length=1, max_length=64, description="the pupil's UPN, or its id")
    ]
    agency_org_id: Annotated[str, Field(min_length=1, max_length=64)]
    form: ReferralForm
    selection: Annotated[tuple[SelectedItem, ...], Field(max_length=1000)] = ()
    redactions: Annotated[tuple[NewRedaction, ...], Field(max_length=200)] = ()


class FormBody(_Body):
    form: ReferralForm


class SelectionBody(_Body):
    items: Annotated[tuple[SelectedItem, ...], Field(max_length=1000)]


class HandoverBody(_Body):
    to_whom: _ShortLine
    how: _ShortLine
    at: AwareDatetime | None = None


class AcknowledgementBody(_Body):
    name: _ShortLine
    agency_reference: Annotated[Line, Field(min_length=1, max_length=100)]


class OutcomeBody(_Body):
    outcome: ReferralOutcome


class SendReferral(_Body):
    """Seal the draft and send it by one route, with that route's options only."""

    route: Literal["node", "portal", "offline"]
    #: portal: how many days the link works (default 7).
    expires_in_days: Annotated[int | None, Field(ge=1, le=30)] = None
    #: offline: encrypt to a new passphrase (returned once) instead of the agency's key.
    passphrase: bool = False
    #: offline: write one .zip file instead of a folder.
    zip: bool = False
    #: The DSL confirms sending the form alone: no chronology entry is chosen.
    form_only: bool = False

    @model_validator(mode="after")
    def _options_fit_the_route(self) -> SendReferral:
        if self.route != "portal" and self.expires_in_days is not None:
            raise ValueError("expires_in_days is for the portal route only")
        if self.route != "offline" and (self.passphrase or self.zip):
            raise ValueError("passphrase and zip are for the offline route only")
        return self


class WithdrawBody(_Body):
    """Why a sealed referral is taken back (written in the child's chronology only)."""

    reason: Annotated[Prose, Field(min_length=1, max_length=500)]
