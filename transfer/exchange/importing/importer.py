"""The importer: choose the pupil, write the documents as the package streams, commit.

:meth:`Importer.plan` decides which pupil the file goes to: the pupil with the same UPN
*and* date of birth and name, or a new pupil when no pupil has that UPN. A pupil with the
UPN but another date of birth or name is a mismatch: refused with a
:class:`PupilMismatchError` that shows both, unless the DSL names the pupil
(``pupil_id``) or asks for a new one (``create_new``).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.manifest import Subject
from transfer.errors import ConflictError, InputError, IntegrityError, NotFoundError, PolicyError
from transfer.exchange.importing.plan import ImportPlan, Incoming, RecordsImported
from transfer.exchange.importing.records import PackageRecords
from transfer.exchange.importing.writer import RecordsWriter
from transfer.identifiers import validate_upn
from transfer.store import blobs
from transfer.store.db import sessionmaker
from transfer.store.keyring import KeyRing
from transfer.store.permissions import Actor
from transfer.store.service import Store
from transfer.store.tables import Document, Pupil


class PupilMismatchError(ConflictError):
    """The package's pupil and ours with the same UPN differ (date of birth or name)."""

    slug = "pupil-mismatch"
    title = "The pupil in the package does not match ours"


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _describe(upn: str | None, surname: str, forename: str, dob: date | None) -> dict[str, Any]:
    return {
        "upn": upn,
        "surname": surname,
        "forename": forename,
        "dob": dob.isoformat() if dob else None,
    }


def _says(d: Mapping[str, Any]) -> str:
    born = f"born {d['dob']}" if d["dob"] else "date of birth not known"
    return f"{d['forename']} {d['surname']}, {born}"


class Importer:
    """Imports verified records into ``store`` (sealing with the node's KEK)."""

    def __init__(self, store: Store, kek: bytes) -> None:
        self.store = store
        self._kek = kek
        self._sessions: async_sessionmaker[AsyncSession] = sessionmaker(store.engine)

    def _blob_dir(self, org_id: str, pupil_id: str) -> Path:
        return self.store.documents_dir / org_id / pupil_id

    async def plan(
        self,
        actor: Actor,
        records: PackageRecords,
        subject: Subject,
        *,
        pupil_id: str | None = None,
        create_new: bool = False,
    ) -> ImportPlan:
        """Choose the pupil; refuse a mismatch unless the DSL chose explicitly."""
        if pupil_id is not None and create_new:
            raise InputError("choose either an existing pupil (pupil_id) or create_new, not both")
        incoming = Incoming.of(records, subject)
        upn = validate_upn(incoming.upn) if incoming.upn else None
        ring = KeyRing(self._kek)
        async with self._sessions() as s:
            if pupil_id is not None:
                chosen = await s.get(Pupil, pupil_id)
                if chosen is None or chosen.org_id != actor.org_id:
                    raise NotFoundError("no such pupil in your organisation")
                if chosen.erased_at is not None:
                    raise PolicyError("this pupil's records have been erased; choose another")
                key = await ring.pupil_key(s, chosen.id)
                return ImportPlan(
                    actor.org_id, chosen.id, False, key, None, upn, incoming, "chosen"
                )
            same_upn = None
            if upn is not None:
                same_upn = await s.scalar(
                    select(Pupil).where(Pupil.org_id == actor.org_id, Pupil.upn == upn)
                )
            if same_upn is not None and not create_new:
                ours = _describe(same_upn.upn, same_upn.surname, same_upn.forename, same_upn.dob)
                theirs = _describe(upn, incoming.surname, incoming.forename, incoming.dob)
                if (
                    same_upn.dob is None
                    or same_upn.dob != incoming.dob
                    or not _same_name(same_upn.surname, incoming.surname)
                    or not _same_name(same_upn.forename, incoming.forename)
                ):
                    raise PupilMismatchError(
                        f"the package's pupil ({_says(theirs)}) does not match our pupil with "
                        f"UPN {upn} ({_says(ours)}); check, then accept into a pupil you choose "
                        "(pupil_id) or as a new pupil (create_new)",
                        detail={
                            "package_pupil": theirs,
                            "our_pupil": {"id": same_upn.id, **ours},
                        },
                    )
                if same_upn.erased_at is not None:
                    raise PolicyError(
                        "our pupil with this UPN has been erased; accept as a new pupil "
                        "(create_new) if that is right"
                    )
                key = await ring.pupil_key(s, same_upn.id)
                return ImportPlan(actor.org_id, same_upn.id, False, key, None, upn, incoming, "upn")
            new_id = str(uuid.uuid4())
            sealed = await ring.new_pupil_key(s, actor.org_id, new_id)
            key = await ring.pupil_key(s, new_id)
        # A new pupil whose UPN is already used here (create_new chosen) is created without
        # one: the UPN stays in the provenance and the package.
        return ImportPlan(
            actor.org_id,
            new_id,
            True,
            key,
            sealed,
            None if same_upn is not None else upn,
            incoming,
            "new",
        )

    async def write_document(
        self, plan: ImportPlan, sha256: str, chunks: AsyncIterable[bytes], max_bytes: int
    ) -> blobs.StoredBlob:
        """Encrypt one document into the store's document files (under the pupil's key)."""
        blob = await blobs.write_encrypted(
            chunks, plan.key, plan.pupil_id, self._blob_dir(plan.org_id, plan.pupil_id), max_bytes
        )
        if blob.sha256 != sha256:
            raise IntegrityError("a document's bytes do not match its SHA-256 in the package")
        plan.written[sha256] = blob
        return blob

    async def discard(self, plan: ImportPlan) -> None:
        """Remove what :meth:`write_document` wrote (the import did not commit)."""
        if plan.new_pupil:
            await asyncio.to_thread(shutil.rmtree, self._blob_dir(plan.org_id, plan.pupil_id), True)
            return
        async with self._sessions() as s:
            for blob in plan.written.values():
                used = await s.scalar(
                    select(Document.id).where(
                        Document.pupil_id == plan.pupil_id, Document.name == blob.name
                    )
                )
                if used is None:
                    await asyncio.to_thread(blob.path.unlink, True)

    async def commit(
        self,
        actor: Actor,
        plan: ImportPlan,
        records: PackageRecords,
        *,
        package_id: str,
        source_org_id: str,
        source_org_name: str,
        received_at: datetime,
        claim: Callable[[AsyncSession], Awaitable[None]],
        after: Callable[[AsyncSession, RecordsImported], Awaitable[None]] | None = None,
    ) -> RecordsImported:
        """Write the pupil (if new) and every record with provenance, in one transaction.

        ``claim`` runs first in the same transaction (the inbox moves the package to
        "accepted" there, so two DSLs accepting at once import it once); ``after`` runs
        last in it, with the result (the inbox promises its audit entries there).
        """
        try:
            async with self._sessions() as s, s.begin():
                await claim(s)
                writer = RecordsWriter(
                    s, plan, actor, package_id, source_org_id, source_org_name, received_at
                )
                await writer.pupil()
                result = await writer.records(records)
                if after is not None:
                    await after(s, result)
        except sa_exc.IntegrityError:
            raise ConflictError(
                "the pupil's records changed while the package was being imported (a pupil with "
                "this UPN was added, or the pupil was erased); try again"
            ) from None
        return result
