"""The store's subject access export: everything held about one pupil, as a tar stream."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from schemas.records import DocumentRef, ReviewItem, SubjectAccessExport
from transfer.store import blobs, exports, people
from transfer.store._common import _pupil_record, _tombstone_record
from transfer.store.chronology import Bundle, ChronologyStore
from transfer.store.keyring import KeyDestroyed
from transfer.store.permissions import Actor, Permission
from transfer.store.tables import Pupil, Tombstone

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SubjectAccessArchive:
    """A subject access export for its caller: the records, and the whole export (records
    and decrypted documents) as a tar stream. Nothing of it is on the node's disk."""

    export: SubjectAccessExport
    #: The folder every entry is in (``sar-<pupil id>-<time>``); ``<name>.tar`` to save it.
    name: str
    chunks: AsyncIterator[bytes] = field(repr=False)


class SubjectAccessStore(ChronologyStore):
    """The subject access export."""

    # ------------------------------------------------------- subject access export

    async def export_subject_access(
        self, actor: Actor, pupil_id: str, *, delivered_as: str = "tar"
    ) -> SubjectAccessArchive:
        """Everything held about one pupil, for review, as a tar stream for the caller.

        ``delivered_as`` (``tar``, ``json``, ``pdf``) is how the caller hands it over,
        recorded in the audit entry.

        The records are read and opened now (and audited); the documents are
        decrypted one chunk at a time while ``chunks`` is read. Nothing is
        written to disk. If the pupil is erased before the stream ends, it stops
        short (``KeyDestroyed``) rather than delivering an erased pupil's file.
        """
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        await self._require(actor, Permission.EXPORT_SUBJECT_ACCESS, "store.sar.export", targets)
        ring = self._ring()
        now = self.now()
        async with self.sessions() as s:
            pupil = await self._pupil_in_org(s, actor, pupil_id)
            record = _pupil_record(pupil)
            tombs = [
                _tombstone_record(t)
                for t in (
                    await s.scalars(select(Tombstone).where(Tombstone.pupil_id == pupil_id))
                ).all()
            ]
            if pupil.erased_at is None:
                b = await self._bundle(s, ring, actor, pupil_id, everything=True)
                key = await ring.pupil_key(s, pupil_id)
            else:  # erased: only the pupil row and the tombstone remain, no documents
                b, key = Bundle(), b""
        name = f"sar-{pupil_id}-{now.strftime('%Y%m%dT%H%M%SZ')}"
        documents = tuple(sorted(b.documents, key=lambda d: (d.uploaded_at, d.id)))
        files: dict[str, str] = {}
        for d in documents:
            safe = _SAFE_NAME.sub("_", d.filename).strip("._") or "document"
            files[d.id] = f"documents/{d.id}-{safe[:100]}"
        review = [
            ReviewItem(record="concern", id=c.id, field=f)
            for c in b.concerns
            for f in ("account", "people_involved")
        ]
        review += [
            ReviewItem(record="concern", id=c.id, field="pupil_ids")
            for c in b.concerns
            if len(c.pupil_ids) > 1
        ]
        review += [ReviewItem(record="contact", id=k.id, field="outcome") for k in b.contacts]
        review += [ReviewItem(record="document", id=d.id, field="content") for d in b.documents]
        named = [
            actor.staff_id,
            *(people.recorded_by(r) for group in b.records() for r in group),
            *(a.assignee_id for a in b.actions),
            *(t.erased_by for t in tombs),
        ]
        export = SubjectAccessExport(
            people=await self.people_named(actor, named),
            exported_at=now,
            exported_by=actor.staff_id,
            pupil=record,
            concerns=tuple(sorted(b.concerns, key=lambda c: (c.happened_at, c.id))),
            triage=tuple(sorted(b.triage, key=lambda t: (t.decided_at, t.id))),
            actions=tuple(sorted(b.actions, key=lambda a: (a.created_at, a.id))),
            contacts=tuple(sorted(b.contacts, key=lambda k: (k.contacted_at, k.id))),
            documents=documents,
            events=tuple(sorted(b.events, key=lambda e: (e.occurred_at, e.id))),
            tombstones=tuple(tombs),
            review=tuple(review),
            archive=name,
            files=files,
        )
        blob_dir = self._blob_dir(actor.org_id, pupil_id)

        def reader(d: DocumentRef) -> Callable[[], AsyncIterator[bytes]]:
            path = blob_dir / b.files[d.id]
            return lambda: blobs.read_decrypted(path, key, pupil_id, d.sha256)

        async def still_live() -> None:
            async with self.sessions() as s:
                erased = await s.scalar(select(Pupil.erased_at).where(Pupil.id == pupil_id))
            if erased is not None and record.erased_at is None:
                raise KeyDestroyed("this pupil was erased while the export was being sent")

        chunks = exports.tar_stream(
            name,
            export.model_dump_json(indent=2).encode("utf-8"),
            [exports.ArchiveFile(files[d.id], d.size, reader(d)) for d in documents],
            still_allowed=still_live,
            mtime=int(now.timestamp()),
        )
        await self._audit(
            "store.sar.export",
            actor,
            actor.org_id,
            targets,
            documents=len(b.documents),
            concerns=len(b.concerns),
            events=len(b.events),
            delivered_as=delivered_as,
        )
        return SubjectAccessArchive(export=export, name=name, chunks=chunks)
