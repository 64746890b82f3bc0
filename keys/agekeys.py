"""age's text forms of X25519 keys: ``age1…`` recipients and ``AGE-SECRET-KEY-1…`` identities.

Pure functions over the Bech32 codec in :mod:`keys.bech32` (not on the age
implementation, so keys can be written and read without it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from keys import bech32
from transfer.errors import InputError

RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"
X25519_KEY_SIZE = 32


class AgeKeyError(InputError):
    """A recipient, identity or passphrase given by the caller is not valid or not allowed.

    The one key error of the project: the age implementation (:mod:`transfer.age`)
    raises it too. Messages never repeat a secret key.
    """

    slug = "age-invalid-key"
    title = "The key is not valid"


def encode_recipient(public_key: bytes) -> str:
    """The ``age1…`` recipient of an X25519 public key."""
    if len(public_key) != X25519_KEY_SIZE:
        raise AgeKeyError("an X25519 public key must be 32 bytes")
    return bech32.encode(RECIPIENT_HRP, public_key)


def decode_recipient(text: str) -> bytes:
    """The X25519 public key of an ``age1…`` recipient; raise :class:`AgeKeyError` if invalid."""
    text = text.strip()
    if text.upper() == text and text:
        raise AgeKeyError("an age recipient must be written in lower case (age1...)")
    try:
        hrp, data = bech32.decode(text)
    except bech32.Bech32Error as exc:
        raise AgeKeyError(
            f"not a valid age recipient (it should look like age1...): {exc.message}"
        ) from None
    if hrp != RECIPIENT_HRP or len(data) != X25519_KEY_SIZE:
        raise AgeKeyError("not an age X25519 recipient (it should start with age1)")
    return data


def encode_identity(secret_key: bytes) -> str:
    """The ``AGE-SECRET-KEY-1…`` identity of an X25519 private key (upper case)."""
    if len(secret_key) != X25519_KEY_SIZE:
        raise AgeKeyError("an X25519 private key must be 32 bytes")
    return bech32.encode(IDENTITY_HRP, secret_key).upper()


def decode_identity(text: str) -> bytes:
    """The X25519 private key of an ``AGE-SECRET-KEY-1…`` identity.

    The error message never repeats the string, which is a secret.
    """
    text = text.strip()
    if text.upper() != text:
        raise AgeKeyError("an age identity must be written in upper case (AGE-SECRET-KEY-1...)")
    try:
        hrp, data = bech32.decode(text)
    except bech32.Bech32Error as exc:
        raise AgeKeyError(
            f"not a valid age identity (it should look like AGE-SECRET-KEY-1...): {exc.message}"
        ) from None
    if hrp != IDENTITY_HRP or len(data) != X25519_KEY_SIZE:
        raise AgeKeyError("not an age X25519 identity (it should start with AGE-SECRET-KEY-1)")
    return data


def parse_identity_file(text: str) -> list[bytes]:
    """Every identity in an age identity file (``#`` comments and blank lines skipped).

    Raises :class:`AgeKeyError` naming the line number of a bad line, and when
    the file holds no identity at all.
    """
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(decode_identity(line))
        except AgeKeyError as exc:
            raise AgeKeyError(f"line {number} of the identity file: {exc.message}") from None
    if not keys:
        raise AgeKeyError("the identity file holds no AGE-SECRET-KEY-1... line")
    return keys


def format_identity_file(
    entries: Iterable[tuple[bytes, bytes, datetime, str]],
) -> str:
    """An age identity file: for each ``(secret, public, created, note)`` three lines,
    in the layout ``age-keygen`` writes (``# created:``, ``# public key:``, the key)."""
    out: list[str] = []
    for secret, public, created, note in entries:
        if note:
            out.append(f"# {note}")
        out.append(f"# created: {created.isoformat()}")
        out.append(f"# public key: {encode_recipient(public)}")
        out.append(encode_identity(secret))
    return "\n".join(out) + "\n"
