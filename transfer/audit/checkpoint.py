"""C2SP signed notes and tlog checkpoints, with Ed25519 keys (PyNaCl).

A *signed note* (c2sp.org/signed-note) is UTF-8 text ending in a newline, a
blank line, then one or more signature lines::

    — <key name> <base64(key hash (4 bytes) || Ed25519 signature (64 bytes))>

where the key hash is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` and the
signature covers the text exactly (including its final newline). A verifier
key is written ``<name>+<hex key hash>+<base64(0x01 || public key)>``.

A *checkpoint* (c2sp.org/tlog-checkpoint) is a note whose text is the log's
origin line, the tree size in decimal, the base64 root hash and optional
extension lines. Pure module: bytes and text in, results out or an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from transfer.audit.merkle import HASH_SIZE
from transfer.errors import IntegrityError

ALG_ED25519 = 0x01
ED25519_SIGNATURE_SIZE = 64
SIG_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100


class NoteError(IntegrityError):
    """A signed note or checkpoint is malformed or its signature does not verify."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what} is not valid base64") from None


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"the key name {name!r} is empty or contains a space or '+'")


def key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte key id of an Ed25519 note key."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_hash: bytes
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_hash + self.signature).decode()
        return f"{SIG_PREFIX}{self.name} {blob}\n"


@dataclass(frozen=True)
class Verifier:
    """A note verifier key (the public half)."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """``<name>+<hex key hash>+<base64(0x01 || public key)>``."""
        material = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_hash.hex()}+{material}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        name, sep1, rest = vkey.partition("+")
        hash_hex, sep2, material_b64 = rest.partition("+")
        if not (sep1 and sep2) or len(hash_hex) != 8 or hash_hex != hash_hex.lower():
            raise NoteError("a verifier key must be <name>+<8 hex digits>+<base64 key>")
        try:
            want = bytes.fromhex(hash_hex)
        except ValueError:
            raise NoteError("the verifier key's key hash is not hexadecimal") from None
        material = _b64decode(material_b64, "the verifier key's key material")
        if len(material) != 33 or material[0] != ALG_ED25519:
            raise NoteError("the verifier key is not an Ed25519 key (0x01 and 32 bytes)")
        verifier = cls(name, material[1:])
        if verifier.key_hash != want:
            raise NoteError("the verifier key's key hash does not match its name and key")
        return verifier

    def verifies(self, text: str, sig: NoteSignature) -> bool:
        if sig.name != self.name or sig.key_hash != self.key_hash:
            return False
        if len(sig.signature) != ED25519_SIGNATURE_SIZE:
            return False  # PyNaCl would raise rather than say no
        try:
            VerifyKey(self.public_key).verify(text.encode("utf-8"), sig.signature)
        except BadSignatureError:
            return False
        return True


class Signer:
    """A note signer key (the private half)."""

    def __init__(self, name: str, seed: bytes) -> None:
        _check_name(name)
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self.name = name
        self._key = SigningKey(seed)
        self.verifier = Verifier(name, bytes(self._key.verify_key))

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, bytes(SigningKey.generate()))

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex hash>+<base64(0x01 || seed)>`` (Go's format)."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise NoteError("a signer key must be PRIVATE+KEY+<name>+<hash>+<key>")
        material = _b64decode(parts[4], "the signer key's key material")
        if len(material) != 33 or material[0] != ALG_ED25519:
            raise NoteError("the signer key is not an Ed25519 key")
        signer = cls(parts[2], material[1:])
        if signer.verifier.key_hash.hex() != parts[3]:
            raise NoteError("the signer key's key hash does not match its name and key")
        return signer

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def sign(self, text: str) -> NoteSignature:
        sig = self._key.sign(text.encode("utf-8")).signature
        return NoteSignature(self.name, self.verifier.key_hash, sig)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text must end with a newline")
    if "\n\n" in text or text.startswith("\n"):
        raise NoteError("a note's text must not contain a blank line")
    for c in text:
        if (c < " " and c != "\n") or c == "\x7f":
            raise NoteError("a note's text must not contain control characters")


@dataclass(frozen=True)
class SignedNote:
    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """The signed note for ``text`` (which must end in a newline)."""
    _check_text(text)
    if not signers:
        raise ValueError("a note needs at least one signer")
    return SignedNote(text, tuple(s.sign(text) for s in signers)).encode()


def parse_note(note: str) -> SignedNote:
    """Split a signed note into its text and signatures (no verification)."""
    if len(note) > 1_000_000:
        raise NoteError("the note is too large")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("a signed note needs its text, a blank line and signature lines")
    text, sig_block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    sigs: list[NoteSignature] = []
    for line in sig_block[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteError("a signature line must start with an em dash and a space")
        name, sep, blob_b64 = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or " " in blob_b64:
            raise NoteError("a signature line must be '— <name> <base64 signature>'")
        _check_name(name)
        blob = _b64decode(blob_b64, "a note signature")
        if len(blob) < 5:
            raise NoteError("a note signature is too short")
        sigs.append(NoteSignature(name, blob[:4], blob[4:]))
    if not sigs:
        raise NoteError("a signed note needs at least one signature")
    if len(sigs) > MAX_SIGNATURES:
        raise NoteError(f"a signed note may carry at most {MAX_SIGNATURES} signatures")
    return SignedNote(text, tuple(sigs))


def open_note(note: str, verifiers: Iterable[Verifier]) -> SignedNote:
    """Parse a note and require a valid signature from one of ``verifiers``.

    A signature that claims one of the given keys (same name and key hash) but
    does not verify is an error, not merely ignored; signatures by unknown keys
    are ignored.
    """
    parsed = parse_note(note)
    known = {(v.name, v.key_hash): v for v in verifiers}
    good = False
    for sig in parsed.signatures:
        v = known.get((sig.name, sig.key_hash))
        if v is None:
            continue
        if not v.verifies(parsed.text, sig):
            raise NoteError(f"the signature by {sig.name!r} on this note does not verify")
        good = True
    if not good:
        names = ", ".join(sorted(n for n, _ in known)) or "none given"
        raise NoteError(f"the note carries no signature by a trusted key ({names})")
    return parsed


# ---------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteError("a checkpoint's origin must be one non-empty line")
        if self.size < 0:
            raise NoteError("a checkpoint's tree size cannot be negative")
        if len(self.root) != HASH_SIZE:
            raise NoteError(f"a checkpoint's root hash must be {HASH_SIZE} bytes")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise NoteError("a checkpoint extension must be one non-empty line")

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"


def parse_checkpoint_text(text: str) -> Checkpoint:
    """Parse a checkpoint's body (the note text)."""
    _check_text(text)
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("a checkpoint needs an origin, a tree size and a root hash")
    origin, size_s, root_b64, *ext = lines
    if not size_s.isascii() or not size_s.isdigit() or (size_s != "0" and size_s[0] == "0"):
        raise NoteError(f"the checkpoint's tree size {size_s!r} is not a decimal number")
    root = _b64decode(root_b64, "the checkpoint's root hash")
    return Checkpoint(origin, int(size_s), root, tuple(ext))


