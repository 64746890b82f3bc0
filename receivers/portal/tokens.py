"""The pickup portal's secrets: link tokens, passcodes, session secrets, sealing, CSRF.

Pure: bytes in, bytes out; no database, no HTTP.

- A **link token** is 256 random bits (URL-safe base64). Only a namespaced
  SHA-256 of it is stored, so the database alone cannot make a working link.
- The per-pickup X25519 **identity** is sealed (AES-256-GCM) under a key
  derived with HKDF-SHA-256 from the node's KEK *and* the link token: neither
  the database with the KEK, nor a link without the node, opens the package.
- After sign-in the identity is sealed again under a key from the KEK and the
  **session secret** (the value of the session cookie), so later pages need
  the cookie, not the token.
- The **passcode** read out by the DSL is 12 digits; it is stored as an
  Argon2id hash only (libsodium's comparison).
- An authenticator app's **set-up secret** travels in the set-up form, sealed
  (AES-256-GCM under a KEK-derived key) to the session and the agency
  address, so showing the set-up page changes nothing on the server and a
  form cannot be carried to another session.
- **CSRF tokens** are HMACs, under a KEK-derived key, of a value bound to the
  browser (the session id, or a random pre-sign-in cookie), compared with
  :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

import nacl.exceptions
import nacl.pwhash
import nacl.pwhash.argon2id
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keys import aead
from transfer.auth.passwords import HashingCost

__all__ = [
    "PASSCODE_DIGITS",
    "csrf_token",
    "csrf_valid",
    "hash_passcode",
    "link_token_hash",
    "new_link_token",
    "new_passcode",
    "new_session_secret",
    "normalise_passcode",
    "open_totp_setup",
    "seal_identity",
    "seal_totp_setup",
    "session_secret_hash",
    "unseal_identity",
    "verify_passcode",
]

PASSCODE_DIGITS = 12
_LINK = b"handover:portal:link:v1:"
_SESSION = b"handover:portal:session:v1:"
_CSRF = b"handover:portal:csrf:v1"
_TOTP_SETUP = b"handover:portal:totp-setup:v1"


def new_link_token() -> str:
    """A fresh link token: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def link_token_hash(token: str) -> str:
    """What is stored for a link token (hex SHA-256, namespaced)."""
    return hashlib.sha256(_LINK + token.encode("utf-8")).hexdigest()


def new_session_secret() -> str:
    """The value of a portal session cookie: 256 random bits."""
    return secrets.token_urlsafe(32)


def session_secret_hash(secret: str) -> str:
    return hashlib.sha256(_SESSION + secret.encode("utf-8")).hexdigest()


def new_passcode() -> str:
    """Twelve random digits, written in groups of three to read aloud: ``482-109-375-553``."""
    digits = "".join(secrets.choice("0123456789") for _ in range(PASSCODE_DIGITS))
    return "-".join(digits[i : i + 3] for i in range(0, PASSCODE_DIGITS, 3))


def normalise_passcode(text: str) -> str:
    """The digits of a typed passcode (spaces and dashes dropped)."""
    return "".join(c for c in text if c not in " -\t")


def hash_passcode(passcode: str, cost: HashingCost) -> str:
    """An Argon2id hash string of the passcode's digits."""
    return nacl.pwhash.argon2id.str(
        normalise_passcode(passcode).encode("ascii"),
        opslimit=cost.opslimit,
        memlimit=cost.memlimit,
    ).decode("ascii")


def verify_passcode(stored: str, typed: str) -> bool:
    """Whether ``typed`` matches the stored hash. Anything but 12 digits is refused
    after the same work, so timing says nothing about the format."""
    digits = normalise_passcode(typed)
    well_formed = len(digits) == PASSCODE_DIGITS and digits.isascii() and digits.isdigit()
    candidate = digits if well_formed else "x" * PASSCODE_DIGITS
    try:
        ok = bool(nacl.pwhash.verify(stored.encode("ascii"), candidate.encode("ascii")))
    except nacl.exceptions.InvalidkeyError:
        ok = False
    return ok and well_formed


def _derive(kek: bytes, secret: str, info: bytes) -> bytes:
    if len(kek) != aead.KEY_SIZE:
        raise ValueError("the key-encryption key must be 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        kek + secret.encode("utf-8")
    )


def _aad(purpose: str, record_id: str) -> bytes:
    return f"handover:portal:{purpose}:v1:{record_id}".encode()


def seal_identity(kek: bytes, secret: str, *, purpose: str, record_id: str, data: bytes) -> bytes:
    """Seal ``data`` (an X25519 secret) so it opens only with the KEK and ``secret``.

    ``purpose`` is ``pickup`` (``secret`` is the link token) or ``session``
    (``secret`` is the session cookie); ``record_id`` binds it to its row.
    """
    info = _aad(purpose, record_id)
    return aead.seal(_derive(kek, secret, info), data, info)


def unseal_identity(
    kek: bytes, secret: str, *, purpose: str, record_id: str, sealed: bytes
) -> bytes:
    """Open what :func:`seal_identity` made; :class:`keys.aead.UnsealError` otherwise."""
    info = _aad(purpose, record_id)
    return aead.unseal(_derive(kek, secret, info), sealed, info)


def _csrf_key(kek: bytes) -> bytes:
    return _derive(kek, "", _CSRF)


def csrf_token(kek: bytes, binding: str, form: str) -> str:
    """The CSRF token of ``form`` for a browser bound by ``binding``."""
    mac = hmac.new(_csrf_key(kek), f"{form}\n{binding}".encode(), hashlib.sha256)
    return mac.hexdigest()


def csrf_valid(kek: bytes, binding: str, form: str, token: str) -> bool:
    expected = csrf_token(kek, binding, form)
    return hmac.compare_digest(expected.encode(), token.encode("utf-8", "replace"))


def _setup_aad(session_id: str, email: str) -> bytes:
    return _TOTP_SETUP + b":" + session_id.encode() + b"|" + email.encode()


def seal_totp_setup(kek: bytes, *, session_id: str, email: str, secret: str) -> str:
    """An authenticator set-up secret sealed to one session and address, for a hidden field."""
    sealed = aead.seal(
        _derive(kek, "", _TOTP_SETUP), secret.encode("ascii"), _setup_aad(session_id, email)
    )
    return base64.urlsafe_b64encode(sealed).decode("ascii")


def open_totp_setup(kek: bytes, *, session_id: str, email: str, sealed: str) -> str | None:
    """The secret :func:`seal_totp_setup` sealed for this session and address, else ``None``."""
    if not 20 <= len(sealed) <= 400 or not sealed.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed.encode("ascii"))
        secret = aead.unseal(_derive(kek, "", _TOTP_SETUP), raw, _setup_aad(session_id, email))
    except (binascii.Error, ValueError, aead.UnsealError):
        return None
    return secret.decode("ascii", "replace")
