"""age recipients and identities: X25519 keys and scrypt passphrases.

A *recipient* wraps a file key into header stanzas when encrypting; an
*identity* unwraps it when decrypting (``None`` when the stanzas are not for
it). Key strings use age's Bech32 forms: ``age1…`` and ``AGE-SECRET-KEY-1…``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keys import agekeys
from keys.agekeys import AgeKeyError
from transfer.age._format import FILE_KEY_SIZE, Stanza, b64decode, b64encode, hkdf
from transfer.age.errors import AgeHeaderError

X25519_TYPE = "X25519"
X25519_LABEL = b"age-encryption.org/v1/X25519"
SCRYPT_TYPE = "scrypt"
SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
#: Work factor written by default (log2 N), as age does.
SCRYPT_DEFAULT_LOG_N = 18
#: Highest work factor accepted when decrypting (log2 N = 22 needs 4 GiB and seconds).
SCRYPT_MAX_LOG_N = 22
_ZERO_NONCE = bytes(12)
_WRAPPED_KEY_SIZE = FILE_KEY_SIZE + 16
_DECIMAL = re.compile(r"[1-9][0-9]{0,8}")


@runtime_checkable
class Recipient(Protocol):
    """Something a file can be encrypted to."""

    def wrap(self, file_key: bytes) -> list[Stanza]: ...


@runtime_checkable
class Identity(Protocol):
    """Something that may open a file."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key, ``None`` if no stanza is for this identity.

        Raises :class:`AgeHeaderError` for a malformed stanza of its own type.
        """
        ...


def _stanza_error(kind: str) -> AgeHeaderError:
    return AgeHeaderError(
        f"the file is not a valid age-encrypted file (a {kind} recipient stanza is malformed)"
    )


class X25519Recipient:
    """An ``age1…`` public key."""

    __slots__ = ("_public", "_raw")

    def __init__(self, public_key: X25519PublicKey) -> None:
        self._public = public_key
        self._raw = public_key.public_bytes_raw()

    @classmethod
    def from_public_bytes(cls, data: bytes) -> X25519Recipient:
        if len(data) != 32:
            raise AgeKeyError("an X25519 public key must be 32 bytes")
        return cls(X25519PublicKey.from_public_bytes(data))

    @classmethod
    def from_string(cls, text: str) -> X25519Recipient:
        return cls.from_public_bytes(agekeys.decode_recipient(text))

    @property
    def public_bytes(self) -> bytes:
        return self._raw

    def to_string(self) -> str:
        return agekeys.encode_recipient(self._raw)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(self._public)
        key = hkdf(shared, share + self._raw, X25519_LABEL)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
        return [Stanza(X25519_TYPE, (b64encode(share).decode("ascii"),), body)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Recipient) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"X25519Recipient({self.to_string()!r})"

    def __str__(self) -> str:
        return self.to_string()


class X25519Identity:
    """An ``AGE-SECRET-KEY-1…`` private key. Its ``repr`` never shows the key."""

    __slots__ = ("_private", "_recipient")

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._private = private_key
        self._recipient = X25519Recipient(private_key.public_key())

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> X25519Identity:
        if len(data) != 32:
            raise AgeKeyError("an X25519 private key must be 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(data))

    @classmethod
    def from_string(cls, text: str) -> X25519Identity:
        return cls.from_private_bytes(agekeys.decode_identity(text))

    @property
    def recipient(self) -> X25519Recipient:
        return self._recipient

    def private_bytes(self) -> bytes:
        return self._private.private_bytes_raw()

    def to_string(self) -> str:
        return agekeys.encode_identity(self.private_bytes())

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != X25519_TYPE:
                continue
            if len(stanza.args) != 1:
                raise _stanza_error(X25519_TYPE)
            try:
                share = b64decode(stanza.args[0].encode("ascii"))
            except ValueError:
                raise _stanza_error(X25519_TYPE) from None
            if len(share) != 32 or len(stanza.body) != _WRAPPED_KEY_SIZE:
                raise _stanza_error(X25519_TYPE)
            try:
                shared = self._private.exchange(X25519PublicKey.from_public_bytes(share))
            except ValueError:
                # A low-order point gives an all-zero shared secret: refused by the spec.
                raise _stanza_error(X25519_TYPE) from None
            key = hkdf(shared, share + self._recipient.public_bytes, X25519_LABEL)
            try:
                return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, stanza.body, None)
            except InvalidTag:
                continue
        return None

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self._recipient.to_string()!r})"


def _scrypt_key(passphrase: bytes, salt: bytes, log_n: int) -> bytes:
    kdf = Scrypt(salt=SCRYPT_LABEL + salt, length=32, n=1 << log_n, r=8, p=1)
    return kdf.derive(passphrase)


def _check_passphrase(passphrase: bytes) -> None:
    if not isinstance(passphrase, bytes | bytearray):
        raise AgeKeyError("a passphrase must be given as bytes")
    if not passphrase:
        raise AgeKeyError("the passphrase must not be empty")


class ScryptRecipient:
    """A passphrase to encrypt to. It must be the file's only recipient."""

    __slots__ = ("_log_n", "_passphrase")

    def __init__(self, passphrase: bytes, log_n: int = SCRYPT_DEFAULT_LOG_N) -> None:
        _check_passphrase(passphrase)
        if not 1 <= log_n <= SCRYPT_MAX_LOG_N:
            raise AgeKeyError(f"the scrypt work factor must be between 1 and {SCRYPT_MAX_LOG_N}")
        self._passphrase = bytes(passphrase)
        self._log_n = log_n

    @property
    def log_n(self) -> int:
        return self._log_n

    def wrap(self, file_key: bytes) -> list[Stanza]:
        salt = os.urandom(16)
        key = _scrypt_key(self._passphrase, salt, self._log_n)
        body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
        return [Stanza(SCRYPT_TYPE, (b64encode(salt).decode("ascii"), str(self._log_n)), body)]

    def __repr__(self) -> str:
        return f"ScryptRecipient(log_n={self._log_n})"


