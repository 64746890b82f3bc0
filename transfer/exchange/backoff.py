"""When to try a delivery again: exponential back-off with full jitter, and when to give up.

Pure arithmetic over numbers and times (no I/O). After the ``attempt``-th
failed try (1 for the first failure) the next try waits a random time drawn
uniformly from ``[0, min(cap, base * 2 ** (attempt - 1))]`` ("full jitter"):
nodes that failed together (a receiver back after an outage) do not all come
back at the same moment. The sweep interval is the real floor, since a due
item is only picked up at the next sweep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

__all__ = ["ceiling", "give_up_at", "next_attempt_at", "retry_delay", "should_give_up"]

#: A source of uniform random numbers in [0, 1).
Uniform = Callable[[], float]

_system = random.SystemRandom()


def ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The largest wait in seconds after the ``attempt``-th failure.

    ``min(cap, base * 2 ** (attempt - 1))``.
    """
    if attempt < 1:
        raise ValueError("attempt counts failures and starts at 1")
    if base <= 0 or cap <= 0:
        raise ValueError("base and cap must be positive")
    # 2 ** 1100 overflows a float; beyond 2**64 the cap has long been reached.
    exponent = min(attempt - 1, 64)
    return min(cap, base * float(2**exponent))


def retry_delay(
    attempt: int, *, base: float, cap: float, uniform: Uniform = _system.random
) -> float:
    """A wait in seconds, uniform in ``[0, ceiling(attempt)]`` (full jitter)."""
    top = ceiling(attempt, base=base, cap=cap)
    draw = uniform()
    if not 0.0 <= draw < 1.0:
        raise ValueError("the random source must give numbers in [0, 1)")
    return draw * top


def next_attempt_at(
    now: datetime,
    attempt: int,
    *,
    base: float,
    cap: float,
    uniform: Uniform = _system.random,
) -> datetime:
    """The time of the next try after the ``attempt``-th failure at ``now``."""
    return now + timedelta(seconds=retry_delay(attempt, base=base, cap=cap, uniform=uniform))


def give_up_at(queued_at: datetime, give_up_hours: float) -> datetime:
    """When a delivery that keeps failing for passing reasons is marked failed."""
    return queued_at + timedelta(hours=give_up_hours)


def should_give_up(queued_at: datetime, now: datetime, give_up_hours: float) -> bool:
    """Whether the give-up time of an item queued at ``queued_at`` has come."""
    return now >= give_up_at(queued_at, give_up_hours)
