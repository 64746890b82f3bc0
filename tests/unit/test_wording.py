"""Counts in messages read as English (issue 11, item 21: "wait 1 seconds")."""

from __future__ import annotations

import pytest

from transfer.auth.service import SlowDown
from transfer.wording import plural, plural_noun


@pytest.mark.parametrize(
    ("count", "noun", "expected"),
    [
        (1, "second", "1 second"),
        (2, "second", "2 seconds"),
        (0, "entry", "0 entries"),
        (1, "entry", "1 entry"),
        (3, "copy", "3 copies"),
        (2, "day", "2 days"),  # a vowel before the y
        (5, "school day", "5 school days"),
        (1, "school day", "1 school day"),
        (2, "class", "2 classes"),
        (2, "box", "2 boxes"),
        (2, "person", "2 people"),
        (2, "new receipt", "2 new receipts"),
        (-1, "minute", "-1 minute"),
    ],
)
def test_plural(count: int, noun: str, expected: str) -> None:
    assert plural(count, noun) == expected


def test_an_irregular_plural_can_be_given() -> None:
    assert plural(2, "criterion", "criteria") == "2 criteria"
    assert plural(1, "criterion", "criteria") == "1 criterion"
    assert plural_noun("byte", 1) == "byte"


def test_the_sign_in_slow_down_says_one_second() -> None:
    assert "wait 1 second before" in SlowDown(1).message
    assert "wait 2 seconds before" in SlowDown(2).message
