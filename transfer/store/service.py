"""The concern store's services: one facade, :class:`Store`, over an async engine.

Every method is one transaction, checks the actor's permissions here (not at
the HTTP edge), seals and unseals through a :class:`KeyRing` that lives for
that call only, and reports to the :class:`AuditSink` after its transaction
(never any text). The public API is described in ``docs/store.md``.

:class:`Store` is composed of one part per area, each in its own module:
:mod:`~transfer.store.base` (the plumbing every part uses: sessions, clock, keys, audit),
:mod:`~transfer.store.organisations` (organisations, staff, categories),
:mod:`~transfer.store.pupils` (pupils, CTF import), :mod:`~transfer.store.concerns`,
:mod:`~transfer.store.casework` (triage, actions, contacts), :mod:`~transfer.store.documents`,
:mod:`~transfer.store.chronology` (pupil events, chronology), :mod:`~transfer.store.retention`
and :mod:`~transfer.store.subject_access`; shared helpers are in ``transfer.store._common``.
This module adds opening the store and what an upgrade does to its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import event, select, update

from schemas.auditing import AuditSink
from transfer.store import blobs, exports
from transfer.store._common import _Sealed, log
from transfer.store.base import DEFAULT_MAX_DOCUMENT_BYTES, Clock
from transfer.store.casework import CaseworkStore
from transfer.store.db import is_sqlite, make_engine, migrate
from transfer.store.documents import DocumentStore
from transfer.store.organisations import OrganisationStore
from transfer.store.retention import RetentionStore
from transfer.store.subject_access import SubjectAccessStore
from transfer.store.tables import Document, Pupil


def _rename_if_there(old: Path, new: Path) -> None:
    """Rename ``old`` to ``new`` if ``old`` is still there (idempotent, atomic)."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(old, new)


class Store(OrganisationStore, CaseworkStore, DocumentStore, SubjectAccessStore, RetentionStore):
    """The concern store of one node. Make one with :meth:`open`."""

    @classmethod
    async def open(
        cls,
        url: str,
        kek: bytes,
        audit: AuditSink,
        *,
        data_dir: Path,
        clock: Clock | None = None,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
        run_migrations: bool = True,
    ) -> Store:
        engine = make_engine(url)
        if is_sqlite(url):

            @event.listens_for(engine.sync_engine, "connect")
            def _secure_delete(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA secure_delete=ON")
                cur.close()

        try:
            if run_migrations:
                await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        store = cls(
            engine,
            kek,
            audit,
            data_dir=data_dir,
            clock=clock,
            max_document_bytes=max_document_bytes,
        )
        if run_migrations:
            await store.finish_upgrade()
        return store

    async def finish_upgrade(self) -> None:
        """What an upgrade does to files once the schema is migrated (``docs/operations.md``,
        Upgrading): rename documents to their keyed names, remove plaintext exports left by
        earlier versions. :meth:`open` runs it after migrating; a caller that migrates the
        schema itself (``Node.open``, after checking the database and the KEK) runs it then."""
        await self._name_legacy_documents()
        await self._remove_legacy_exports()

    async def _name_legacy_documents(self) -> int:
        """Finish ``store_0003``: rename document files written before it (named by the SHA-256
        of their plaintext) to their keyed names, and seal that SHA-256.

        Crash-safe and idempotent, one document at a time: the file is renamed (an atomic
        ``rename``), then the row is updated and the SHA-256 sealed in one transaction,
        only if no other process did it first. Killed between the two, the next run finds
        the file already renamed and finishes the row. Returns how many rows were done.
        """
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Document.id, Document.org_id, Document.pupil_id, Document.sha256).where(
                        Document.name.is_(None), Document.sha256.is_not(None)
                    )
                )
            ).all()
        if not rows:
            return 0
        ring = self._ring()
        done = 0
        for doc_id, org_id, pupil_id, legacy in rows:
            sha = str(legacy)
            async with self._writing() as s:
                key = await ring.pupil_key(s, pupil_id)
                name = blobs.document_name(key, pupil_id, sha)
                directory = self._blob_dir(org_id, pupil_id)
                await asyncio.to_thread(_rename_if_there, directory / sha, directory / name)
                result = await s.execute(
                    update(Document)
                    .where(Document.id == doc_id, Document.name.is_(None))
                    .values(name=name, sha256=None)
                )
                if getattr(result, "rowcount", 0):
                    await _Sealed(s, ring).put("documents", doc_id, [pupil_id], {"sha256": sha})
                    done += 1
        log.info("renamed %d document file(s) to keyed names (store_0003)", done)
        if self.engine.dialect.name == "sqlite":
            # The old names were in rows now rewritten: keep them out of the WAL too.
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return done

    async def _remove_legacy_exports(self) -> None:
        """Delete the plaintext subject access exports earlier versions left on disk."""
        pupils = await asyncio.to_thread(exports.remove_legacy_exports, self.data_dir)
        if not pupils:
            return
        log.warning(
            "removed %d subject access export(s) that an earlier version left in plaintext "
            "under %s; export again to get them (exports are now streamed to whoever asks)",
            len(pupils),
            self.data_dir / exports.EXPORTS_DIR,
        )
        async with self.sessions() as s:
            orgs = dict(
                (await s.execute(select(Pupil.id, Pupil.org_id).where(Pupil.id.in_(pupils)))).all()
            )
        for pupil_id in pupils:
            await self._audit("store.sar.removed", "node", orgs.get(pupil_id), {"pupil": pupil_id})
