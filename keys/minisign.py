"""The minisign signature format, on PyNaCl Ed25519.

Pure functions over bytes: no files are read or written except by the
``*_file`` helpers, which only read the file being signed or verified.

Formats (as written and read by ``minisign`` 0.11)::

    public key file:  untrusted comment: minisign public key <KEYID>\\n
                      base64("Ed" || key_id(8) || ed25519_pk(32))\\n

    signature file:   untrusted comment: <text>\\n
                      base64("ED" || key_id(8) || sig(64))\\n
                      trusted comment: <text>\\n
                      base64(global_sig(64))\\n

``sig`` is Ed25519 over BLAKE2b-512 of the file (the prehashed ``ED``
algorithm); ``global_sig`` is Ed25519 over ``sig || trusted comment``, so the
trusted comment cannot be changed without the signer's key. The untrusted
comment is not signed and must never be relied upon.

Domain separation: the format signs the raw file. Callers bind a signature to
its context by starting the trusted comment with a context label (for
example ``"handover-manifest-v1 package=..."``) and checking it after
verification with :meth:`VerifiedSignature.require_context`.

Verification never returns ``False``: it returns a :class:`VerifiedSignature`
or raises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from transfer.errors import InputError, IntegrityError

__all__ = [
    "KEY_ALGORITHM",
    "KEY_ID_SIZE",
    "LEGACY_SIGNATURE_ALGORITHM",
    "MAX_TRUSTED_COMMENT_BYTES",
    "MAX_UNTRUSTED_COMMENT_BYTES",
    "SIGNATURE_ALGORITHM",
    "KeyMismatchError",
    "MinisignFormatError",
    "PublicKey",
    "SecretKey",
    "Signature",
    "SignatureError",
    "VerifiedSignature",
    "new_prehash",
    "sign",
    "sign_file",
    "sign_prehashed",
    "sign_stream",
    "verify",
    "verify_file",
    "verify_prehashed",
    "verify_stream",
]

#: Algorithm tag of a public key (Ed25519).
KEY_ALGORITHM = b"Ed"
#: Algorithm tag of a prehashed signature (Ed25519 over BLAKE2b-512): the only one we write.
SIGNATURE_ALGORITHM = b"ED"
#: Algorithm tag of minisign's legacy, non-prehashed signature.
LEGACY_SIGNATURE_ALGORITHM = b"Ed"
KEY_ID_SIZE = 8
PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
PREHASH_SIZE = 64

UNTRUSTED_PREFIX = "untrusted comment: "
TRUSTED_PREFIX = "trusted comment: "
#: minisign reads the untrusted comment line into 1024 bytes (prefix and newline included).
MAX_UNTRUSTED_COMMENT_BYTES = 1000
#: minisign reads the trusted comment line into 8192 bytes (prefix and newline included).
MAX_TRUSTED_COMMENT_BYTES = 8192 - len(TRUSTED_PREFIX) - 2

_READ_CHUNK = 1024 * 1024


class MinisignFormatError(InputError):
    """A minisign key or signature file is malformed."""


class SignatureError(IntegrityError):
    """A signature did not verify: the file, trusted comment or key is not what was signed."""


class KeyMismatchError(SignatureError):
    """The signature was made by a different key from the one expected."""


def _key_id_text(key_id: bytes) -> str:
    # minisign shows the key id as a little-endian 64-bit number in upper-case hex.
    return key_id[::-1].hex().upper()


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MinisignFormatError(f"the {what} is not valid base64") from None


def _check_comment(text: str, limit: int, what: str) -> bytes:
    if any(c in text for c in "\r\n\x00"):
        raise InputError(f"a minisign {what} must be a single line of text")
    raw = text.encode("utf-8")
    if len(raw) > limit:
        raise InputError(f"a minisign {what} is longer than {limit} bytes")
    return raw


@dataclass(frozen=True)
class PublicKey:
    """A minisign (Ed25519) public key and its 8-byte key id."""

    key_id: bytes
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key_id) != KEY_ID_SIZE or len(self.key) != PUBLIC_KEY_SIZE:
            raise MinisignFormatError("a minisign public key must be an 8-byte id and 32-byte key")

    @property
    def key_id_hex(self) -> str:
        """The key id as minisign prints it (16 upper-case hex digits)."""
        return _key_id_text(self.key_id)

    def to_base64(self) -> str:
        """The one-line form accepted by ``minisign -P``."""
        return base64.b64encode(KEY_ALGORITHM + self.key_id + self.key).decode("ascii")

    def to_text(self, untrusted_comment: str | None = None) -> str:
        """The public key file (``minisign.pub``), as ``minisign -G`` writes it."""
        comment = untrusted_comment or f"minisign public key {self.key_id_hex}"
        _check_comment(comment, MAX_UNTRUSTED_COMMENT_BYTES, "untrusted comment")
        return f"{UNTRUSTED_PREFIX}{comment}\n{self.to_base64()}\n"

    @classmethod
    def from_base64(cls, text: str) -> PublicKey:
        """Parse the one-line base64 form (``minisign -P``)."""
        raw = _b64decode(text, "minisign public key")
        if len(raw) != 2 + KEY_ID_SIZE + PUBLIC_KEY_SIZE:
            raise MinisignFormatError("the minisign public key has the wrong length")
        if raw[:2] != KEY_ALGORITHM:
            raise MinisignFormatError("the minisign public key is not an Ed25519 key")
        return cls(key_id=raw[2:10], key=raw[10:])

    @classmethod
    def from_text(cls, text: str | bytes) -> PublicKey:
        """Parse a public key file (an optional untrusted comment line, then the key)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise MinisignFormatError("the minisign public key file is not text") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines and lines[0].startswith("untrusted comment:"):
            lines = lines[1:]
        if len(lines) != 1:
            raise MinisignFormatError(
                "the minisign public key file should hold one comment line and one key line"
            )
        return cls.from_base64(lines[0])

    def matches(self, other: PublicKey) -> bool:
        """Whether two public keys are the same (id and key)."""
        return hmac.compare_digest(self.key_id + self.key, other.key_id + other.key)


