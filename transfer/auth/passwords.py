"""Password policy and Argon2id hashing (PyNaCl).

The policy: at least :data:`MIN_LENGTH` characters, not containing the
username, not one of the common passwords shipped in
``common_passwords.txt``. Hashing is Argon2id with a :class:`HashingCost`;
:data:`INTERACTIVE` is the default for a node, :data:`CHEAPEST` is for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import nacl.exceptions
import nacl.pwhash
import nacl.pwhash.argon2id

from schemas.api import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from transfer.errors import InputError

#: The policy's lengths (``schemas.api`` states them in the API's schema too).
MIN_LENGTH = MIN_PASSWORD_LENGTH
MAX_LENGTH = MAX_PASSWORD_LENGTH


class WeakPassword(InputError):
    """The new password does not meet the password policy; the message says why."""

    slug = "weak-password"
    title = "The password does not meet the policy"


@dataclass(frozen=True)
class HashingCost:
    """Argon2id cost: operations and memory (bytes)."""

    opslimit: int
    memlimit: int


#: Default for sign-in: 2 passes over 64 MiB (above OWASP's Argon2id minimum).
INTERACTIVE = HashingCost(
    nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE, nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
)
#: The cheapest libsodium allows: for tests only.
CHEAPEST = HashingCost(nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN)


@cache
def common_passwords() -> frozenset[str]:
    """The embedded list of common passwords, lower-cased."""
    text = resources.files("transfer.auth").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def policy_problems(password: str, username: str) -> list[str]:
    """Every way ``password`` breaks the policy (empty when it is acceptable)."""
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append(f"it must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        problems.append(f"it must be at most {MAX_LENGTH} characters long")
    name = username.strip().lower()
    if name and name in password.lower():
        problems.append("it must not contain your username")
    if password.lower() in common_passwords():
        problems.append("it is one of the most commonly used passwords; choose another")
    if password and not password.strip():
        problems.append("it must not be only spaces")
    return problems


def check_password_policy(password: str, username: str) -> None:
    """Raise :class:`WeakPassword` naming every problem, or return."""
    problems = policy_problems(password, username)
    if problems:
        raise WeakPassword(
            "the password is not accepted: " + "; ".join(problems),
            detail={"problems": problems},
        )


def hash_password(password: str, cost: HashingCost) -> str:
    """An Argon2id hash string (``$argon2id$v=19$m=…``) of ``password``."""
    return nacl.pwhash.argon2id.str(
        password.encode("utf-8"), opslimit=cost.opslimit, memlimit=cost.memlimit
    ).decode("ascii")


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches the stored Argon2id hash (the comparison is libsodium's)."""
    try:
        return bool(nacl.pwhash.verify(stored.encode("ascii"), password.encode("utf-8")))
    except nacl.exceptions.InvalidkeyError:
        return False
