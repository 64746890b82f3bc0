"""Staff accounts and sign-in: passwords, TOTP, recovery codes, sessions, API tokens.

The public API is :class:`transfer.auth.service.Accounts` (see ``docs/api.md``).
"""

from __future__ import annotations

from transfer.auth.passwords import CHEAPEST, INTERACTIVE, HashingCost, WeakPassword
from transfer.auth.records import (
    AccountStatus,
    IssuedToken,
    Principal,
    RecoveryCodes,
    ScopedActor,
    SignInResult,
    TokenInfo,
    TotpEnrolment,
)
from transfer.auth.service import (
    AccountLocked,
    Accounts,
    SessionInvalid,
    SignInFailed,
    SlowDown,
    TotpEnrolmentRequired,
    WrongCode,
    WrongPassword,
)

__all__ = [
    "CHEAPEST",
    "INTERACTIVE",
    "AccountLocked",
    "AccountStatus",
    "Accounts",
    "HashingCost",
    "IssuedToken",
    "Principal",
    "RecoveryCodes",
    "ScopedActor",
    "SessionInvalid",
    "SignInFailed",
    "SignInResult",
    "SlowDown",
    "TokenInfo",
    "TotpEnrolment",
    "TotpEnrolmentRequired",
    "WeakPassword",
    "WrongCode",
    "WrongPassword",
]
