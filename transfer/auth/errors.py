"""The errors of sign-in and account self-service (each an RFC 9457 problem type).

No password, code, token or secret is ever put in a message.
"""

from __future__ import annotations

from typing import Final

from transfer.errors import AuthenticationError, InputError, PolicyError
from transfer.wording import plural

#: The one message for every failed sign-in (unknown user, wrong password, wrong code).
SIGN_IN_FAILED: Final = (
    "the organisation, username, password or code is not right; "
    "after repeated failures sign-in slows down and the account is locked for a while"
)


class SignInFailed(AuthenticationError):
    """The sign-in was refused; the message never says which part was wrong."""

    slug = "sign-in-failed"
    title = "Sign-in failed"


class AccountLocked(AuthenticationError):
    """Too many failed sign-ins: locked until a time, or until an administrator unlocks it."""

    slug = "account-locked"
    title = "The account is locked"


class SlowDown(AuthenticationError):
    """Failed sign-ins came too fast; wait ``retry_after`` seconds."""

    http_status = 429
    slug = "slow-down"
    title = "Too many sign-in attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed sign-ins; wait {plural(retry_after, 'second')} before trying again",
            detail={"retry_after": retry_after},
        )
        self.retry_after = retry_after


class SessionInvalid(AuthenticationError):
    """The session or token is unknown, expired, ended or revoked: sign in again."""

    slug = "session-invalid"
    title = "Sign in again"


class TotpEnrolmentRequired(PolicyError):
    """The role needs two-factor authentication; only enrolment is allowed until it is set up."""

    slug = "totp-enrolment-required"
    title = "Set up two-factor authentication first"


class WrongPassword(InputError):
    """The current password given to change it is not right."""

    slug = "wrong-password"
    title = "The current password is not right"


class WrongCode(InputError):
    """The code given to confirm TOTP enrolment, or a step-up, is not right."""

    slug = "wrong-code"
    title = "The code is not right"


__all__ = [
    "SIGN_IN_FAILED",
    "AccountLocked",
    "SessionInvalid",
    "SignInFailed",
    "SlowDown",
    "TotpEnrolmentRequired",
    "WrongCode",
    "WrongPassword",
]
