"""An organisation's key set: an Ed25519 signing key and an X25519 encryption key.

Pure: no files, no network. :mod:`keys.sealing` seals a key set at rest and
:mod:`keys.keyfiles` keeps one per organisation on disk.

A :class:`KeySet` is immutable; :meth:`KeySet.rotate`, :meth:`KeySet.revoke`
and :meth:`KeySet.with_imported_identities` return a new one.

- **Current keys.** One signing key (with its secret seed) and one
  encryption key. The fingerprint and the ``age1…`` recipient describe them.
- **Rotation** makes a new signing key and a new encryption key. Earlier
  X25519 keys are kept (secret and all) with their retirement time, so
  packages addressed to them that are still in flight can be opened. Earlier
  signing keys keep only their public half (nothing will be signed with them
  again) with their retirement time.
- **Revocation** of a signing key at a time: a signature by that key dated at
  or after the revocation time is refused; one dated before it still stands.
  Revoking the current signing key rotates both keys at once, so the
  organisation never goes on signing with a revoked key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nacl.signing import SigningKey

from keys import agekeys, minisign
from keys.fingerprint import fingerprint as _fingerprint
from transfer.errors import InputError, IntegrityError, NotFoundError, PolicyError

__all__ = [
    "ORG_ID_PATTERN",
    "EncryptionKey",
    "KeyNotYetValidError",
    "KeyPolicyError",
    "KeyRetiredError",
    "KeyRevokedError",
    "KeySet",
    "KeySetFormatError",
    "SigningKeyRecord",
    "UnknownKeyError",
    "derive_key_id",
    "format_key_id",
    "format_time",
    "parse_key_id",
    "validate_org_id",
]

#: Organisation ids: letters, digits and ``. _ : -`` (URNs such as ``urn:school:100000``).
ORG_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
_KEY_ID_DOMAIN = b"handover-minisign-key-id-v1\x00"
PAYLOAD_VERSION = 1


class KeyPolicyError(PolicyError):
    """A key may not be used for this: it was revoked, replaced or not yet made."""


class KeyRevokedError(KeyPolicyError):
    """A signature by a revoked key, dated at or after its revocation."""


class KeyRetiredError(KeyPolicyError):
    """A signature by a replaced (rotated-out) key, dated after it was replaced."""


class KeyNotYetValidError(KeyPolicyError):
    """A signature dated before the key was made."""


class UnknownKeyError(NotFoundError):
    """The organisation has no key with that id or recipient."""


class KeySetFormatError(IntegrityError):
    """The unsealed contents of a key file are not a valid key set."""


def validate_org_id(org_id: str) -> str:
    """Return ``org_id`` if it is a valid organisation id, else raise :class:`InputError`."""
    if not isinstance(org_id, str) or not ORG_ID_PATTERN.fullmatch(org_id):
        raise InputError(
            "an organisation id is 1 to 64 letters, digits and . _ : - "
            "(for example urn:school:100000)"
        )
    return org_id


def derive_key_id(signing_public_key: bytes) -> bytes:
    """The minisign key id of one of our signing keys: derived from the public key."""
    return hashlib.sha256(_KEY_ID_DOMAIN + signing_public_key).digest()[: minisign.KEY_ID_SIZE]


def format_key_id(key_id: bytes) -> str:
    """A key id as minisign shows it (16 upper-case hex digits)."""
    return key_id[::-1].hex().upper()


def parse_key_id(key_id: bytes | str) -> bytes:
    """A key id from its 8 raw bytes or the 16 hex digits minisign shows."""
    if isinstance(key_id, bytes):
        if len(key_id) != minisign.KEY_ID_SIZE:
            raise InputError("a key id is 8 bytes")
        return key_id
    text = key_id.strip()
    if len(text) != 16:
        raise InputError("a key id is 16 hexadecimal digits, as minisign shows it")
    try:
        return bytes.fromhex(text)[::-1]
    except ValueError:
        raise InputError("a key id is 16 hexadecimal digits, as minisign shows it") from None


def _aware(when: datetime, what: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise InputError(f"the {what} must include a time zone (for example 2026-11-23T09:00Z)")
    return when.astimezone(UTC)


def format_time(when: datetime) -> str:
    """A time as shown in messages and files: ISO 8601 in UTC, to the second, with ``Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else _aware(now, "time")


@dataclass(frozen=True)
class SigningKeyRecord:
    """An Ed25519 signing key: the current one has its seed, earlier ones only the public key."""

    key_id: bytes
    public_key: bytes
    created_at: datetime
    retired_at: datetime | None = None
    revoked_at: datetime | None = None
    seed: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def key_id_hex(self) -> str:
        return format_key_id(self.key_id)

    @property
    def minisign_public_key(self) -> minisign.PublicKey:
        return minisign.PublicKey(key_id=self.key_id, key=self.public_key)


