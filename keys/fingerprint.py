"""Short fingerprints of an organisation's public keys, for reading aloud.

``fingerprint = crockford_base32(SHA-256(domain || "ed25519" || sig_pk || "x25519" ||
enc_pk)[:10])``, 16 characters in groups of four: ``7KQ2-M9XD-0TZC-4HPB``.
80 bits: finding a different key set with the same fingerprint costs about
2^80 hash evaluations. Crockford's alphabet has no I, L, O or U, so what is
read aloud or typed back is unambiguous; :func:`normalise` maps the look-alikes.
"""

from __future__ import annotations

import hashlib
import hmac

from keys import agekeys, minisign
from transfer.errors import InputError

_DOMAIN = b"handover-org-key-fingerprint-v1\x00"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
FINGERPRINT_CHARS = 16
_GROUP = 4


def crockford_base32(data: bytes) -> str:
    """Crockford base32 of ``data`` (upper case, no padding; length a multiple of 5 bytes)."""
    if len(data) % 5:
        raise ValueError("crockford_base32 needs a multiple of 5 bytes")
    number = int.from_bytes(data, "big")
    chars = len(data) * 8 // 5
    return "".join(CROCKFORD[(number >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def fingerprint(signing_public_key: bytes, encryption_public_key: bytes) -> str:
    """The grouped 16-character fingerprint of an Ed25519 and an X25519 public key."""
    if len(signing_public_key) != 32 or len(encryption_public_key) != 32:
        raise ValueError("both public keys must be 32 bytes")
    digest = hashlib.sha256(
        _DOMAIN + b"ed25519\x00" + signing_public_key + b"x25519\x00" + encryption_public_key
    ).digest()
    text = crockford_base32(digest[:10])
    return "-".join(text[i : i + _GROUP] for i in range(0, FINGERPRINT_CHARS, _GROUP))


def fingerprint_of_public(recipient: str, signing_key: minisign.PublicKey) -> str:
    """The fingerprint of another organisation's keys as published: its ``age1…``
    recipient and its minisign public key (for example, from the directory)."""
    return fingerprint(signing_key.key, agekeys.decode_recipient(recipient))


def normalise(text: str) -> str:
    """A fingerprint as typed or read back, in canonical grouped form.

    Spaces and hyphens are ignored, case is folded, and O→0, I/L→1 (Crockford's
    rules). Raises :class:`InputError` if it cannot be a fingerprint.
    """
    raw = "".join(c for c in text.upper() if c not in " -\t")
    raw = raw.translate(str.maketrans("OIL", "011"))
    if len(raw) != FINGERPRINT_CHARS or any(c not in CROCKFORD for c in raw):
        raise InputError(
            "a key fingerprint is 16 letters and digits, in four groups of four (ABCD-EFGH-...)"
        )
    return "-".join(raw[i : i + _GROUP] for i in range(0, FINGERPRINT_CHARS, _GROUP))


def fingerprints_match(a: str, b: str) -> bool:
    """Whether two fingerprints (as typed or shown) are the same."""
    return hmac.compare_digest(normalise(a).encode(), normalise(b).encode())


#: How each character of a fingerprint is said on the phone (NATO alphabet, digits in words).
SPOKEN = dict(
    zip(
        CROCKFORD,
        (
            "zero one two three four five six seven eight nine Alfa Bravo Charlie Delta Echo "
            "Foxtrot Golf Hotel Juliett Kilo Mike November Papa Quebec Romeo Sierra Tango "
            "Victor Whiskey X-ray Yankee Zulu"
        ).split(),
        strict=True,
    )
)


def read_aloud(text: str) -> tuple[str, ...]:
    """A fingerprint's four groups as said on the phone: ``("seven Kilo Quebec two", ...)``,
    so that two people checking keys cannot mishear a letter."""
    groups = normalise(text).split("-")
    return tuple(" ".join(SPOKEN[c] for c in group) for group in groups)