def parse_checkpoint(note: str) -> tuple[SignedNote, Checkpoint]:
    """Parse a signed checkpoint without verifying it, or raise :class:`NoteError`.

    Besides the note and checkpoint syntax, the signature named after the log (its
    origin, which is how a log's key is named) must be an Ed25519 signature, 64 bytes:
    a checkpoint whose own signature cannot even be checked is malformed.
    """
    parsed = parse_note(note)
    checkpoint = parse_checkpoint_text(parsed.text)
    for sig in parsed.signatures:
        if sig.name == checkpoint.origin and len(sig.signature) != ED25519_SIGNATURE_SIZE:
            raise NoteError(
                f"the checkpoint's signature by {sig.name!r} is {len(sig.signature)} bytes, "
                f"not the {ED25519_SIGNATURE_SIZE} of an Ed25519 signature"
            )
    return parsed, checkpoint


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The checkpoint as a signed note."""
    return sign_note(checkpoint.text(), [signer])


def verify_checkpoint(note: str, verifier: Verifier, *, origin: str | None = None) -> Checkpoint:
    """Open a signed checkpoint with ``verifier`` and parse it, or raise :class:`NoteError`.

    ``origin`` (default: the verifier's name) must match the checkpoint's origin line.
    """
    parsed = open_note(note, [verifier])
    checkpoint = parse_checkpoint_text(parsed.text)
    want = verifier.name if origin is None else origin
    if checkpoint.origin != want:
        raise NoteError(f"the checkpoint is for the log {checkpoint.origin!r}, not {want!r}")
    return checkpoint
