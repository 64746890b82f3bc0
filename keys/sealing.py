"""Sealing a key set at rest: under the operator's key-encryption key, or a passphrase.

A sealed key file is JSON::

    {"format": "handover-keyset-v1",
     "org_id": "urn:school:100000",
     "protection": {"kind": "kek"}
               or {"kind": "passphrase", "kdf": "scrypt", "salt": "<b64>",
                   "log2_n": 17, "r": 8, "p": 1},
     "sealed": "<b64 of keys.aead.seal(key, payload, aad)>"}

The payload is the whole key set (secrets, creation, retirement and
revocation times), so none of it can be altered without the key. The
associated data binds the format, the organisation id, the purpose
(``org-keyset``) and the protection parameters: a file copied onto another
organisation's name, or with its KDF parameters changed, does not open.

With a passphrase, scrypt (N = 2^17, r = 8, p = 1 by default, a fresh 16-byte
salt at every seal) derives the 32-byte sealing key; the parameters are
stored beside the sealed value, and bounded when read so a hostile file
cannot make us spend unbounded memory.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keys import aead
from keys.keyset import KeySet, KeySetFormatError, validate_org_id
from transfer.errors import InputError, IntegrityError

__all__ = [
    "FORMAT",
    "KekProtection",
    "KeyFileFormatError",
    "KeyUnsealError",
    "PassphraseProtection",
    "Protection",
    "WrongPassphraseError",
    "read_org_id",
    "seal_keyset",
    "unseal_keyset",
]

FORMAT = "handover-keyset-v1"
PURPOSE = "org-keyset"
SALT_SIZE = 16
DEFAULT_LOG2_N = 17
#: Bounds accepted when reading a file (memory is 128 * r * 2^log2_n bytes).
MAX_LOG2_N = 20
MIN_LOG2_N = 10
MAX_R = 16
MAX_P = 4


class KeyFileFormatError(IntegrityError):
    """A key file is not a sealed key set (damaged, truncated, or another kind of file)."""


class KeyUnsealError(aead.UnsealError):
    """A key file did not open: the key-encryption key is wrong, or the file was altered."""


class WrongPassphraseError(KeyUnsealError):
    """A passphrase-sealed key file did not open: the passphrase is wrong, or it was altered."""


class Protection(Protocol):
    """How a key file's sealing key is obtained."""

    def new_params(self) -> dict[str, Any]:
        """The parameters to store in a file being sealed now."""
        ...

    def sealing_key(self, params: dict[str, Any]) -> bytes:
        """The 32-byte key for a file with ``params``; raise if they are not ours."""
        ...

    def unseal_error(self, org_id: str) -> KeyUnsealError:
        """The error for a file that does not open."""
        ...


@dataclass(frozen=True)
class KekProtection:
    """Sealing under the operator's 32-byte key-encryption key (``HANDOVER_KEK``)."""

    kek: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.kek) != aead.KEY_SIZE:
            raise InputError("the key-encryption key must be 32 bytes")

    def new_params(self) -> dict[str, Any]:
        return {"kind": "kek"}

    def sealing_key(self, params: dict[str, Any]) -> bytes:
        if params != {"kind": "kek"}:
            raise KeyFileFormatError(
                "this key file is sealed with a passphrase, not with the key-encryption key"
            )
        return self.kek

    def unseal_error(self, org_id: str) -> KeyUnsealError:
        return KeyUnsealError(
            f"the key file of {org_id} did not open: the key-encryption key (HANDOVER_KEK) "
            "is not the one it was sealed with, or the file was altered"
        )


