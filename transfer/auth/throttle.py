"""The slow-down and lock-out of failed sign-ins, as pure functions of counts and times.

Each name (a real credential or an unknown username) has a failure count, the time
of its last failure and perhaps a lock. Before an attempt is checked it is either
refused (locked, or too soon after a failure) or counted; the attempt that reaches
``before_lock`` failures sets the lock as it is counted. No I/O here: the accounts
service reads the counter, asks :func:`decide`, and writes the answer back with a
compare-and-set (``transfer.auth.attempts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

#: Longest wait imposed between failed attempts before the lock.
MAX_DELAY_SECONDS: Final = 300
#: A failure older than this is forgotten (an unknown username's row is then deleted).
FORGET_AFTER: Final = timedelta(hours=24)


@dataclass(frozen=True)
class Attempts:
    """Failure counter of one name (a real credential row or an unknown username)."""

    count: int
    last: datetime | None
    locked_until: datetime | None


#: A name with no failures.
NO_ATTEMPTS: Final = Attempts(0, None, None)


@dataclass(frozen=True)
class ThrottlePolicy:
    """The limits (``[security]`` in the configuration)."""

    #: Failures allowed before each further attempt must wait (1 s, 2 s, 4 s ...).
    before_delay: int
    #: The failure that locks the name.
    before_lock: int
    #: How long a lock lasts.
    lock_minutes: int


@dataclass(frozen=True)
class Refused:
    """The attempt may not go ahead: locked until a time, or ``retry_after`` seconds too soon."""

    locked_until: datetime | None
    retry_after: int


@dataclass(frozen=True)
class Counted:
    """The attempt is counted before its password is checked: its number, and whether it locks."""

    count: int
    locks: bool
    #: The lock this attempt sets (when ``locks``).
    locked_until: datetime | None


def current(a: Attempts, now: datetime) -> Attempts:
    """``a`` as it stands at ``now``: an expired lock or a day-old failure is forgotten."""
    if a.locked_until is not None:
        return NO_ATTEMPTS if a.locked_until <= now else a
    if a.last is not None and now - a.last >= FORGET_AFTER:
        return NO_ATTEMPTS
    return a


def wait_seconds(a: Attempts, now: datetime, policy: ThrottlePolicy) -> int:
    """Seconds still to wait after ``a.count`` failures (0 when an attempt may go ahead)."""
    over = a.count - policy.before_delay
    if over < 0 or a.last is None:
        return 0
    delay = min(2**over, MAX_DELAY_SECONDS)
    remaining = (a.last + timedelta(seconds=delay) - now).total_seconds()
    return max(0, int(remaining + 0.999))


def decide(stored: Attempts, now: datetime, policy: ThrottlePolicy) -> Refused | Counted:
    """Whether an attempt at ``now`` on a name whose counter reads ``stored`` goes ahead."""
    a = current(stored, now)
    if a.locked_until is not None:
        return Refused(locked_until=a.locked_until, retry_after=0)
    wait = wait_seconds(a, now, policy)
    if wait > 0:
        return Refused(locked_until=None, retry_after=wait)
    count = a.count + 1
    locks = count >= policy.before_lock
    until = now + timedelta(minutes=policy.lock_minutes) if locks else None
    return Counted(count=count, locks=locks, locked_until=until)


__all__ = [
    "FORGET_AFTER",
    "MAX_DELAY_SECONDS",
    "NO_ATTEMPTS",
    "Attempts",
    "Counted",
    "Refused",
    "ThrottlePolicy",
    "current",
    "decide",
    "wait_seconds",
]
