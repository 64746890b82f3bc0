"""The plaintext layer of a package: the tar stream inside the age encryption.

Writing (:func:`write_package_tar`, with :func:`sign_manifest`) and reading
with every check (:func:`read_package_tar`), over file-like objects. The age
layer around it is in :mod:`transfer.package.build` and
:mod:`transfer.package.open`. Pure: no files, no network, no age.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from keys import minisign
from keys.fingerprint import fingerprint, fingerprints_match
from keys.keyset import KeySet, UnknownKeyError, parse_key_id
from schemas.manifest import (
    MANIFEST_PATH,
    MAX_ENTRIES,
    SIGNATURE_PATH,
    Manifest,
    ManifestDecodeError,
    ManifestEntry,
    canonical_json,
)
from transfer.errors import InputError
from transfer.package.errors import (
    ALTERED,
    EntryMismatchError,
    NotAddressedToUsError,
    PackageFormatError,
    PackageLimitError,
    PackageTamperedError,
    UnknownSenderError,
    UnsafeTarError,
)
from transfer.package.tar import TarReader, TarWriter

__all__ = [
    "DEFAULT_LIMITS",
    "MANIFEST_CONTEXT",
    "Addressee",
    "EntrySource",
    "KeySetSenderKeys",
    "Limits",
    "OnEntry",
    "PinnedSenderKey",
    "SenderKeys",
    "VerifiedPackage",
    "check_sources",
    "manifest_trusted_comment",
    "read_package_tar",
    "sign_manifest",
    "write_package_tar",
]

#: The context label that starts the trusted comment of every manifest signature.
MANIFEST_CONTEXT = "handover-manifest-v1"
_CHUNK = 64 * 1024

#: Called for each entry with its manifest entry and its bytes (checked as they stream).
OnEntry = Callable[[ManifestEntry, Iterator[bytes]], None]


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _chunks_of(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), _CHUNK):
        yield bytes(view[i : i + _CHUNK])


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


@dataclass(frozen=True)
class EntrySource:
    """One file to put in a package: its path, declared size and SHA-256, and its bytes.

    ``opener`` is called once, while the package is written, and returns the
    bytes as an iterable of chunks (a generator, a list, a file read in a loop).
    The build counts them and hashes them, and stops if they are not the declared
    size and SHA-256 (:func:`write_package_tar`).

    ``self_checking``: the opener checks the bytes against ``sha256`` itself and raises,
    at the latest when its chunks run out, if they differ (the store's document reader does:
    every stored document is authenticated and hashed as it is decrypted). The build
    then only counts them, so each byte is hashed once, not twice.
    """

    path: str
    size: int
    sha256: str
    opener: Callable[[], Iterable[bytes]]
    self_checking: bool = False

    @property
    def entry(self) -> ManifestEntry:
        """The manifest entry (validates the path, size and hash)."""
        return ManifestEntry(path=self.path, size=self.size, sha256=self.sha256)

    @classmethod
    def from_bytes(cls, path: str, data: bytes) -> EntrySource:
        """An entry of small, in-memory bytes (a record)."""
        frozen = bytes(data)
        return cls(
            path=path,
            size=len(frozen),
            sha256=hashlib.sha256(frozen).hexdigest(),
            opener=lambda: _chunks_of(frozen),
        )

    @classmethod
    def from_json(
        cls, path: str, value: BaseModel | Mapping[str, Any] | Sequence[Any]
    ) -> EntrySource:
        """A JSON record in canonical form (sorted keys, compact, UTF-8)."""
        raw = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return cls.from_bytes(path, canonical_json(raw))

    @classmethod
    def from_file(cls, path: str, file: Path) -> EntrySource:
        """An entry read from a file (hashed now; read again, and checked, when written)."""
        digest = hashlib.sha256()
        size = 0
        for chunk in _file_chunks(file):
            digest.update(chunk)
            size += len(chunk)
        return cls(
            path=path, size=size, sha256=digest.hexdigest(), opener=lambda: _file_chunks(file)
        )


def manifest_trusted_comment(manifest: Manifest, manifest_bytes: bytes) -> str:
    """The signed context of a manifest signature (shown by ``minisign -V``)."""
    return (
        f"{MANIFEST_CONTEXT} package={manifest.package_id} "
        f"recipient={manifest.recipient.org_id} "
        f"sha256={hashlib.sha256(manifest_bytes).hexdigest()}"
    )


def sign_manifest(manifest: Manifest, signer: minisign.SecretKey) -> tuple[bytes, str]:
    """The canonical manifest bytes and their ``.minisig`` text."""
    if manifest.sender.signing_key_id != signer.key_id_hex:
        raise InputError(
            f"the manifest names signing key {manifest.sender.signing_key_id}, "
            f"but the package is being signed with key {signer.key_id_hex}"
        )
    data = manifest.canonical_bytes()
    signature = minisign.sign(
        signer,
        data,
        trusted_comment=manifest_trusted_comment(manifest, data),
        untrusted_comment=f"handover package manifest, signed by {manifest.sender.org_id}",
    )
    return data, signature


def check_sources(manifest: Manifest, entries: Sequence[EntrySource]) -> None:
    declared = tuple(e.entry for e in entries)
    if declared != manifest.entries:
        raise InputError("the entries given do not match the manifest's entries (path, size, hash)")


def write_package_tar(
    tar_out: _Writable,
    manifest: Manifest,
    manifest_bytes: bytes,
    signature: str,
    entries: Sequence[EntrySource],
) -> None:
    """Write the plaintext tar stream: manifest, signature, then every entry, checked.

    Raises :class:`EntryMismatchError` if an entry's bytes are not what it declared.
    """
    check_sources(manifest, entries)
    tar = TarWriter(tar_out, mtime=int(manifest.created_at.timestamp()))
    tar.add(MANIFEST_PATH, len(manifest_bytes), [manifest_bytes])
    sig_bytes = signature.encode("utf-8")
    tar.add(SIGNATURE_PATH, len(sig_bytes), [sig_bytes])
    for source in entries:
        if source.self_checking:  # hashed and checked by its opener
            tar.add(source.path, source.size, source.opener(), hash_data=False)
            continue
        digest = tar.add(source.path, source.size, source.opener())
        if digest != source.sha256:
            raise EntryMismatchError(
                f"{source.path} does not match its declared SHA-256 (it changed while the "
                "package was being made); the package was not made"
            )
    tar.close()


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    """What this node accepts. Every limit is checked before the bytes it limits are read."""

    max_manifest_bytes: int = 8 * 1024 * 1024
    max_signature_bytes: int = 16 * 1024
    max_entries: int = MAX_ENTRIES
    #: Plaintext tar stream, headers and padding included.
    max_total_bytes: int = 16 * 1024**3


DEFAULT_LIMITS = Limits()


# ----------------------------------------------------------------- who is who


class SenderKeys(Protocol):
    """Where the sender's known signing keys come from (a pinned file, the directory)."""

    def signing_key(self, org_id: str | None, key_id: str, at: datetime) -> minisign.PublicKey:
        """The public key ``key_id`` of ``org_id`` (``None``: claimed sender unknown), valid at
        ``at``. Raises :class:`UnknownSenderError`, or a ``PolicyError`` (revoked key)."""
        ...