@dataclass(frozen=True)
class PassphraseProtection:
    """Sealing under a key derived from a passphrase with scrypt."""

    passphrase: str = field(repr=False)
    log2_n: int = DEFAULT_LOG2_N
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not self.passphrase:
            raise InputError("the passphrase must not be empty")
        _check_scrypt(self.log2_n, self.r, self.p)

    def new_params(self) -> dict[str, Any]:
        return {
            "kind": "passphrase",
            "kdf": "scrypt",
            "salt": base64.b64encode(os.urandom(SALT_SIZE)).decode("ascii"),
            "log2_n": self.log2_n,
            "r": self.r,
            "p": self.p,
        }

    def sealing_key(self, params: dict[str, Any]) -> bytes:
        if params.get("kind") != "passphrase" or params.get("kdf") != "scrypt":
            raise KeyFileFormatError(
                "this key file is sealed with the key-encryption key, not with a passphrase"
            )
        if set(params) != {"kind", "kdf", "salt", "log2_n", "r", "p"}:
            raise KeyFileFormatError("the key file's passphrase parameters are not recognised")
        log2_n, r, p = params["log2_n"], params["r"], params["p"]
        if not all(type(v) is int for v in (log2_n, r, p)):
            raise KeyFileFormatError("the key file's passphrase parameters are not numbers")
        _check_scrypt(log2_n, r, p)
        try:
            salt = base64.b64decode(str(params["salt"]).encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise KeyFileFormatError("the key file's passphrase salt is damaged") from None
        if len(salt) != SALT_SIZE:
            raise KeyFileFormatError("the key file's passphrase salt is damaged")
        secret = unicodedata.normalize("NFC", self.passphrase).encode("utf-8")
        return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(secret)

    def unseal_error(self, org_id: str) -> KeyUnsealError:
        return WrongPassphraseError(
            f"the key file of {org_id} did not open: the passphrase is wrong, "
            "or the file was altered"
        )


def _check_scrypt(log2_n: int, r: int, p: int) -> None:
    if not (MIN_LOG2_N <= log2_n <= MAX_LOG2_N and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise KeyFileFormatError(
            f"scrypt parameters out of the accepted range (N between 2^{MIN_LOG2_N} and "
            f"2^{MAX_LOG2_N}, r at most {MAX_R}, p at most {MAX_P})"
        )


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _aad(org_id: str, params: dict[str, Any]) -> bytes:
    return _canonical(
        {"format": FORMAT, "org_id": org_id, "purpose": PURPOSE, "protection": params}
    )


def seal_keyset(keyset: KeySet, protection: Protection) -> bytes:
    """The sealed key file (UTF-8 JSON) for ``keyset``."""
    params = protection.new_params()
    key = protection.sealing_key(params)
    payload = _canonical(keyset.to_private_dict())
    sealed = aead.seal(key, payload, _aad(keyset.org_id, params))
    document = {
        "format": FORMAT,
        "org_id": keyset.org_id,
        "protection": params,
        "sealed": base64.b64encode(sealed).decode("ascii"),
    }
    return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def _load_document(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyFileFormatError("the key file is not valid JSON (damaged or truncated)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise KeyFileFormatError("the file is not a Handover key file (or of an unknown version)")
    if set(document) != {"format", "org_id", "protection", "sealed"}:
        raise KeyFileFormatError("the key file has missing or unexpected fields")
    if not isinstance(document["protection"], dict) or not isinstance(document["org_id"], str):
        raise KeyFileFormatError("the key file has fields of the wrong type")
    return document


def read_org_id(data: bytes) -> str:
    """The organisation a key file claims to belong to (not authenticated until unsealed)."""
    return str(_load_document(data)["org_id"])


def unseal_keyset(
    data: bytes, protection: Protection, *, expected_org_id: str | None = None
) -> KeySet:
    """Open a sealed key file; raise :class:`KeyUnsealError` if the key or passphrase is wrong
    or the file was altered, :class:`KeyFileFormatError` if it is not a key file."""
    document = _load_document(data)
    org_id = document["org_id"]
    if expected_org_id is not None and org_id != expected_org_id:
        raise KeyFileFormatError(
            f"the key file for {expected_org_id} names another organisation; it was moved or "
            "replaced"
        )
    validate_org_id(org_id)
    params: dict[str, Any] = document["protection"]
    key = protection.sealing_key(params)
    try:
        sealed = base64.b64decode(str(document["sealed"]).encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise KeyFileFormatError("the key file's sealed value is damaged") from None
    try:
        payload = aead.unseal(key, sealed, _aad(org_id, params))
    except aead.UnsealError:
        raise protection.unseal_error(org_id) from None
    try:
        inner = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeySetFormatError("the key file's contents are damaged") from None
    if not isinstance(inner, dict):
        raise KeySetFormatError("the key file's contents are damaged")
    keyset = KeySet.from_private_dict(inner)
    if keyset.org_id != org_id:
        raise KeySetFormatError("the key file's contents belong to another organisation")
    return keyset