@dataclass(frozen=True)
class EncryptionKey:
    """An X25519 key pair (age's ``X25519`` recipient type)."""

    secret: bytes = field(repr=False, compare=False)
    public_key: bytes
    created_at: datetime
    retired_at: datetime | None = None

    @classmethod
    def from_secret(cls, secret: bytes, created_at: datetime) -> EncryptionKey:
        if len(secret) != 32:
            raise InputError("an X25519 private key must be 32 bytes")
        public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
        return cls(secret=secret, public_key=public, created_at=created_at)

    @property
    def recipient(self) -> str:
        """The ``age1…`` recipient others encrypt to."""
        return agekeys.encode_recipient(self.public_key)

    def private_key(self) -> X25519PrivateKey:
        """The key as a ``cryptography`` object, for decryption."""
        return X25519PrivateKey.from_private_bytes(self.secret)


def _new_signing_key(now: datetime) -> SigningKeyRecord:
    sk = SigningKey.generate()
    public = bytes(sk.verify_key)
    return SigningKeyRecord(
        key_id=derive_key_id(public),
        public_key=public,
        created_at=now,
        seed=bytes(sk),
    )


def _new_encryption_key(now: datetime) -> EncryptionKey:
    return EncryptionKey.from_secret(X25519PrivateKey.generate().private_bytes_raw(), now)


