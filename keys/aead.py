"""AES-256-GCM sealing of small values (keys and fields at rest).

A sealed value is ``version(1) || nonce(12) || ciphertext+tag``. Every seal is
bound to its purpose by associated data, so a value sealed for one field or key
cannot be moved to another and still open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transfer.errors import IntegrityError

_VERSION = b"\x01"
KEY_SIZE = 32


class UnsealError(IntegrityError):
    """A sealed value could not be opened: wrong key, wrong purpose, or altered."""


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_SIZE)


def purpose_key(key: bytes, label: bytes) -> bytes:
    """A 256-bit key for one purpose, derived from ``key`` (HKDF-SHA-256, ``label`` as info).

    ``label`` names the purpose and its version (``b"handover:web:v1"``), so that keys for
    different purposes never coincide and the root key is never used directly.
    """
    if len(key) != KEY_SIZE:
        raise ValueError("the root key must be 32 bytes")
    if not label:
        raise ValueError("a derived key needs a purpose label")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=label).derive(key)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` under ``key``, bound to ``aad``."""
    if len(key) != KEY_SIZE:
        raise ValueError("AES-256-GCM key must be 32 bytes")
    nonce = os.urandom(12)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Open a value made by :func:`seal`; raise :class:`UnsealError` if it does not check."""
    if len(key) != KEY_SIZE:
        raise ValueError("AES-256-GCM key must be 32 bytes")
    if len(sealed) < 1 + 12 + 16 or sealed[:1] != _VERSION:
        raise UnsealError("a sealed value is damaged or in an unknown format")
    try:
        return AESGCM(key).decrypt(sealed[1:13], sealed[13:], aad)
    except InvalidTag:
        raise UnsealError(
            "a sealed value did not open: the key is wrong or the data was altered"
        ) from None
