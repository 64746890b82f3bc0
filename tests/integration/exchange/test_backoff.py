"""Back-off maths: bounds, growth, jitter range, give-up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from transfer.exchange.backoff import (
    ceiling,
    give_up_at,
    next_attempt_at,
    retry_delay,
    should_give_up,
)

T0 = datetime(2026, 7, 20, 9, 0, tzinfo=UTC)


def test_ceiling_doubles_then_stops_at_the_cap() -> None:
    got = [ceiling(n, base=30, cap=3600) for n in range(1, 10)]
    assert got == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    # Very large attempt counts neither overflow nor exceed the cap.
    assert ceiling(10_000, base=30, cap=3600) == 3600


def test_jitter_covers_the_whole_range_and_never_leaves_it() -> None:
    rng = random.Random(4)
    for attempt in (1, 2, 5, 40):
        top = ceiling(attempt, base=0.5, cap=100)
        draws = [retry_delay(attempt, base=0.5, cap=100, uniform=rng.random) for _ in range(2000)]
        assert all(0 <= d <= top for d in draws)
        # Full jitter: both ends of the range are reached, not a fixed delay.
        assert min(draws) < top * 0.05 and max(draws) > top * 0.95
        assert len(set(draws)) > 1900


def test_edges_of_the_random_source() -> None:
    assert retry_delay(3, base=10, cap=1000, uniform=lambda: 0.0) == 0.0
    assert retry_delay(3, base=10, cap=1000, uniform=lambda: 0.5) == 20.0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        retry_delay(3, base=10, cap=1000, uniform=lambda: 1.0)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        ceiling(0, base=1, cap=1)
    with pytest.raises(ValueError, match="positive"):
        ceiling(1, base=0, cap=1)


def test_next_attempt_time_and_give_up() -> None:
    assert next_attempt_at(T0, 2, base=30, cap=3600, uniform=lambda: 0.5) == T0 + timedelta(
        seconds=30
    )
    assert give_up_at(T0, 72) == T0 + timedelta(hours=72)
    assert not should_give_up(T0, T0 + timedelta(hours=71, minutes=59), 72)
    assert should_give_up(T0, T0 + timedelta(hours=72), 72)
