"""What the accounts service returns, and who a request acts as."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from transfer.store.permissions import Actor, Permission


@dataclass(frozen=True)
class ScopedActor(Actor):
    """An :class:`Actor` acting through an API token: it holds a permission only if
    both the person's roles and the token's scopes grant it."""

    scopes: frozenset[Permission] = frozenset()

    def has(self, permission: Permission) -> bool:
        return permission in self.scopes and super().has(permission)


PrincipalKind = Literal["session", "enrolment", "token"]


@dataclass(frozen=True)
class Principal:
    """An authenticated request: the actor and what authenticated it.

    ``kind`` is ``session`` (password and, where required, TOTP),
    ``enrolment`` (password checked; may only set up TOTP) or ``token``.
    """

    actor: Actor
    kind: PrincipalKind
    credential_id: str


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SignInResult(_Out):
    """The outcome of a correct sign-in.

    ``state`` is ``signed_in`` (a full session) or ``must_enrol_totp``: the
    role needs two-factor authentication, which is not set up yet; the token
    may only be used to enrol (``/api/v1/me/totp``).
    """

    state: Literal["signed_in", "must_enrol_totp"]
    token: str
    session_id: str
    staff_id: str
    org_id: str
    display_name: str
    roles: tuple[str, ...]
    expires_at: AwareDatetime
    idle_minutes: int


class TotpEnrolment(_Out):
    """A TOTP secret being enrolled: scan ``uri`` (or ``qr``), then confirm with a code."""

    uri: str
    secret: str
    qr: str


class RecoveryCodes(_Out):
    """One-time recovery codes, shown once: each works once instead of a TOTP code."""

    codes: tuple[str, ...]


class IssuedToken(_Out):
    """A new API token. ``token`` is shown only here, once."""

    id: str
    name: str
    token: str
    scopes: tuple[str, ...]
    created_at: AwareDatetime
    expires_at: AwareDatetime | None


class TokenInfo(_Out):
    id: str
    staff_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: AwareDatetime
    expires_at: AwareDatetime | None
    last_used_at: AwareDatetime | None
    revoked_at: AwareDatetime | None


ApprovalKind = Literal["create_account", "change_roles", "reset_password", "reset_totp"]
ApprovalState = Literal["pending", "approved", "declined", "withdrawn", "expired"]


class ApprovalRecord(_Out):
    """An account change held back by the two-person rule until a DSL approves it.

    ``summary`` says it in plain words, naming people by name and role. The
    ids stay for programs. ``requested_as`` is ``staff`` (signed in) or
    ``operator`` (the node's operator on the command line).
    """

    id: str
    org_id: str
    kind: ApprovalKind
    state: ApprovalState
    summary: str
    staff_id: str | None
    staff_name: str
    username: str | None
    roles: tuple[str, ...] | None
    roles_before: tuple[str, ...] | None
    requested_by: str | None
    requested_by_name: str
    requested_as: Literal["staff", "operator"]
    requested_at: AwareDatetime
    expires_at: AwareDatetime
    decided_by: str | None
    decided_by_name: str | None
    decided_at: AwareDatetime | None


class AccountStatus(_Out):
    """Sign-in trouble on one account, for administrators."""

    staff_id: str
    username: str
    display_name: str
    failed_count: int
    last_failed_at: AwareDatetime | None
    locked_until: AwareDatetime | None
    locked: bool
    totp_enrolled: bool