def _unknown(org_id: str | None, key_id: str) -> UnknownSenderError:
    who = f"the sender {org_id}" if org_id else "its sender"
    return UnknownSenderError(
        f"the package is signed with key {key_id}, which is not a known key of {who}; "
        "check the sender's key and pass it with --sender-key"
    )


@dataclass(frozen=True)
class PinnedSenderKey:
    """One minisign public key given explicitly (``--sender-key FILE``).

    With ``org_id`` the package must also claim that sender.
    """

    public_key: minisign.PublicKey
    org_id: str | None = None

    def signing_key(self, org_id: str | None, key_id: str, at: datetime) -> minisign.PublicKey:
        if self.public_key.key_id_hex != key_id:
            raise _unknown(org_id, key_id)
        if self.org_id is not None and org_id is not None and org_id != self.org_id:
            raise UnknownSenderError(
                f"the package claims to come from {org_id}, but the key given is {self.org_id}'s"
            )
        return self.public_key


@dataclass(frozen=True)
class KeySetSenderKeys:
    """Senders' key sets (the node's own organisations or directory entries), with revocation."""

    keysets: Mapping[str, KeySet]

    def signing_key(self, org_id: str | None, key_id: str, at: datetime) -> minisign.PublicKey:
        candidates: list[KeySet]
        if org_id is None:
            candidates = list(self.keysets.values())
        else:
            candidates = [self.keysets[org_id]] if org_id in self.keysets else []
        wanted = parse_key_id(key_id)
        for keyset in candidates:
            try:
                keyset.find_signing_key(wanted)
            except UnknownKeyError:
                continue
            return keyset.check_signing_key_valid(wanted, at).minisign_public_key
        raise _unknown(org_id, key_id)