class ScryptIdentity:
    """A passphrase to decrypt with; refuses work factors above ``max_log_n``."""

    __slots__ = ("_max_log_n", "_passphrase")

    def __init__(self, passphrase: bytes, max_log_n: int = SCRYPT_MAX_LOG_N) -> None:
        _check_passphrase(passphrase)
        self._passphrase = bytes(passphrase)
        self._max_log_n = max_log_n

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        for stanza in stanzas:
            if stanza.type != SCRYPT_TYPE:
                continue
            if len(stanzas) != 1:
                raise AgeHeaderError(
                    "the file is not a valid age-encrypted file "
                    "(a passphrase-protected file must have no other recipient)"
                )
            if len(stanza.args) != 2 or not _DECIMAL.fullmatch(stanza.args[1]):
                raise _stanza_error(SCRYPT_TYPE)
            try:
                salt = b64decode(stanza.args[0].encode("ascii"))
            except ValueError:
                raise _stanza_error(SCRYPT_TYPE) from None
            if len(salt) != 16 or len(stanza.body) != _WRAPPED_KEY_SIZE:
                raise _stanza_error(SCRYPT_TYPE)
            log_n = int(stanza.args[1])
            if log_n > self._max_log_n:
                raise AgeHeaderError(
                    "the file's passphrase protection asks for more work than allowed "
                    f"(scrypt work factor {log_n}, limit {self._max_log_n})"
                )
            key = _scrypt_key(self._passphrase, salt, log_n)
            try:
                return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, stanza.body, None)
            except InvalidTag:
                return None
        return None

    def __repr__(self) -> str:
        return "ScryptIdentity(<passphrase>)"


def parse_recipient(text: str) -> X25519Recipient:
    """An ``age1…`` recipient string (the only recipient type supported here)."""
    text = text.strip()
    if text.startswith(("ssh-", "sk-")):
        raise AgeKeyError("SSH keys are not supported as age recipients here; use an age1... key")
    return X25519Recipient.from_string(text)


def parse_identity(text: str) -> X25519Identity:
    """An ``AGE-SECRET-KEY-1…`` identity string (error messages never repeat it)."""
    text = text.strip()
    if text.upper().startswith("AGE-SECRET-KEY-PQ-"):
        raise AgeKeyError("post-quantum age identities are not supported")
    if text.upper().startswith("AGE-PLUGIN-"):
        raise AgeKeyError("age plugin identities are not supported")
    return X25519Identity.from_string(text)


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((number, line))
    return out


def read_identities_file(text: str) -> list[X25519Identity]:
    """The identities of an age identity file: one per line, ``#`` comments and blanks ignored."""
    identities = []
    for number, line in _lines(text):
        try:
            identities.append(parse_identity(line))
        except AgeKeyError as exc:
            raise AgeKeyError(f"identity file, line {number}: {exc.message}") from None
    if not identities:
        raise AgeKeyError("the identity file contains no identity")
    return identities


def read_recipients_file(text: str) -> list[X25519Recipient]:
    """The recipients of an age recipients file: one per line, ``#`` comments and blanks ignored."""
    recipients = []
    for number, line in _lines(text):
        try:
            recipients.append(parse_recipient(line))
        except AgeKeyError as exc:
            raise AgeKeyError(f"recipients file, line {number}: {exc.message}") from None
    if not recipients:
        raise AgeKeyError("the recipients file contains no recipient")
    return recipients
