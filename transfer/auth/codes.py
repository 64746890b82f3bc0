"""Small pure helpers for the secrets of sign-in: TOTP, recovery codes, tokens.

Nothing here touches the database. Every hash is namespaced by purpose and
version (``handover:…:v1:``); comparisons of secrets use
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
from datetime import datetime

import pyotp
import segno

TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
SESSION_PREFIX = "hos_"
API_TOKEN_PREFIX = "hot_"  # noqa: S105 (a prefix, not a secret)


def totp_aad(staff_id: str) -> bytes:
    """Associated data binding a sealed TOTP secret to its staff member."""
    return b"handover:totp:v1:" + staff_id.encode("utf-8")


def new_totp_secret() -> str:
    """A fresh 160-bit TOTP secret in base32 (the form authenticator apps take)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The ``otpauth://totp/…`` URI an authenticator app scans."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer
    )


def terminal_qr(uri: str) -> str:
    """The QR code of ``uri`` drawn with block characters, for a terminal."""
    out = io.StringIO()
    segno.make(uri, error="m").terminal(out=out, compact=True)
    return out.getvalue()


def time_step(now: datetime) -> int:
    """The TOTP time step (RFC 6238 counter) at ``now``."""
    return int(now.timestamp()) // TOTP_STEP_SECONDS


def normalise_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def matching_step(secret: str, code: str, now: datetime, drift_steps: int) -> int | None:
    """The time step within ``±drift_steps`` of ``now`` whose code is ``code``, if any.

    Every candidate step is compared (no early exit), each with
    :func:`hmac.compare_digest`.
    """
    code = normalise_code(code)
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_STEP_SECONDS)
    current = time_step(now)
    found: int | None = None
    for step in range(current - drift_steps, current + drift_steps + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            found = step
    return found


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """``count`` one-time codes of 80 bits each, written ``xxxx-xxxx-xxxx-xxxx``."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    return codes


def recovery_code_hash(staff_id: str, code: str) -> str:
    """SHA-256 of a recovery code, salted with the staff id and namespaced."""
    data = b"handover:recovery-code:v1:" + staff_id.encode() + b":" + normalise_code(code).encode()
    return hashlib.sha256(data).hexdigest()


def new_token(prefix: str) -> str:
    """A bearer token: ``prefix`` then 256 random bits in URL-safe base64."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored for a token: SHA-256, namespaced (the token has 256 bits of entropy)."""
    return hashlib.sha256(b"handover:token:v1:" + token.encode("utf-8")).hexdigest()


def unknown_signin_key(kek: bytes, org_id: str, username: str) -> str:
    """The key of an unknown username's failure counter: HMAC-SHA256 under a key derived from
    the KEK, so that the table does not hold (or let anyone test guesses of) what was typed."""
    subkey = hmac.new(kek, b"handover:unknown-signin-key:v1", hashlib.sha256).digest()
    name = org_id.encode("utf-8") + b"\x00" + username.strip().lower().encode("utf-8")
    return hmac.new(subkey, b"handover:unknown-signin:v1:" + name, hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
