"""Opening a received package in a worker thread: verify it, keep its records, parse them.

Nothing here runs on the event loop: the package is decrypted and checked as it streams
(:mod:`transfer.package.open`), its records are kept within :class:`RecordLimits` and
parsed (:func:`transfer.exchange.importing.parse_records`, the chronology, a referral's
form, who the sender's staff are), and the preview is made as a DSL reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from keys.keyset import KeySet
from schemas import jsontext
from schemas.manifest import ManifestEntry
from schemas.records import ChronologyEntry, PersonRecord
from schemas.referrals import ReferralForm
from transfer.age import X25519Identity
from transfer.errors import IntegrityError
from transfer.exchange.importing import (
    PackageRecords,
    RecordsError,
    RecordTooLargeError,
    is_record_path,
    parse_records,
)
from transfer.exchange.inbox.models import PreviewDocument, RecordLimits, is_referral
from transfer.package.layout import Addressee, SenderKeys, VerifiedPackage
from transfer.package.open import inspect_package, verify_package
from transfer.store import people
from transfer.store.organisations import DEFAULT_CATEGORIES
from transfer.store.readable import (
    ReadableDocument,
    ReadableFile,
    about_line,
    readable_file,
    size_in_words,
)

_CHRONOLOGY = TypeAdapter(list[ChronologyEntry])
_FORM: TypeAdapter[Any] = TypeAdapter(ReferralForm)
#: The referral form's entry in a referral package (``transfer.referrals.package.FORM_PATH``).
_FORM_PATH = "records/referral.json"
_CHRONOLOGY_PATH = "records/chronology.json"
#: Who the sender's staff ids in the records are (``transfer.package.from_store.PEOPLE_PATH``).
_PEOPLE_PATH = "records/people.json"
_PEOPLE = TypeAdapter(list[PersonRecord])
_CATEGORY_LABELS: Mapping[str, str] = {k: label for k, (label, _) in DEFAULT_CATEGORIES.items()}


@dataclass
class PackageRead:
    """What one full verification pass kept, parsed: the records (and, when asked, the
    chronology; for a referral, its form), and the documents' entries."""

    verified: VerifiedPackage
    records: PackageRecords
    chronology: tuple[ChronologyEntry, ...]
    form: dict[str, Any] | None
    documents: list[ManifestEntry]
    people: tuple[PersonRecord, ...] = ()
    #: With the chronology: the preview as a DSL reads it.
    readable: ReadableFile | None = None


def _identities(keyset: KeySet) -> list[X25519Identity]:
    return [X25519Identity.from_private_bytes(k.secret) for k in keyset.decryption_keys()]


def inspect_file(path: Path, keyset: KeySet, sender_keys: SenderKeys) -> VerifiedPackage:
    with path.open("rb") as f:
        verified = inspect_package(
            f,
            identities=_identities(keyset),
            sender_keys=sender_keys,
            addressee=Addressee.for_keyset(keyset),
        )
    return verified


def verify_file(
    path: Path,
    keyset: KeySet,
    sender_keys: SenderKeys,
    on_entry: Callable[[ManifestEntry, Iterator[bytes]], None],
    *,
    hash_ciphertext: bool = False,
) -> VerifiedPackage:
    with path.open("rb") as f:
        return verify_package(
            f,
            identities=_identities(keyset),
            sender_keys=sender_keys,
            addressee=Addressee.for_keyset(keyset),
            on_entry=on_entry,
            hash_ciphertext=hash_ciphertext,
        )


