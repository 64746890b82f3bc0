"""Errors of the age implementation.

Every failure to open a file derives from :class:`AgeError`, itself an
:class:`transfer.errors.IntegrityError`. Each class tells one kind of failure
apart (the kinds of the C2SP CCTV test suite). Messages are one line, written
for a non-expert, and never contain key material.
"""

from __future__ import annotations

from keys.agekeys import AgeKeyError as AgeKeyError  # the one key error (keys/)
from transfer.errors import IntegrityError


class AgeError(IntegrityError):
    """An age file could not be opened or written."""

    slug = "age-error"
    title = "The encrypted file could not be processed"


class AgeHeaderError(AgeError):
    """The header is malformed or uses something not allowed (e.g. too much scrypt work)."""

    slug = "age-header"


class AgeHMACError(AgeError):
    """The header's MAC does not match: the header was altered after encryption."""

    slug = "age-hmac"


class AgeArmorError(AgeError):
    """The ASCII armor (the ``-----BEGIN AGE ENCRYPTED FILE-----`` text form) is malformed."""

    slug = "age-armor"


class AgePayloadError(AgeError):
    """The encrypted payload is damaged, truncated or has data appended."""

    slug = "age-payload"


class AgeNoMatchError(AgeError):
    """None of the given identities (keys or passphrase) opens the file."""

    slug = "age-no-match"
    exit_code = 7
