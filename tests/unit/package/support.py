"""Helpers shared by the package tests: organisations, manifests, hand-made tar streams."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from keys.keyset import KeySet
from schemas.manifest import Manifest, ManifestEntry, Recipient, Sender, Subject
from transfer.package.layout import (
    Addressee,
    EntrySource,
    PinnedSenderKey,
    sign_manifest,
    write_package_tar,
)

CREATED = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Parties:
    sender: KeySet
    recipient: KeySet

    @property
    def sender_keys(self) -> PinnedSenderKey:
        return PinnedSenderKey(self.sender.minisign_public_key, self.sender.org_id)

    @property
    def addressee(self) -> Addressee:
        return Addressee.for_keyset(self.recipient)


def parties() -> Parties:
    return Parties(
        sender=KeySet.generate("urn:school:100001", now=datetime(2026, 1, 1, tzinfo=UTC)),
        recipient=KeySet.generate("urn:school:100002", now=datetime(2026, 1, 1, tzinfo=UTC)),
    )


def sample_entries() -> list[EntrySource]:
    return [
        EntrySource.from_json("records/pupil.json", {"schema_version": 1, "surname": "Smith"}),
        EntrySource.from_json("records/concerns/c1.json", {"schema_version": 1, "id": "c1"}),
        EntrySource.from_bytes("documents/" + "ab" * 32, b"%PDF-1.7 a small document\n" * 50),
    ]


def make_manifest(
    p: Parties,
    entries: Sequence[EntrySource] | Sequence[ManifestEntry],
    *,
    recipient_org: str | None = None,
    recipient_fingerprint: str | None = None,
) -> Manifest:
    listed = tuple(e.entry if isinstance(e, EntrySource) else e for e in entries)
    return Manifest(
        package_id=uuid.uuid4(),
        kind="leaver_file",
        sender=Sender(
            org_id=p.sender.org_id,
            key_fingerprint=p.sender.fingerprint,
            signing_key_id=p.sender.key_id_hex,
        ),
        recipient=Recipient(
            org_id=recipient_org or p.recipient.org_id,
            key_fingerprint=recipient_fingerprint or p.recipient.fingerprint,
        ),
        subject=Subject(upn="A123456789012", surname="Smith", forename="Jo", dob=date(2014, 3, 4)),
        created_at=CREATED,
        entries=listed,
        records_schema={"pupil": 1, "concern": 1},
    )


def plain_package(p: Parties, entries: Sequence[EntrySource] | None = None) -> bytes:
    """A good plaintext package tar (what lies inside the age encryption)."""
    sources = list(sample_entries() if entries is None else entries)
    manifest = make_manifest(p, sources)
    data, sig = sign_manifest(manifest, p.sender.minisign_secret_key())
    out = io.BytesIO()
    write_package_tar(out, manifest, data, sig, sources)
    return out.getvalue()


# ----------------------------------------------------------- hand-made tars


@dataclass
class RawMember:
    """A tar member to write as is (any type, any size, any name)."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def raw_tar(members: Sequence[RawMember], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar stream written member by member with :mod:`tarfile` (no safety checks)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.type
            info.linkname = m.linkname
            info.size = len(m.data) if m.type == tarfile.REGTYPE else 0
            if m.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info, io.BytesIO(m.data) if m.type == tarfile.REGTYPE else None)
    return out.getvalue()


def signed_members(
    p: Parties, entries: Sequence[EntrySource] | Sequence[ManifestEntry], **kw: str
) -> tuple[Manifest, list[RawMember]]:
    """The manifest and signature members for ``entries`` (signed by the sender)."""
    manifest = make_manifest(p, entries, **kw)
    data, sig = sign_manifest(manifest, p.sender.minisign_secret_key())
    return manifest, [
        RawMember("manifest.json", data),
        RawMember("manifest.json.minisig", sig.encode()),
    ]


def source_members(entries: Sequence[EntrySource]) -> list[RawMember]:
    return [RawMember(e.path, b"".join(e.opener())) for e in entries]
