"""Staff accounts and sign-in: :class:`Accounts`.

Passwords (Argon2id), TOTP (required for every role in ``NEEDS_TOTP``),
one-time recovery codes, the slow-down and lock-out of failed sign-ins,
sessions with an idle and an absolute limit, and scoped API tokens. The
staff *record* is the store's (``Store.create_staff`` and friends); this
service adds what proves who someone is, and checks its own permissions
(``staff.manage`` for account administration) in the domain layer.

Every outcome is audited (``signin.ok``, ``signin.failed`` with a reason,
``totp.failed``, ``account.locked``, ``recovery_code.used``, ``session.end``,
``token.used``, ``token.created``, ``token.revoked``, ``account.*``); no
password, code, token or secret is ever put in an event or a message.

:class:`Accounts` is a thin façade over its parts, one module each:

- ``transfer.auth.throttle``: the slow-down and lock-out policy (pure);
- ``transfer.auth.attempts``: counting attempts in the database;
- ``transfer.auth.signin``: signing in;
- ``transfer.auth.sessions``: authenticating a bearer token, sessions, password change;
- ``transfer.auth.totp``: TOTP enrolment, recovery codes, the step-up;
- ``transfer.auth.tokens``: scoped API tokens;
- ``transfer.auth.staff_admin``: account administration;
- ``transfer.auth.base``: the plumbing they share; ``transfer.auth.errors``: their errors.
"""

from __future__ import annotations

from schemas.auditing import AuditSink
from transfer.alerts import Alerts
from transfer.auth.approvals import StaffApprovals
from transfer.auth.base import Clock
from transfer.auth.errors import (
    SIGN_IN_FAILED,
    AccountLocked,
    SessionInvalid,
    SignInFailed,
    SlowDown,
    TotpEnrolmentRequired,
    WrongCode,
    WrongPassword,
)
from transfer.auth.invitations import StaffInvitations
from transfer.auth.overview import AccountOverview
from transfer.auth.passwords import INTERACTIVE, HashingCost
from transfer.auth.sessions import Sessions
from transfer.auth.signin import SignIn
from transfer.auth.staff_admin import StaffAdmin
from transfer.auth.throttle import FORGET_AFTER, MAX_DELAY_SECONDS
from transfer.auth.tokens import Tokens
from transfer.auth.totp import Totp
from transfer.config import SecuritySection, SmtpSection
from transfer.mail import Mailer
from transfer.store.service import Store


class Accounts(SignIn, Sessions, Totp, Tokens, StaffAdmin):
    """Sign-in and account administration over the store's staff records."""

    def __init__(
        self,
        store: Store,
        kek: bytes,
        audit: AuditSink,
        security: SecuritySection,
        *,
        clock: Clock | None = None,
        hashing: HashingCost = INTERACTIVE,
        issuer: str = "Handover",
        alerts: Alerts | None = None,
    ) -> None:
        super().__init__(store, kek, audit, security, clock=clock, hashing=hashing, issuer=issuer)
        if alerts is None:  # alerts in the app only (no e-mail)
            alerts = Alerts(store, Mailer(SmtpSection()))
        self.approvals = StaffApprovals(self, alerts)
        self.invitations = StaffInvitations(self)
        self.overview = AccountOverview(store.sessions, audit)


__all__ = [
    "FORGET_AFTER",
    "MAX_DELAY_SECONDS",
    "SIGN_IN_FAILED",
    "AccountLocked",
    "Accounts",
    "Clock",
    "SessionInvalid",
    "SignInFailed",
    "SlowDown",
    "TotpEnrolmentRequired",
    "WrongCode",
    "WrongPassword",
]
