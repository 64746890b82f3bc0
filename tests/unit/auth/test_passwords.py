"""Password policy and Argon2id hashing."""

from __future__ import annotations

import pytest

from transfer.auth.passwords import (
    CHEAPEST,
    MIN_LENGTH,
    WeakPassword,
    check_password_policy,
    common_passwords,
    hash_password,
    policy_problems,
    verify_password,
)


def test_a_long_uncommon_password_without_the_username_is_accepted() -> None:
    check_password_policy("correct staple orbit lantern", "jsmith")
    assert policy_problems("Tr4vel-by-heron-at-dawn", "jsmith") == []


def test_too_short_is_refused_with_the_minimum_in_the_message() -> None:
    with pytest.raises(WeakPassword) as err:
        check_password_policy("x7#Lq9!zP2a", "jsmith")  # 11 characters
    assert f"at least {MIN_LENGTH} characters" in err.value.message
    check_password_policy("x7#Lq9!zP2aw", "jsmith")  # 12 is enough


def test_containing_the_username_is_refused_whatever_the_case() -> None:
    with pytest.raises(WeakPassword, match="must not contain your username"):
        check_password_policy("my-name-is-JSmith-ok", "jsmith")


@pytest.mark.parametrize(
    "password", ["password1234", "Password1234", "QWERTYUIOP123", "changeme1234"]
)
def test_common_passwords_are_refused_case_insensitively(password: str) -> None:
    with pytest.raises(WeakPassword, match="most commonly used"):
        check_password_policy(password, "jsmith")


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(WeakPassword) as err:
        check_password_policy("jsmith", "jsmith")
    problems = err.value.detail["problems"]
    assert isinstance(problems, list) and len(problems) == 2


def test_the_embedded_list_has_a_few_hundred_entries() -> None:
    words = common_passwords()
    assert 300 <= len(words) <= 2000
    assert "password" in words and all(w == w.lower() for w in words)


def test_hash_is_argon2id_and_verifies_only_the_right_password() -> None:
    stored = hash_password("correct staple orbit lantern", CHEAPEST)
    assert stored.startswith("$argon2id$")
    assert "lantern" not in stored
    assert verify_password(stored, "correct staple orbit lantern")
    assert not verify_password(stored, "correct staple orbit lanterN")
    # Salted: the same password hashes differently each time.
    assert stored != hash_password("correct staple orbit lantern", CHEAPEST)
