"""A leaver's file built from a real store (SQLite), then opened and compared with the store."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from keys.keyset import KeySet
from schemas.auditing import MemoryAudit
from schemas.manifest import ManifestEntry, Recipient, Sender
from schemas.records import (
    ActionRecord,
    ChronologyEntry,
    ConcernRecord,
    ContactRecord,
    DocumentRef,
    NewAction,
    NewBodyMapMark,
    NewConcern,
    NewContact,
    NewTriage,
    PersonRecord,
    PupilRecord,
    TriageRecord,
)
from tests.integration.package.support import identity
from tests.integration.store.conftest import KEK, School, make_school, start_clock
from transfer.identifiers import upn_check_letter
from transfer.package.build import BuiltPackage
from transfer.package.from_store import RECORD_TYPES, build_leaver_package
from transfer.package.layout import Addressee, PinnedSenderKey
from transfer.package.open import open_package
from transfer.store.blobs import DocumentTampered
from transfer.store.people import main_role, recorded_by
from transfer.store.service import Store

MB = 1024 * 1024
T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
async def school(tmp_path: Path) -> AsyncIterator[School]:
    audit = MemoryAudit()
    clock = start_clock()
    data_dir = tmp_path / "data"
    store = await Store.open(
        f"sqlite+aiosqlite:///{tmp_path / 'handover.db'}",
        KEK,
        audit,
        data_dir=data_dir,
        clock=clock,
    )
    try:
        yield await make_school(store, audit, clock, data_dir)
    finally:
        await store.close()


async def _chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _generated(total: int) -> AsyncIterator[bytes]:
    block = hashlib.sha512(b"big").digest() * 1024
    first = b"%PDF-1.7\n" + block[9:]  # a kind of document the store keeps (a large scan)
    left = total
    while left:
        n = min(left, len(block))
        yield (first if left == total else block)[:n]
        left -= n


def _keys() -> tuple[KeySet, KeySet]:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return KeySet.generate("199001", now=when), KeySet.generate("urn:school:100002", now=when)


async def _build(school: School, pupil_id: str, path: Path, sender: KeySet, to: KeySet) -> object:
    with path.open("wb") as f:
        return await build_leaver_package(
            school.store,
            school.dsl,
            pupil_id,
            f,
            sender=Sender(
                org_id=sender.org_id,
                key_fingerprint=sender.fingerprint,
                signing_key_id=sender.key_id_hex,
            ),
            recipient=Recipient(org_id=to.org_id, key_fingerprint=to.fingerprint),
            signer=sender.minisign_secret_key(),
            recipients=[identity(to).recipient],
        )


def _open(path: Path, sender: KeySet, to: KeySet) -> dict[str, bytes]:
    got: dict[str, bytes] = {}

    def take(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        got[entry.path] = b"".join(chunks)

    open_package(
        path,
        take,
        identities=[identity(to)],
        sender_keys=PinnedSenderKey(sender.minisign_public_key, sender.org_id),
        addressee=Addressee.for_keyset(to),
    )
    return got


async def test_a_leavers_file_from_the_store_opens_with_everything(
    school: School, tmp_path: Path
) -> None:
    store = school.store
    pupil = await school.pupil("H801200001001", surname="Okafor")
    school.clock.now = T0
    concern = await store.record_concern(
        school.staff,
        NewConcern(
            pupil_ids=(pupil.id,),
            category="child_protection",
            happened_at=T0 - timedelta(hours=3),
            account="disclosed at lunch",
            body_map=(
                NewBodyMapMark(pupil_id=pupil.id, side="front", x=0.4, y=0.3, description="bruise"),
            ),
        ),
    )
    other = await store.record_concern(
        school.staff,
        NewConcern(pupil_ids=(pupil.id,), category="attendance", happened_at=T0, account="late"),
    )
    school.clock.now = T0 + timedelta(days=1)
    triage = await store.triage_concern(
        school.dsl, concern.id, NewTriage(decision="refer_social_care", reason="threshold met")
    )
    action = await store.add_action(school.dsl, concern.id, NewAction(text="call MASH"))
    contact = await store.add_contact(
        school.dsl,
        concern.id,
        NewContact(agency="MASH", contacted_at=T0 + timedelta(days=1), outcome="accepted"),
    )
    letter = b"%PDF-1.7\n" + os.urandom(250_000)
    doc1 = await store.add_document(
        school.dsl,
        pupil.id,
        _chunks(letter),
        filename="letter.pdf",
        concern_id=concern.id,
    )
    doc2 = await store.add_document(school.dsl, pupil.id, _chunks(b"plan v1"), filename="plan.txt")
    same = await store.add_document(
        school.dsl, pupil.id, _chunks(letter), filename="letter-copy.pdf"
    )
    assert same.sha256 == doc1.sha256

    sender, to = _keys()
    path = tmp_path / "leaver.age"
    built = await _build(school, pupil.id, path, sender, to)
    got = _open(path, sender, to)

    assert isinstance(built, BuiltPackage)
    manifest = built.manifest
    build_events = [e for e in school.audit.events if e.action == "package.build"]
    assert len(build_events) == 1
    assert build_events[0].targets["package"] == str(manifest.package_id)
    assert build_events[0].targets["pupil"] == pupil.id
    assert build_events[0].detail["ciphertext_sha256"] == built.ciphertext_sha256
    assert "disclosed at lunch" not in repr(build_events[0])
    assert manifest.kind == "leaver_file"
    assert manifest.subject.upn == "H801200001001" and manifest.subject.surname == "Okafor"
    assert manifest.records_schema == RECORD_TYPES
    assert manifest.created_at == store.now()

    assert PupilRecord.model_validate_json(got["records/pupil.json"]) == pupil
    chronology = TypeAdapter(list[ChronologyEntry]).validate_json(got["records/chronology.json"])
    assert chronology == await store.chronology(school.dsl, pupil.id)
    assert ConcernRecord.model_validate_json(got[f"records/concerns/{concern.id}.json"]) == (
        await store.get_concern(school.dsl, concern.id)
    )
    assert f"records/concerns/{other.id}.json" in got
    assert TriageRecord.model_validate_json(got[f"records/triage/{triage.id}.json"]) == triage
    assert ActionRecord.model_validate_json(got[f"records/actions/{action.id}.json"]) == action
    assert ContactRecord.model_validate_json(got[f"records/contacts/{contact.id}.json"]) == contact
    for ref in (doc1, doc2, same):
        assert DocumentRef.model_validate_json(got[f"records/documents/{ref.id}.json"]) == ref
    assert got[f"documents/{doc1.sha256}"] == letter
    assert got[f"documents/{doc2.sha256}"] == b"plan v1"
    # The same bytes uploaded twice are carried once.
    assert sum(1 for k in got if k.startswith("documents/")) == 2
    # Who the staff ids in the records are, by name and role, for the receiver to show.
    named = TypeAdapter(list[PersonRecord]).validate_json(got["records/people.json"])
    ids = {recorded_by(e.record) for e in chronology} - {None}
    assert {p.id for p in named} == ids and len(ids) >= 2
    staff = {s.id: s for s in await store.list_staff(school.admin)}
    assert all(p.name == staff[p.id].display_name for p in named)
    assert all(p.role == main_role(staff[p.id].roles) for p in named)
    # Every record is canonical JSON with its schema version.
    for name, data in got.items():
        if name.startswith("records/") and name not in (
            "records/chronology.json",
            "records/people.json",
        ):
            assert json.loads(data)["schema_version"] == 1
        elif name.startswith("records/"):
            assert all(item["schema_version"] == 1 for item in json.loads(data))


async def test_a_large_document_streams_from_the_store_with_bounded_memory(
    school: School, tmp_path: Path
) -> None:
    store = school.store
    pupil = await school.pupil(upn_check_letter("801200001002") + "801200001002")
    size = 64 * MB
    big = await store.add_document(school.dsl, pupil.id, _generated(size), filename="scan.pdf")
    sender, to = _keys()
    path = tmp_path / "leaver.age"
    tracemalloc.start()
    try:
        await _build(school, pupil.id, path, sender, to)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MB, f"building from the store peaked at {peak / MB:.1f} MiB"
    digest = hashlib.sha256()

    def take(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        if entry.path.startswith("documents/"):
            for c in chunks:
                digest.update(c)

    open_package(
        path,
        take,
        identities=[identity(to)],
        sender_keys=PinnedSenderKey(sender.minisign_public_key),
        addressee=Addressee.for_keyset(to),
    )
    assert digest.hexdigest() == big.sha256


class _CountedSha256:
    """hashlib.sha256 that adds every byte it is given to a shared count."""

    hashed = 0

    def __init__(self, data: bytes = b"") -> None:
        self._h = _REAL_SHA256()
        self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        _CountedSha256.hashed += len(data)
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def __getattr__(self, name: str) -> object:  # digest_size, name, block_size...
        return getattr(self._h, name)


_REAL_SHA256 = hashlib.sha256


async def test_a_document_from_the_store_is_hashed_once_while_its_package_is_built(
    school: School, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the store's reader checks a document's SHA-256 as it decrypts it, and the
    build hashed the same bytes a second time (plus the ciphertext, once, for the offer)."""
    store = school.store
    pupil = await school.pupil(upn_check_letter("801200001002") + "801200001002")
    size = 8 * MB
    big = await store.add_document(school.dsl, pupil.id, _generated(size), filename="scan.pdf")
    sender, to = _keys()
    path = tmp_path / "leaver.age"
    monkeypatch.setattr(hashlib, "sha256", _CountedSha256)
    _CountedSha256.hashed = 0
    built = await _build(school, pupil.id, path, sender, to)
    hashed = _CountedSha256.hashed
    monkeypatch.undo()
    assert isinstance(built, BuiltPackage)
    # The document once (the store's reader), the ciphertext once, and the small records.
    assert size + built.ciphertext_size <= hashed < size + built.ciphertext_size + MB
    got = _open(path, sender, to)
    assert hashlib.sha256(got[f"documents/{big.sha256}"]).hexdigest() == big.sha256


async def test_a_stored_document_altered_on_disk_stops_the_build(
    school: School, tmp_path: Path
) -> None:
    """The build no longer hashes a stored document itself: the store's reader must stop it."""
    store = school.store
    pupil = await school.pupil(upn_check_letter("801200001002") + "801200001002")
    await store.add_document(school.dsl, pupil.id, _generated(2 * MB), filename="scan.pdf")
    blobs = [p for p in school.data_dir.rglob("*") if p.is_file() and p.stat().st_size > MB]
    assert len(blobs) == 1
    raw = bytearray(blobs[0].read_bytes())
    raw[MB] ^= 1
    blobs[0].write_bytes(bytes(raw))
    sender, to = _keys()
    with pytest.raises(DocumentTampered):
        await _build(school, pupil.id, tmp_path / "leaver.age", sender, to)
