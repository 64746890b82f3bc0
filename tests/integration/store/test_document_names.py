"""A stored document does not give away which file it is.

Documents used to be stored as ``documents/<org>/<pupil>/<SHA-256 of the plaintext>``,
with the same SHA-256 in the ``documents`` table and the upload's audit event: anyone
with a disk image or a backup could hash a file they know (a letter, a photo) and
confirm that it is held for a pupil. Now a file is named by an HMAC of that SHA-256
under a key derived from the pupil's data key, and the SHA-256 itself is sealed.
Stored documents of an older version are renamed when the store opens (crash-safe,
idempotent). On SQLite and PostgreSQL; the migration also on a data directory made
by the older code (``tests/assets/legacy-documents``).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update

from schemas.auditing import MemoryAudit
from tests.integration.store.conftest import KEK, School, start_clock
from transfer.errors import ConflictError
from transfer.store import _common, blobs
from transfer.store.service import Store
from transfer.store.tables import Document, SealedField

ASSET = Path(__file__).parents[2] / "assets" / "legacy-documents" / "data-dir.tar.gz"
LETTER = b"%PDF-1.4 a letter home " + bytes(range(256)) * 300


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read(store: Store, school: School, document_id: str) -> tuple[str, bytes]:
    ref, chunks = await store.read_document(school.dsl, document_id)
    return ref.sha256, b"".join([c async for c in chunks])


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _sqlite_files(directory: Path) -> str:
    return b"".join(p.read_bytes() for p in directory.glob("*.db*")).decode("latin-1")


async def _database_text(store: Store, tmp_path: Path) -> str:
    """Every row of every table as text (PostgreSQL), or the raw SQLite files."""
    if store.engine.dialect.name == "sqlite":
        return _sqlite_files(tmp_path)
    async with store.engine.connect() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
            )
        ).scalars()
        dump = []
        for table in list(tables):
            dump += [r[0] for r in await conn.execute(text(f'SELECT t::text FROM "{table}" t'))]
    return "\n".join(dump)


async def test_a_stored_documents_name_is_not_its_sha256(school: School, tmp_path: Path) -> None:
    store = school.store
    a = await school.pupil("H801200001001")
    b = await school.pupil("X801200001002", "Baker")
    sha = hashlib.sha256(LETTER).hexdigest()
    refs = [
        await store.add_document(school.dsl, p.id, _once(LETTER), filename="letter.pdf")
        for p in (a, b)
    ]
    files = _files(school.data_dir / "documents")
    assert len(files) == 2
    names = {f.parent.name: f.name for f in files}
    # Not the SHA-256, and not the same for two pupils holding the same document.
    assert sha not in names.values()
    assert names[a.id] != names[b.id]
    # The SHA-256 is nowhere a disk image would show it: not in a file name or a file,
    # not in the database, not in the audit trail.
    assert all(sha not in str(f) and sha.encode() not in f.read_bytes() for f in files)
    assert sha not in await _database_text(store, tmp_path)
    assert all(sha not in repr(e) for e in school.audit.events)
    # Those allowed still get it, and the bytes check against it.
    for ref in refs:
        assert ref.sha256 == sha
        assert await _read(store, school, ref.id) == (sha, LETTER)
    (entry,) = [e for e in await store.chronology(school.dsl, a.id) if e.kind == "document"]
    assert entry.record.sha256 == sha  # type: ignore[union-attr]


async def _as_older_versions_left_it(school: School) -> dict[str, tuple[str, bytes]]:
    """Documents written now, turned back into what an older version left: files named by
    the SHA-256, ``documents.sha256`` set, ``name`` NULL, no sealed SHA-256."""
    store = school.store
    a = await school.pupil("H801200001001")
    b = await school.pupil("X801200001002", "Baker")
    contents = [LETTER, b"a second document" * 5000, LETTER]
    owners = [a.id, a.id, b.id]
    expected: dict[str, tuple[str, bytes]] = {}
    for pupil_id, data in zip(owners, contents, strict=True):
        ref = await store.add_document(school.dsl, pupil_id, _once(data), filename="d.pdf")
        expected[ref.id] = (ref.sha256, data)
    # The same bytes again for pupil a: one file, two rows.
    again = await store.add_document(school.dsl, a.id, _once(LETTER), filename="again.pdf")
    expected[again.id] = (again.sha256, LETTER)
    async with store.sessions() as s, s.begin():
        for doc in (await s.scalars(select(Document))).all():
            assert doc.name is not None
            sha = expected[doc.id][0]
            folder = school.data_dir / "documents" / doc.org_id / doc.pupil_id
            if (folder / doc.name).exists():
                (folder / doc.name).rename(folder / sha)
            await s.execute(
                update(Document).where(Document.id == doc.id).values(name=None, sha256=sha)
            )
            await s.execute(
                delete(SealedField).where(
                    SealedField.record_id == doc.id, SealedField.field == "sha256"
                )
            )
    return expected


async def _check_renamed(school: School, expected: dict[str, tuple[str, bytes]]) -> None:
    store = school.store
    async with store.sessions() as s:
        rows = (await s.scalars(select(Document))).all()
    assert all(r.name is not None and r.sha256 is None for r in rows)
    files = _files(school.data_dir / "documents")
    assert {f.name for f in files} == {r.name for r in rows}
    assert not {f.name for f in files} & {sha for sha, _ in expected.values()}
    for doc_id, want in expected.items():
        assert await _read(store, school, doc_id) == want


async def test_renaming_survives_a_crash_and_runs_once(
    school: School, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = await _as_older_versions_left_it(school)
    store = school.store
    # Killed part-way: the second document's file is renamed, but its row is not updated.
    real_put = _common._Sealed.put
    calls = 0

    async def dying_put(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("the process was killed here")
        await real_put(self, *args, **kwargs)

    monkeypatch.setattr(_common._Sealed, "put", dying_put)
    with pytest.raises((OSError, ConflictError)):
        await store._name_legacy_documents()
    monkeypatch.setattr(_common._Sealed, "put", real_put)
    async with store.sessions() as s:
        left = (await s.scalars(select(Document).where(Document.name.is_(None)))).all()
    assert 0 < len(left) < len(expected)
    # The next start finishes the job; two processes starting at once do it once.
    other = await Store.open(
        str(store.engine.url.render_as_string(hide_password=False)),
        KEK,
        MemoryAudit(),
        data_dir=school.data_dir,
        clock=start_clock(),
        run_migrations=False,
    )
    try:
        done = await asyncio.gather(store._name_legacy_documents(), other._name_legacy_documents())
    finally:
        await other.close()
    assert sum(done) == len(left)
    await _check_renamed(school, expected)
    async with store.sessions() as s:
        sealed = (
            await s.scalars(select(SealedField.record_id).where(SealedField.field == "sha256"))
        ).all()
    assert sorted(sealed) == sorted(expected)  # one sealed SHA-256 per document, no more
    assert await store._name_legacy_documents() == 0  # idempotent


async def test_a_data_dir_made_by_the_older_code_is_migrated(tmp_path: Path) -> None:
    """``data-dir.tar.gz`` was made by the code before this change (``make_data_dir.py``)."""
    data_dir = tmp_path / "data"
    with tarfile.open(ASSET) as tar:
        tar.extractall(data_dir, filter="data")
    shared = b"%PDF-1.4 the same letter, sent home with both children\n" * 200
    own = b"%PDF-1.4 a body map of the first child only\n" * 300
    old_names = {hashlib.sha256(shared).hexdigest(), hashlib.sha256(own).hexdigest()}
    assert {f.name for f in _files(data_dir / "documents")} == old_names
    url = f"sqlite+aiosqlite:///{data_dir / 'handover.db'}"
    for _ in range(2):  # a second start finds nothing to do
        store = await Store.open(url, KEK, MemoryAudit(), data_dir=data_dir)
        try:
            async with store.sessions() as s:
                rows = (await s.scalars(select(Document))).all()
            assert len(rows) == 4 and all(r.name and r.sha256 is None for r in rows)
            names = [f.name for f in _files(data_dir / "documents")]
            assert len(names) == 3 and not set(names) & old_names
            staff = await store.find_staff("199001", "dsl")
            assert staff is not None
            dsl = await store.actor_for(staff.id)
            contents = set()
            for row in rows:
                ref, chunks = await store.read_document(dsl, row.id)
                data = b"".join([c async for c in chunks])
                assert hashlib.sha256(data).hexdigest() == ref.sha256
                contents.add(data)
            assert contents == {shared, own}
        finally:
            await store.close()
    # The old names are gone from the database file too (not just the column).
    raw = b"".join(p.read_bytes() for p in data_dir.glob("handover.db*"))
    assert not [n for n in old_names if n.encode() in raw]


def test_the_name_is_keyed_per_pupil() -> None:
    sha = hashlib.sha256(LETTER).hexdigest()
    key = bytes(range(32))
    one = blobs.document_name(key, "pupil-a", sha)
    assert one == blobs.document_name(key, "pupil-a", sha)  # the same bytes: one file
    assert one != blobs.document_name(key, "pupil-b", sha)
    assert one != blobs.document_name(bytes(32), "pupil-a", sha)
    assert one != sha and len(one) == 64


def test_the_asset_was_made_by_the_older_code(tmp_path: Path) -> None:
    """The archive holds files named by SHA-256 and a database at ``store_0002``."""
    with tarfile.open(ASSET) as tar:
        tar.extractall(tmp_path, filter="data")
    with sqlite3.connect(tmp_path / "handover.db") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(documents)")}
        versions = {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
        legacy = {row[0] for row in db.execute("SELECT sha256 FROM documents")}
    assert "name" not in columns and "store_0002" in versions
    assert {f.name for f in _files(tmp_path / "documents")} == legacy