@dataclass(frozen=True)
class KeySet:
    """An organisation's current keys and the earlier ones it keeps."""

    org_id: str
    signing: SigningKeyRecord
    encryption: EncryptionKey
    previous_signing: tuple[SigningKeyRecord, ...] = ()
    previous_encryption: tuple[EncryptionKey, ...] = ()

    def __post_init__(self) -> None:
        validate_org_id(self.org_id)
        if self.signing.seed is None:
            raise KeySetFormatError("the current signing key has no secret part")
        if self.signing.retired_at is not None or self.encryption.retired_at is not None:
            raise KeySetFormatError("the current keys are marked as replaced")

    # ----------------------------------------------------------------- creation

    @classmethod
    def generate(cls, org_id: str, *, now: datetime | None = None) -> KeySet:
        """A new key set with fresh random keys."""
        when = _now(now)
        return cls(
            org_id=validate_org_id(org_id),
            signing=_new_signing_key(when),
            encryption=_new_encryption_key(when),
        )

    @classmethod
    def from_identity(cls, org_id: str, secret: bytes, *, now: datetime | None = None) -> KeySet:
        """A key set whose encryption key is an imported X25519 key (and a fresh signing key)."""
        when = _now(now)
        return cls(
            org_id=validate_org_id(org_id),
            signing=_new_signing_key(when),
            encryption=EncryptionKey.from_secret(secret, when),
        )

    # ------------------------------------------------------------ public facts

    @property
    def fingerprint(self) -> str:
        """The short fingerprint of the current keys, to read aloud (``ABCD-EFGH-JKMN-PQRS``)."""
        return _fingerprint(self.signing.public_key, self.encryption.public_key)

    @property
    def key_id_hex(self) -> str:
        """The current signing key's minisign key id."""
        return self.signing.key_id_hex

    @property
    def recipient(self) -> str:
        """The current ``age1…`` recipient."""
        return self.encryption.recipient

    @property
    def minisign_public_key(self) -> minisign.PublicKey:
        return self.signing.minisign_public_key

    def minisign_public_key_text(self) -> str:
        """The current signing key as a minisign public key file."""
        return self.minisign_public_key.to_text()

    # ----------------------------------------------------------------- signing

    def minisign_secret_key(self) -> minisign.SecretKey:
        """The current signing key, for :mod:`keys.minisign`."""
        if self.signing.seed is None:
            raise KeySetFormatError("the current signing key has no secret part")
        return minisign.SecretKey(seed=self.signing.seed, key_id=self.signing.key_id)

    def sign(self, message: bytes, *, trusted_comment: str) -> str:
        """Sign ``message`` with the current key; return the ``.minisig`` text."""
        return minisign.sign(self.minisign_secret_key(), message, trusted_comment=trusted_comment)

    def signing_keys(self) -> tuple[SigningKeyRecord, ...]:
        """Every signing key, current first."""
        return (self.signing, *self.previous_signing)

    def find_signing_key(self, key_id: bytes | str) -> SigningKeyRecord:
        wanted = parse_key_id(key_id)
        for record in self.signing_keys():
            if hmac.compare_digest(record.key_id, wanted):
                return record
        raise UnknownKeyError(
            f"organisation {self.org_id} has no signing key {format_key_id(wanted)}"
        )

    def check_signing_key_valid(self, key_id: bytes | str, at: datetime) -> SigningKeyRecord:
        """Check a signature by ``key_id`` dated ``at`` may be trusted; return the key.

        Raises :class:`KeyRevokedError` when ``at`` is at or after the key's
        revocation, :class:`KeyRetiredError` when after it was replaced,
        :class:`KeyNotYetValidError` when before it was made, and
        :class:`UnknownKeyError` when the key is not one of this organisation's.
        """
        when = _aware(at, "signature time")
        record = self.find_signing_key(key_id)
        if record.revoked_at is not None and when >= record.revoked_at:
            raise KeyRevokedError(
                f"signing key {record.key_id_hex} of {self.org_id} was revoked at "
                f"{format_time(record.revoked_at)}; a signature dated {format_time(when)} "
                "is refused"
            )
        if record.retired_at is not None and when > record.retired_at:
            raise KeyRetiredError(
                f"signing key {record.key_id_hex} of {self.org_id} was replaced at "
                f"{format_time(record.retired_at)}; a signature dated {format_time(when)} "
                "is refused"
            )
        if when < record.created_at:
            raise KeyNotYetValidError(
                f"signing key {record.key_id_hex} of {self.org_id} was made at "
                f"{format_time(record.created_at)}; a signature dated {format_time(when)}, "
                "before then, is refused"
            )
        return record

    def verify(
        self, message: bytes, signature: str | bytes, *, at: datetime
    ) -> minisign.VerifiedSignature:
        """Verify a signature by any of this organisation's signing keys, dated ``at``."""
        parsed = minisign.Signature.from_text(signature)
        record = self.check_signing_key_valid(parsed.key_id, at)
        return minisign.verify(record.minisign_public_key, message, parsed)

    # -------------------------------------------------------------- decryption

    def decryption_keys(self) -> tuple[EncryptionKey, ...]:
        """Every X25519 key that may open a package, current first."""
        return (self.encryption, *self.previous_encryption)

    def decryption_key_for(self, recipient: str) -> EncryptionKey:
        """The key of an ``age1…`` recipient, current or kept after rotation."""
        public = agekeys.decode_recipient(recipient)
        for key in self.decryption_keys():
            if hmac.compare_digest(key.public_key, public):
                return key
        raise UnknownKeyError(f"organisation {self.org_id} has no key for recipient {recipient}")

    # ---------------------------------------------------------------- changes

    def rotate(self, *, now: datetime | None = None) -> KeySet:
        """New current keys; the earlier encryption key is kept, the signing seed dropped."""
        when = _now(now)
        old_signing = replace(self.signing, retired_at=when, seed=None)
        old_encryption = replace(self.encryption, retired_at=when)
        return replace(
            self,
            signing=_new_signing_key(when),
            encryption=_new_encryption_key(when),
            previous_signing=(old_signing, *self.previous_signing),
            previous_encryption=(old_encryption, *self.previous_encryption),
        )

    def revoke(
        self, key_id: bytes | str | None = None, *, at: datetime, now: datetime | None = None
    ) -> KeySet:
        """Revoke a signing key (the current one by default) from ``at`` on.

        Revoking the current key also rotates. A revocation can be moved
        earlier but never later (that would make refused signatures valid).
        """
        revoked_at = _aware(at, "revocation time")
        target = self.signing if key_id is None else self.find_signing_key(key_id)
        if target.revoked_at is not None and revoked_at > target.revoked_at:
            raise KeyPolicyError(
                f"signing key {target.key_id_hex} is already revoked from "
                f"{format_time(target.revoked_at)}; a revocation can be moved earlier, not later"
            )
        if hmac.compare_digest(target.key_id, self.signing.key_id):
            rotated = self.rotate(now=now)
            old = replace(rotated.previous_signing[0], revoked_at=revoked_at)
            return replace(rotated, previous_signing=(old, *rotated.previous_signing[1:]))
        updated = tuple(
            replace(r, revoked_at=revoked_at) if hmac.compare_digest(r.key_id, target.key_id) else r
            for r in self.previous_signing
        )
        return replace(self, previous_signing=updated)

    def with_imported_identities(
        self, secrets: Iterable[bytes], *, now: datetime | None = None
    ) -> tuple[KeySet, int]:
        """Keep imported X25519 keys as earlier decryption keys; return the set and how many
        were new (keys already held are skipped)."""
        when = _now(now)
        known = [k.public_key for k in self.decryption_keys()]
        added: list[EncryptionKey] = []
        for secret in secrets:
            key = replace(EncryptionKey.from_secret(secret, when), retired_at=when)
            if any(hmac.compare_digest(key.public_key, p) for p in known):
                continue
            known.append(key.public_key)
            added.append(key)
        if not added:
            return self, 0
        return replace(self, previous_encryption=(*self.previous_encryption, *added)), len(added)

    # ---------------------------------------------------------- serialisation

    def public_summary(self) -> dict[str, Any]:
        """Everything about this key set that is not secret (for display and export)."""
        return {
            "org_id": self.org_id,
            "fingerprint": self.fingerprint,
            "recipient": self.recipient,
            "minisign_key_id": self.key_id_hex,
            "minisign_public_key": self.minisign_public_key.to_base64(),
            "signing_keys": [
                {
                    "key_id": r.key_id_hex,
                    "created_at": format_time(r.created_at),
                    "retired_at": _opt_time(r.retired_at),
                    "revoked_at": _opt_time(r.revoked_at),
                }
                for r in self.signing_keys()
            ],
            "encryption_keys": [
                {
                    "recipient": k.recipient,
                    "created_at": format_time(k.created_at),
                    "retired_at": _opt_time(k.retired_at),
                }
                for k in self.decryption_keys()
            ],
        }

    def to_private_dict(self) -> dict[str, Any]:
        """The whole key set, secrets included: only ever to be sealed, never stored as is."""
        return {
            "version": PAYLOAD_VERSION,
            "org_id": self.org_id,
            "signing": [_signing_to_dict(r) for r in self.signing_keys()],
            "encryption": [_encryption_to_dict(k) for k in self.decryption_keys()],
        }

    @classmethod
    def from_private_dict(cls, data: Mapping[str, Any]) -> KeySet:
        """Inverse of :meth:`to_private_dict`; raise :class:`KeySetFormatError` if malformed."""
        try:
            if data.get("version") != PAYLOAD_VERSION:
                raise KeySetFormatError("the key file's contents are of an unknown version")
            signing = [_signing_from_dict(d) for d in data["signing"]]
            encryption = [_encryption_from_dict(d) for d in data["encryption"]]
            if not signing or not encryption:
                raise KeySetFormatError("the key file holds no current keys")
            if any(r.seed is not None for r in signing[1:]):
                raise KeySetFormatError("the key file holds a secret for a replaced signing key")
            return cls(
                org_id=str(data["org_id"]),
                signing=signing[0],
                encryption=encryption[0],
                previous_signing=tuple(signing[1:]),
                previous_encryption=tuple(encryption[1:]),
            )
        except (KeyError, TypeError, ValueError, binascii.Error, InputError) as exc:
            if isinstance(exc, KeySetFormatError):
                raise
            raise KeySetFormatError("the key file's contents are damaged or incomplete") from None


