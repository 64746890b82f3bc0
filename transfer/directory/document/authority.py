"""The directory authority's key: its fingerprint and its secret key in minisign's own
format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from nacl.signing import SigningKey

from keys import minisign
from keys.fingerprint import crockford_base32
from transfer.errors import InputError

_AUTHORITY_FP_DOMAIN = b"handover-directory-authority-v1\x00"
_SK_KDF_NONE = b"\x00\x00"
_SK_KDF_SCRYPT = b"Sc"
_SK_CHECKSUM_ALG = b"B2"
_SK_LENGTH = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32


# ---------------------------------------------------------------- the authority


def authority_fingerprint(public: minisign.PublicKey) -> str:
    """A short fingerprint of an authority key, to read aloud (``ABCD-EFGH-JKMN-PQRS``)."""
    digest = hashlib.sha256(_AUTHORITY_FP_DOMAIN + public.key_id + public.key).digest()
    text = crockford_base32(digest[:10])
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def _sk_checksum(key_id: bytes, sk64: bytes) -> bytes:
    return hashlib.blake2b(minisign.KEY_ALGORITHM + key_id + sk64, digest_size=32).digest()


def authority_secret_key_text(secret: minisign.SecretKey) -> str:
    """The key as a passphrase-free minisign secret key file (``minisign -G -W``'s format)."""
    sk64 = secret.seed + secret.public_key.key
    raw = (
        minisign.KEY_ALGORITHM
        + _SK_KDF_NONE
        + _SK_CHECKSUM_ALG
        + bytes(32 + 8 + 8)
        + secret.key_id
        + sk64
        + _sk_checksum(secret.key_id, sk64)
    )
    return (
        "untrusted comment: handover directory authority secret key (no passphrase)\n"
        + base64.b64encode(raw).decode("ascii")
        + "\n"
    )


def parse_authority_secret_key(text: str | bytes) -> minisign.SecretKey:
    """Read a passphrase-free minisign secret key file; refuse anything else, saying why."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("the authority key file is not a minisign secret key") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("untrusted comment:"):
        lines = lines[1:]
    if len(lines) != 1:
        raise InputError("the authority key file is not a minisign secret key")
    try:
        raw = base64.b64decode(lines[0].encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InputError("the authority key file is not a minisign secret key") from None
    if len(raw) != _SK_LENGTH or raw[:2] != minisign.KEY_ALGORITHM:
        raise InputError("the authority key file is not a minisign Ed25519 secret key")
    kdf, checksum_alg = raw[2:4], raw[4:6]
    if kdf == _SK_KDF_SCRYPT:
        raise InputError(
            "the authority key file is protected by a passphrase; this tool reads only "
            "passphrase-free keys (made by 'handover directory authority-keygen' or "
            "'minisign -G -W') kept offline"
        )
    if kdf != _SK_KDF_NONE or checksum_alg != _SK_CHECKSUM_ALG:
        raise InputError("the authority key file uses a minisign format this tool does not know")
    key_id, sk64, checksum = raw[54:62], raw[62:126], raw[126:158]
    seed, public = sk64[:32], sk64[32:]
    if not hmac.compare_digest(bytes(SigningKey(seed).verify_key), public):
        raise InputError("the authority key file is damaged: its two halves do not match")
    if checksum != bytes(32) and not hmac.compare_digest(checksum, _sk_checksum(key_id, sk64)):
        raise InputError("the authority key file is damaged: its checksum does not match")
    return minisign.SecretKey(seed=seed, key_id=key_id)