@dataclass(frozen=True)
class Wanted:
    """Which package is being opened, and what to parse beside its records (with the
    chronology: the preview as a DSL reads it, which names ``sender_name``)."""

    package_id: str
    package_kind: str
    chronology: bool
    sender_name: str = ""


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{-(-n // 1024)} KiB"


def verify_collecting(
    path: Path,
    keyset: KeySet,
    sender_keys: SenderKeys,
    limits: RecordLimits,
    wanted: Wanted,
    *,
    hash_ciphertext: bool = False,
) -> PackageRead:
    """Verify the package and keep its records, refusing any past ``limits`` before its
    bytes are read (each entry's size is in the signed manifest and checked as it streams),
    then parse them: all in the calling worker thread."""
    raw: dict[str, bytes] = {}
    documents: list[ManifestEntry] = []
    kept = 0
    pid = wanted.package_id

    def keep(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        nonlocal kept
        if is_record_path(entry.path) or entry.path in (_CHRONOLOGY_PATH, _FORM_PATH, _PEOPLE_PATH):
            if entry.size > limits.per_record:
                raise RecordTooLargeError(
                    f"{entry.path} in package {pid} is {_size(entry.size)}, more than the "
                    f"{_size(limits.per_record)} this node opens for one record "
                    "(transfer.max_record_bytes): reject the package, or ask the node's "
                    "operator to raise the limit"
                )
            kept += entry.size
            if kept > limits.total:
                raise RecordTooLargeError(
                    f"the records of package {pid} come to more than the "
                    f"{_size(limits.total)} this node opens for one package "
                    "(transfer.max_records_bytes): reject the package, or ask the node's "
                    "operator to raise the limit"
                )
            raw[entry.path] = _read_record(chunks, entry.size)
        elif entry.path.startswith("documents/"):
            documents.append(entry)

    verified = verify_file(path, keyset, sender_keys, keep, hash_ciphertext=hash_ciphertext)
    return _parse_read(verified, raw, documents, wanted)


def _read_record(chunks: Iterator[bytes], size: int) -> bytes:
    """A record's bytes, never more than its declared ``size`` (the package reader also
    holds it to that size)."""
    buf = bytearray()
    for chunk in chunks:
        if len(buf) + len(chunk) > size:
            raise IntegrityError("a record in the package is longer than its manifest says")
        buf += chunk
    return bytes(buf)


def _parse_read(
    verified: VerifiedPackage,
    raw: dict[str, bytes],
    documents: list[ManifestEntry],
    wanted: Wanted,
) -> PackageRead:
    records = parse_records(raw)
    chronology: tuple[ChronologyEntry, ...] = ()
    raw_chronology = raw.get(_CHRONOLOGY_PATH)
    if wanted.chronology and raw_chronology is not None:
        try:
            jsontext.refuse_duplicate_keys(raw_chronology)
            chronology = tuple(_CHRONOLOGY.validate_json(raw_chronology))
        except (ValidationError, jsontext.JSONRefused):
            raise RecordsError(
                f"{_CHRONOLOGY_PATH} in the package is not a chronology this node reads"
            ) from None
    form = _parse_form(wanted, raw.get(_FORM_PATH)) if is_referral(wanted.package_kind) else None
    named: tuple[PersonRecord, ...] = ()
    raw_people = raw.get(_PEOPLE_PATH)
    if raw_people is not None:
        try:
            jsontext.refuse_duplicate_keys(raw_people)
            named = tuple(_PEOPLE.validate_json(raw_people))
        except (ValidationError, jsontext.JSONRefused):
            raise RecordsError(
                f"{_PEOPLE_PATH} in the package is not a list of people this node reads"
            ) from None
    read = PackageRead(verified, records, chronology, form, documents, named)
    if wanted.chronology:
        read.readable = _readable(read, wanted)
    return read


def preview_documents(read: PackageRead) -> tuple[PreviewDocument, ...]:
    refs = {d.sha256: d for d in read.records.documents}
    return tuple(
        PreviewDocument(
            path=e.path,
            size=e.size,
            sha256=e.sha256,
            filename=refs[e.sha256].filename if e.sha256 in refs else None,
            media_type=refs[e.sha256].media_type if e.sha256 in refs else None,
        )
        for e in read.documents
    )


def _readable(read: PackageRead, wanted: Wanted) -> ReadableFile:
    """The received chronology as a DSL reads it (in the worker thread: it can be long)."""
    named = {p.id: people.person_from_record(p) for p in read.people}
    sender = wanted.sender_name or "the sending organisation"
    someone_there = people.staff_of_org(sender)

    def who(entry: ChronologyEntry) -> people.Person:
        provenance = entry.provenance or getattr(entry.record, "provenance", None)
        if provenance is not None:  # the sender had received it from another organisation
            return people.staff_of_org(provenance.source_org_name)
        staff_id = people.recorded_by(entry.record)
        if staff_id is None:
            return people.Person(f"{sender} (recorded automatically)", kind="node")
        return named.get(staff_id, someone_there)

    def name_of(staff_id: str) -> str | None:
        return named[staff_id].describe() if staff_id in named else None

    pupil, subject = read.records.pupil, read.verified.manifest.subject
    if pupil is not None:
        about = about_line(pupil.forename, pupil.surname, pupil.dob, pupil.upn)
    else:
        about = about_line(subject.forename, subject.surname, subject.dob, subject.upn)
    documents = [
        ReadableDocument(
            name=d.filename or d.path.rsplit("/", 1)[-1],
            size=size_in_words(d.size),
            size_bytes=d.size,
            media_type=d.media_type,
        )
        for d in preview_documents(read)
    ]
    return readable_file(
        about=about,
        chronology=read.chronology,
        who=who,
        categories=_CATEGORY_LABELS,
        documents=documents,
        name_of=name_of,
    )


def _parse_form(wanted: Wanted, raw: bytes | None) -> dict[str, Any]:
    """A referral package's form, checked against the referral schemas."""
    pid, kind = wanted.package_id, wanted.package_kind
    if raw is None:
        raise RecordsError(f"the referral package {pid} holds no {_FORM_PATH}")
    try:
        jsontext.refuse_duplicate_keys(raw)
        form = _FORM.validate_json(raw)
    except (ValidationError, jsontext.JSONRefused):
        raise RecordsError(
            f"{_FORM_PATH} in package {pid} is not a referral form this node reads; the "
            "sender may use a newer form"
        ) from None
    dumped: dict[str, Any] = form.model_dump(mode="json")
    if f"referral_{dumped['kind']}" != kind:
        raise RecordsError(f"package {pid} is a {kind} but its form is a {dumped['kind']} referral")
    return dumped
