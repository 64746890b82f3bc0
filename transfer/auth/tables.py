"""Tables of staff accounts and sign-in (the ``auth`` Alembic branch).

The staff *record* (username, roles, active) is the store's ``staff`` table;
these tables hold what proves who someone is: the password hash, the sealed
TOTP secret, recovery-code hashes, sessions and API tokens. Secrets are never
stored in the clear: passwords as Argon2id hashes, TOTP secrets sealed under
the KEK, recovery codes and tokens as SHA-256 hashes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from transfer.store.db import Base
from transfer.store.tables import UTCDateTime


class Credential(Base):
    """One staff member's password, TOTP state and failed-sign-in counter."""

    __tablename__ = "auth_credentials"

    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: TOTP secret sealed under the KEK (AAD ``handover:totp:v1:<staff id>``), once confirmed.
    totp_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: A secret being enrolled, until its first valid code confirms it.
    totp_pending_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: The last TOTP time step accepted: a code at or before it is refused.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class UnknownSignIn(Base):
    """The failed-sign-in counter of a name that is not an account that may sign in.

    An unknown username (or one deactivated, or without a password) is slowed
    down and locked exactly like a real account, so the answers do not say
    which usernames exist; keeping the counter here (not in one process's
    memory) makes that hold across several ``serve`` processes. The key is a
    keyed hash of the organisation and the name typed (``codes.unknown_signin_key``),
    never the text. Rows idle for longer than a day are deleted.
    """

    __tablename__ = "auth_unknown_signins"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StaffApproval(Base):
    """An account change held back by the two-person rule until a DSL approves it.

    ``kind`` is ``create_account``, ``change_roles``, ``reset_password`` or
    ``reset_totp``; ``state`` is ``pending``, then ``approved``, ``declined``,
    ``withdrawn`` (by the requester) or ``expired``. The change is applied in the
    same transaction as the approval. ``pending_key`` (organisation, kind, target)
    is set only while pending and is unique, so one change of a kind waits per
    person at a time; a new password waits as its Argon2id hash, which is
    cleared once the request is decided.
    """

    __tablename__ = "auth_approvals"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    pending_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    #: Whom it is about (None for an account not created yet).
    staff_id: Mapped[str | None] = mapped_column(ForeignKey("staff.id"), index=True)
    #: For a new account: its username, name and e-mail.
    username: Mapped[str | None] = mapped_column(String(100))
    display_name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    #: The roles asked for, and (for a change) the roles when it was asked.
    roles: Mapped[list[str] | None] = mapped_column(JSON)
    roles_before: Mapped[list[str] | None] = mapped_column(JSON)
    password_hash: Mapped[str | None] = mapped_column(String(256))
    #: Who asked: a staff id (None: the operator on the node's command line), and as what.
    requested_by: Mapped[str | None] = mapped_column(String(36))
    requested_as: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(36))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RecoveryCode(Base):
    __tablename__ = "auth_recovery_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SessionRow(Base):
    """A signed-in session; only the SHA-256 of its token is kept."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"), index=True)
    org_id: Mapped[str] = mapped_column(String(64))
    #: ``full``, or ``enrolment`` (password checked, TOTP still to be set up).
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_reason: Mapped[str | None] = mapped_column(String(32))


class ApiTokenRow(Base):
    """A scoped, revocable token for automation; only the SHA-256 of the token is kept."""

    __tablename__ = "auth_api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"), index=True)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Invitation(Base):
    """A one-time link that lets a new staff member set their own password.

    The administrator never types a password: the account is made without one and
    the person follows the link, chooses a password and sets up their authenticator
    app. Only the SHA-256 of the link's token is kept (``codes.token_hash``); the
    link works once (``used_at`` is set by a compare-and-set in the same transaction
    that sets the password) and until ``expires_at``. A new link for the same person
    withdraws the older ones (``withdrawn_at``).
    """

    __tablename__ = "auth_invitations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[str] = mapped_column(ForeignKey("staff.id"), index=True)
    org_id: Mapped[str] = mapped_column(String(64))
    #: Who made the link (a staff id).
    created_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