@dataclass(frozen=True)
class SecretKey:
    """An Ed25519 signing key (32-byte seed) with its minisign key id."""

    seed: bytes = field(repr=False)
    key_id: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise InputError("an Ed25519 signing key seed must be 32 bytes")
        if len(self.key_id) != KEY_ID_SIZE:
            raise InputError("a minisign key id must be 8 bytes")

    @classmethod
    def generate(cls, key_id: bytes | None = None) -> SecretKey:
        """A fresh key; a random key id unless one is given (minisign's own choice)."""
        return cls(seed=os.urandom(SEED_SIZE), key_id=key_id or os.urandom(KEY_ID_SIZE))

    @property
    def public_key(self) -> PublicKey:
        verify_key = SigningKey(self.seed).verify_key
        return PublicKey(key_id=self.key_id, key=bytes(verify_key))

    @property
    def key_id_hex(self) -> str:
        return _key_id_text(self.key_id)

    def _sign(self, message: bytes) -> bytes:
        return SigningKey(self.seed).sign(message).signature


@dataclass(frozen=True)
class Signature:
    """A parsed ``.minisig`` file (not yet verified)."""

    algorithm: bytes
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes
    untrusted_comment: str

    @property
    def key_id_hex(self) -> str:
        return _key_id_text(self.key_id)

    def to_text(self) -> str:
        """The ``.minisig`` text, as minisign writes it."""
        sig_line = base64.b64encode(self.algorithm + self.key_id + self.signature).decode("ascii")
        glob_line = base64.b64encode(self.global_signature).decode("ascii")
        return (
            f"{UNTRUSTED_PREFIX}{self.untrusted_comment}\n{sig_line}\n"
            f"{TRUSTED_PREFIX}{self.trusted_comment}\n{glob_line}\n"
        )

    @classmethod
    def from_text(cls, text: str | bytes) -> Signature:
        """Parse a ``.minisig`` file; raise :class:`MinisignFormatError` if malformed."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise MinisignFormatError(
                    "the signature file is not UTF-8 text (or is not a signature file)"
                ) from None
        lines = text.replace("\r\n", "\n").split("\n")
        while lines and lines[-1] == "":
            lines.pop()
        if len(lines) != 4:
            raise MinisignFormatError(
                "the signature file should have exactly four lines (is it a .minisig file?)"
            )
        untrusted, sig_line, trusted, glob_line = lines
        if not untrusted.startswith(UNTRUSTED_PREFIX):
            raise MinisignFormatError(
                "the signature file's first line should start with 'untrusted comment: '"
            )
        if not trusted.startswith(TRUSTED_PREFIX):
            raise MinisignFormatError(
                "the signature file's third line should start with 'trusted comment: '"
            )
        untrusted_comment = untrusted[len(UNTRUSTED_PREFIX) :]
        trusted_comment = trusted[len(TRUSTED_PREFIX) :]
        if len(untrusted_comment.encode("utf-8")) > MAX_UNTRUSTED_COMMENT_BYTES:
            raise MinisignFormatError("the signature file's untrusted comment is too long")
        if len(trusted_comment.encode("utf-8")) > MAX_TRUSTED_COMMENT_BYTES:
            raise MinisignFormatError("the signature file's trusted comment is too long")
        raw = _b64decode(sig_line, "signature line")
        if len(raw) != 2 + KEY_ID_SIZE + ED25519_SIGNATURE_SIZE:
            raise MinisignFormatError("the signature line has the wrong length")
        algorithm = raw[:2]
        if algorithm not in (SIGNATURE_ALGORITHM, LEGACY_SIGNATURE_ALGORITHM):
            raise MinisignFormatError("the signature uses an unknown algorithm")
        global_signature = _b64decode(glob_line, "global signature line")
        if len(global_signature) != ED25519_SIGNATURE_SIZE:
            raise MinisignFormatError("the global signature line has the wrong length")
        return cls(
            algorithm=algorithm,
            key_id=raw[2:10],
            signature=raw[10:],
            trusted_comment=trusted_comment,
            global_signature=global_signature,
            untrusted_comment=untrusted_comment,
        )


@dataclass(frozen=True)
class VerifiedSignature:
    """What a successful verification established."""

    key_id: bytes
    #: The signed trusted comment (the context and any signed metadata).
    trusted_comment: str
    #: Whether the signature used the prehashed ``ED`` algorithm.
    prehashed: bool

    @property
    def key_id_hex(self) -> str:
        return _key_id_text(self.key_id)

    def require_context(self, context: str) -> str:
        """Check the trusted comment starts with ``context`` (then a space or its end).

        Returns the rest of the trusted comment. Raises :class:`SignatureError`
        when the signature was made for another purpose.
        """
        tc = self.trusted_comment
        if tc == context:
            return ""
        if tc.startswith(context + " "):
            return tc[len(context) + 1 :]
        raise SignatureError(
            f"the signature is valid but was made for another purpose (expected {context!r})"
        )


def new_prehash() -> hashlib.blake2b:
    """A BLAKE2b-512 hash to update over the chunks of a large file."""
    return hashlib.blake2b(digest_size=PREHASH_SIZE)


def _default_untrusted(secret: SecretKey) -> str:
    return f"signature from handover key {secret.key_id_hex}"


def sign_prehashed(
    secret: SecretKey,
    digest: bytes,
    *,
    trusted_comment: str,
    untrusted_comment: str | None = None,
) -> str:
    """Sign a BLAKE2b-512 ``digest`` (from :func:`new_prehash`); return the ``.minisig`` text."""
    if len(digest) != PREHASH_SIZE:
        raise InputError("a minisign prehash must be a 64-byte BLAKE2b-512 digest")
    tc_raw = _check_comment(trusted_comment, MAX_TRUSTED_COMMENT_BYTES, "trusted comment")
    uc = _default_untrusted(secret) if untrusted_comment is None else untrusted_comment
    _check_comment(uc, MAX_UNTRUSTED_COMMENT_BYTES, "untrusted comment")
    sig = secret._sign(digest)
    global_sig = secret._sign(sig + tc_raw)
    return Signature(
        algorithm=SIGNATURE_ALGORITHM,
        key_id=secret.key_id,
        signature=sig,
        trusted_comment=trusted_comment,
        global_signature=global_sig,
        untrusted_comment=uc,
    ).to_text()


def sign(
    secret: SecretKey,
    message: bytes,
    *,
    trusted_comment: str,
    untrusted_comment: str | None = None,
) -> str:
    """Sign ``message`` (prehashed ``ED``); return the ``.minisig`` text."""
    h = new_prehash()
    h.update(message)
    return sign_prehashed(
        secret, h.digest(), trusted_comment=trusted_comment, untrusted_comment=untrusted_comment
    )


def sign_stream(
    secret: SecretKey,
    chunks: Iterable[bytes],
    *,
    trusted_comment: str,
    untrusted_comment: str | None = None,
) -> str:
    """Sign the concatenation of ``chunks`` without holding it in memory."""
    h = new_prehash()
    for chunk in chunks:
        h.update(chunk)
    return sign_prehashed(
        secret, h.digest(), trusted_comment=trusted_comment, untrusted_comment=untrusted_comment
    )


def _file_chunks(path: Path) -> Iterable[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            yield chunk


def sign_file(
    secret: SecretKey,
    path: str | os.PathLike[str],
    *,
    trusted_comment: str,
    untrusted_comment: str | None = None,
) -> str:
    """Sign the file at ``path``, reading it in 1 MiB chunks."""
    return sign_stream(
        secret,
        _file_chunks(Path(path)),
        trusted_comment=trusted_comment,
        untrusted_comment=untrusted_comment,
    )


def _parse(signature: str | bytes | Signature) -> Signature:
    return signature if isinstance(signature, Signature) else Signature.from_text(signature)


def _ed25519_ok(public: bytes, message: bytes, sig: bytes) -> bool:
    try:
        VerifyKey(public).verify(message, sig)
    except (CryptoError, ValueError, TypeError):
        return False
    return True


def _verify_parsed(public: PublicKey, sig: Signature, signed: bytes) -> VerifiedSignature:
    if not hmac.compare_digest(sig.key_id, public.key_id):
        raise KeyMismatchError(
            f"the signature was made by key {sig.key_id_hex}, "
            f"not by the expected key {public.key_id_hex}"
        )
    if not _ed25519_ok(public.key, signed, sig.signature):
        raise SignatureError(
            "the file does not match its signature: it was altered, or it is not the file "
            "that was signed"
        )
    tc_raw = sig.trusted_comment.encode("utf-8")
    if not _ed25519_ok(public.key, sig.signature + tc_raw, sig.global_signature):
        raise SignatureError("the signature's trusted comment was altered after signing")
    return VerifiedSignature(
        key_id=sig.key_id,
        trusted_comment=sig.trusted_comment,
        prehashed=sig.algorithm == SIGNATURE_ALGORITHM,
    )


def _refuse_legacy() -> SignatureError:
    return SignatureError(
        "the signature is in minisign's legacy (non-prehashed) format, which is not accepted "
        "here; sign again without -l"
    )


def verify_prehashed(
    public: PublicKey, digest: bytes, signature: str | bytes | Signature
) -> VerifiedSignature:
    """Verify a prehashed (``ED``) signature against a BLAKE2b-512 ``digest``."""
    if len(digest) != PREHASH_SIZE:
        raise InputError("a minisign prehash must be a 64-byte BLAKE2b-512 digest")
    sig = _parse(signature)
    if sig.algorithm != SIGNATURE_ALGORITHM:
        raise _refuse_legacy()
    return _verify_parsed(public, sig, digest)


def verify(
    public: PublicKey,
    message: bytes,
    signature: str | bytes | Signature,
    *,
    allow_legacy: bool = False,
) -> VerifiedSignature:
    """Verify ``signature`` over ``message`` by ``public``; raise if it does not verify.

    Legacy (non-prehashed ``Ed``) signatures are refused unless ``allow_legacy``.
    """
    sig = _parse(signature)
    if sig.algorithm == LEGACY_SIGNATURE_ALGORITHM:
        if not allow_legacy:
            raise _refuse_legacy()
        return _verify_parsed(public, sig, message)
    h = new_prehash()
    h.update(message)
    return _verify_parsed(public, sig, h.digest())


def verify_stream(
    public: PublicKey, chunks: Iterable[bytes], signature: str | bytes | Signature
) -> VerifiedSignature:
    """Verify a prehashed signature over the concatenation of ``chunks``."""
    sig = _parse(signature)
    if sig.algorithm != SIGNATURE_ALGORITHM:
        raise _refuse_legacy()
    h = new_prehash()
    for chunk in chunks:
        h.update(chunk)
    return _verify_parsed(public, sig, h.digest())


def verify_file(
    public: PublicKey, path: str | os.PathLike[str], signature: str | bytes | Signature
) -> VerifiedSignature:
    """Verify a prehashed signature over the file at ``path``, read in chunks."""
    sig = _parse(signature)
    return verify_stream(public, _file_chunks(Path(path)), sig)