def _opt_time(when: datetime | None) -> str | None:
    return None if when is None else format_time(when)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, size: int) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a string")
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != size:
        raise ValueError("wrong length")
    return raw


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def _from_iso(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError("not a time")
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("naive time")
    return when.astimezone(UTC)


def _opt_from_iso(text: object) -> datetime | None:
    return None if text is None else _from_iso(text)


def _signing_to_dict(r: SigningKeyRecord) -> dict[str, Any]:
    return {
        "key_id": r.key_id_hex,
        "public_key": _b64(r.public_key),
        "seed": None if r.seed is None else _b64(r.seed),
        "created_at": _iso(r.created_at),
        "retired_at": None if r.retired_at is None else _iso(r.retired_at),
        "revoked_at": None if r.revoked_at is None else _iso(r.revoked_at),
    }


def _signing_from_dict(d: Mapping[str, Any]) -> SigningKeyRecord:
    public = _unb64(d["public_key"], 32)
    seed = None if d["seed"] is None else _unb64(d["seed"], 32)
    if seed is not None and not hmac.compare_digest(bytes(SigningKey(seed).verify_key), public):
        raise KeySetFormatError("a signing key in the key file does not match its public key")
    return SigningKeyRecord(
        key_id=parse_key_id(str(d["key_id"])),
        public_key=public,
        created_at=_from_iso(d["created_at"]),
        retired_at=_opt_from_iso(d["retired_at"]),
        revoked_at=_opt_from_iso(d["revoked_at"]),
        seed=seed,
    )


def _encryption_to_dict(k: EncryptionKey) -> dict[str, Any]:
    return {
        "secret": _b64(k.secret),
        "created_at": _iso(k.created_at),
        "retired_at": None if k.retired_at is None else _iso(k.retired_at),
    }


def _encryption_from_dict(d: Mapping[str, Any]) -> EncryptionKey:
    key = EncryptionKey.from_secret(_unb64(d["secret"], 32), _from_iso(d["created_at"]))
    return replace(key, retired_at=_opt_from_iso(d["retired_at"]))