@dataclass(frozen=True)
class Addressee:
    """Who we are: the organisation and the key fingerprints a package may be addressed to."""

    org_id: str
    fingerprints: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_keyset(cls, keyset: KeySet) -> Addressee:
        """Our organisation and the fingerprint of every pair of keys we hold (current and
        earlier), so a package addressed to a key we rotated out still opens."""
        prints = frozenset(
            fingerprint(s.public_key, e.public_key)
            for s in keyset.signing_keys()
            for e in keyset.decryption_keys()
        )
        return cls(org_id=keyset.org_id, fingerprints=prints)

    def check(self, manifest: Manifest) -> None:
        to = manifest.recipient
        if to.org_id != self.org_id:
            raise NotAddressedToUsError(
                f"this package is addressed to another organisation ({to.org_id}), "
                f"not to {self.org_id}"
            )
        if not any(fingerprints_match(to.key_fingerprint, fp) for fp in self.fingerprints):
            raise NotAddressedToUsError(
                f"this package is addressed to {to.org_id} with key fingerprint "
                f"{to.key_fingerprint}, which is not one of our keys"
            )


# ------------------------------------------------------------------- results


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose manifest is signed by the known sender key and addressed to us.

    From :func:`verify_package` and :func:`open_package` every entry was also
    checked (``entries_checked``); from :func:`inspect_package` only the manifest.
    """

    manifest: Manifest
    manifest_bytes: bytes
    signature: minisign.VerifiedSignature
    #: The ``manifest.json.minisig`` text as received.
    signature_text: str
    entries_checked: bool
    #: SHA-256 and size of the ciphertext read (``None`` when not read to its end).
    ciphertext_sha256: str | None = None
    ciphertext_size: int | None = None

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    def summary(self) -> str:
        m = self.manifest
        return (
            f"package {m.package_id} ({m.kind}) from {m.sender.org_id} to {m.recipient.org_id}: "
            f"{len(m.entries)} entries, {m.total_size} bytes"
        )


# ------------------------------------------------------------- the tar level


def _read_signed_manifest(
    tar: TarReader, *, sender_keys: SenderKeys, addressee: Addressee | None, limits: Limits
) -> tuple[Manifest, bytes, minisign.VerifiedSignature, str]:
    first = tar.next()
    if first is None or first.path != MANIFEST_PATH:
        found = "nothing" if first is None else first.path
        raise PackageFormatError(
            f"the package does not start with {MANIFEST_PATH} (it starts with {found})"
        )
    if first.size > limits.max_manifest_bytes:
        raise PackageLimitError(
            f"the package's manifest is {first.size} bytes, over the limit of "
            f"{limits.max_manifest_bytes}"
        )
    manifest_bytes = tar.read_all()
    second = tar.next()
    if second is None or second.path != SIGNATURE_PATH:
        raise PackageFormatError(
            f"the package has no manifest signature ({SIGNATURE_PATH} must follow {MANIFEST_PATH})"
        )
    if second.size > limits.max_signature_bytes:
        raise PackageFormatError("the package's manifest signature is too large to be one")
    try:
        signature_text = tar.read_all().decode("utf-8")
        signature = minisign.Signature.from_text(signature_text)
    except UnicodeDecodeError:
        raise PackageFormatError("the package's manifest signature is not text") from None
    except minisign.MinisignFormatError as exc:
        raise PackageFormatError(f"the package's manifest signature is malformed: {exc}") from None
    key_id = signature.key_id_hex

    manifest: Manifest | None
    problem: ManifestDecodeError | None = None
    try:
        manifest = Manifest.from_bytes(manifest_bytes)
    except ManifestDecodeError as exc:
        manifest, problem = None, exc

    # The claimed signing time (for revocation) is the manifest's creation time.
    at = manifest.created_at if manifest is not None else datetime.now().astimezone()
    public = sender_keys.signing_key(
        manifest.sender.org_id if manifest is not None else None, key_id, at
    )
    try:
        verified = minisign.verify(public, manifest_bytes, signature)
    except minisign.SignatureError:
        raise PackageTamperedError(
            f"{ALTERED} (the manifest does not match its signature)"
        ) from None
    if manifest is None:
        raise PackageFormatError(f"the sender signed a manifest that is not valid: {problem}")
    if manifest.sender.signing_key_id != verified.key_id_hex:
        raise PackageFormatError(
            f"the manifest names signing key {manifest.sender.signing_key_id} but is signed "
            f"with key {verified.key_id_hex}"
        )
    try:
        rest = verified.require_context(MANIFEST_CONTEXT)
    except minisign.SignatureError:
        raise PackageFormatError(
            f"the manifest's signature was made for another purpose (not {MANIFEST_CONTEXT})"
        ) from None
    expected = (
        f"package={manifest.package_id} recipient={manifest.recipient.org_id} "
        f"sha256={hashlib.sha256(manifest_bytes).hexdigest()}"
    )
    if not hmac.compare_digest(rest.encode("utf-8"), expected.encode("utf-8")):
        raise PackageTamperedError(
            f"{ALTERED} (the signature's trusted comment names another package or manifest)"
        )
    if addressee is not None:
        addressee.check(manifest)
    if len(manifest.entries) > limits.max_entries:
        raise PackageLimitError(
            f"the package has {len(manifest.entries)} entries, over the limit of "
            f"{limits.max_entries}"
        )
    if manifest.total_size > limits.max_total_bytes:
        raise PackageLimitError(
            f"the package's entries add up to {manifest.total_size} bytes, over the limit of "
            f"{limits.max_total_bytes}"
        )
    return manifest, manifest_bytes, verified, signature_text


def _checked_data(tar: TarReader, entry: ManifestEntry) -> Iterator[bytes]:
    digest = hashlib.sha256()
    for chunk in tar.iter_data():
        digest.update(chunk)
        yield chunk
    if not hmac.compare_digest(digest.hexdigest(), entry.sha256):
        raise PackageTamperedError(
            f"{ALTERED} ({entry.path} does not match its SHA-256 in the manifest)"
        )


def _read_entries(tar: TarReader, manifest: Manifest, on_entry: OnEntry | None) -> None:
    expected = list(manifest.entries)
    listed = {e.path for e in expected}
    seen: set[str] = set()
    index = 0
    while (member := tar.next()) is not None:
        if member.path in seen or member.path in (MANIFEST_PATH, SIGNATURE_PATH):
            raise UnsafeTarError(f"the package holds {member.path} twice")
        if member.path not in listed:
            raise PackageTamperedError(
                f"{ALTERED} (it holds {member.path}, which the signed manifest does not list)"
            )
        entry = expected[index]
        if member.path != entry.path:
            raise PackageFormatError(
                f"the package's entries are not in the manifest's order "
                f"(found {member.path} where {entry.path} was expected)"
            )
        if member.size != entry.size:
            raise PackageTamperedError(
                f"{ALTERED} ({entry.path} is {member.size} bytes, the manifest says {entry.size})"
            )
        seen.add(member.path)
        index += 1
        stream = _checked_data(tar, entry)
        if on_entry is not None:
            on_entry(entry, stream)
        for _ in stream:  # drain what the caller did not read; checks the hash
            pass
    if index < len(expected):
        raise PackageTamperedError(
            f"{ALTERED} ({expected[index].path}, listed in the manifest, is missing)"
        )
    tar.finish()


def read_package_tar(
    plain: _Readable,
    *,
    sender_keys: SenderKeys,
    addressee: Addressee | None,
    limits: Limits = DEFAULT_LIMITS,
    on_entry: OnEntry | None = None,
    manifest_only: bool = False,
) -> VerifiedPackage:
    """Verify a plaintext package tar stream (the layer inside the age encryption).

    ``addressee=None`` skips the recipient check (for tools that only show
    what a package claims; never when importing).
    """
    tar = TarReader(plain, max_total=limits.max_total_bytes)
    manifest, manifest_bytes, verified, signature_text = _read_signed_manifest(
        tar, sender_keys=sender_keys, addressee=addressee, limits=limits
    )
    if not manifest_only:
        _read_entries(tar, manifest, on_entry)
    return VerifiedPackage(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        signature=verified,
        signature_text=signature_text,
        entries_checked=not manifest_only,
    )
