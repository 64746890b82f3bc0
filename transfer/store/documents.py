"""The store's documents: streamed in encrypted under the pupil's key, read back decrypted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

from sqlalchemy import select

from schemas.records import DocumentRef, Provenance
from transfer.errors import InputError, NotFoundError, TransportError
from transfer.media import SNIFF_BYTES, UnsupportedDocumentType, sniff_media_type
from transfer.store import blobs
from transfer.store._common import _new_id, _Sealed
from transfer.store.concerns import ConcernStore
from transfer.store.permissions import Actor, Permission, PermissionDenied
from transfer.store.tables import Document


async def _sniffing(
    chunks: AsyncIterable[bytes], filename: str, found: list[str]
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through once their start says what kind of file it is (appended to
    ``found``); refuse a kind not allowed before any of it is written."""
    head = bytearray()
    source = aiter(chunks)
    complete = False
    while len(head) < SNIFF_BYTES:
        try:
            head += await anext(source)
        except StopAsyncIteration:
            complete = True
            break
    whole = complete and len(head) <= SNIFF_BYTES
    found.append(sniff_media_type(bytes(head[:SNIFF_BYTES]), filename, complete=whole))
    if head:
        yield bytes(head)
    if not complete:
        async for piece in source:
            yield piece


class DocumentStore(ConcernStore):
    """Documents about a pupil (or a concern)."""

    # ---------------------------------------------------------------- documents

    async def add_document(
        self,
        actor: Actor,
        pupil_id: str,
        chunks: AsyncIterable[bytes],
        *,
        filename: str,
        concern_id: str | None = None,
    ) -> DocumentRef:
        """Stream a document in, encrypted under the pupil's key, content-addressed.

        Its media type is read from its first bytes (:func:`transfer.media.sniff_media_type`),
        never taken from the upload; a kind of file not on the allow-list is refused
        (:class:`transfer.media.UnsupportedDocumentType`) and nothing is kept.

        The DSL team adds documents to any record; whoever logged a concern may attach
        files to that concern (a photograph of a note, a letter) without being able to
        read documents back.
        """
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        authoring = (
            not actor.has(Permission.MANAGE_DOCUMENTS)
            and concern_id is not None
            and actor.has(Permission.RECORD_CONCERN)
        )
        if not authoring:
            await self._require(
                actor, Permission.MANAGE_DOCUMENTS, "store.document.upload", targets
            )
        if not filename or len(filename) > 255:
            raise InputError("a document's file name must be 1 to 255 characters")
        sniffed: list[str] = []
        ring = self._ring()
        async with self.sessions() as s:
            pupil = await self._pupil_in_org(s, actor, pupil_id)
            if concern_id is not None:
                concern, pupils = await self._readable_concern(
                    s, actor, concern_id, "store.document.upload"
                )
                if authoring and concern.recorded_by != actor.staff_id:
                    await self._refuse(
                        actor, "store.document.upload", {**targets, "concern": concern_id}
                    )
                    raise PermissionDenied(
                        "only the DSL team or the concern's author may attach files to it"
                    )
                if pupil_id not in pupils:
                    raise InputError("the concern is not about this pupil")
            key = await ring.pupil_key(s, pupil.id)
        try:
            blob = await blobs.write_encrypted(
                _sniffing(chunks, filename, sniffed),
                key,
                pupil_id,
                self._blob_dir(actor.org_id, pupil_id),
                self.max_document_bytes,
            )
        except UnsupportedDocumentType as exc:
            await self._audit(
                "store.document.upload", actor, actor.org_id, targets, "refused", reason=exc.slug
            )
            raise
        except TransportError:
            # The pupil's directory goes when the pupil is erased mid-upload.
            async with self.sessions() as s:
                await self._lock_live_pupils(s, [pupil_id])
            raise
        media_type = sniffed[0]
        try:
            async with self._writing() as s:
                await self._lock_live_pupils(s, [pupil_id])
                row = Document(
                    id=_new_id(),
                    org_id=actor.org_id,
                    pupil_id=pupil_id,
                    concern_id=concern_id,
                    name=blob.name,
                    sha256=None,
                    size=blob.size,
                    media_type=media_type,
                    uploaded_at=self.now(),
                    uploaded_by=actor.staff_id,
                )
                s.add(row)
                await _Sealed(s, ring).put(
                    "documents", row.id, [pupil_id], {"filename": filename, "sha256": blob.sha256}
                )
                await self._lock_live_pupils(s, [pupil_id])
                ref = self._document_ref(row, filename, blob.sha256, None)
        except BaseException:
            await self._drop_unreferenced(blob)
            raise
        await self._audit(
            "store.document.upload",
            actor,
            actor.org_id,
            {**targets, "document": ref.id},
            size=blob.size,
            media_type=media_type,
        )
        return ref

    async def _drop_unreferenced(self, blob: blobs.StoredBlob) -> None:
        """Remove a just-written file that no document row refers to (the insert failed)."""
        pupil_id = blob.path.parent.name
        async with self.sessions() as s:
            used = await s.scalar(
                select(Document.id).where(Document.pupil_id == pupil_id, Document.name == blob.name)
            )
        if used is None:
            await asyncio.to_thread(blob.path.unlink, True)

    @staticmethod
    def _document_ref(
        row: Document, filename: str, sha256: str, prov: Provenance | None
    ) -> DocumentRef:
        return DocumentRef(
            id=row.id,
            pupil_id=row.pupil_id,
            concern_id=row.concern_id,
            sha256=sha256,
            size=row.size,
            media_type=row.media_type,
            filename=filename,
            uploaded_at=row.uploaded_at,
            uploaded_by=row.uploaded_by,
            provenance=prov,
        )

    async def read_document(
        self, actor: Actor, document_id: str
    ) -> tuple[DocumentRef, AsyncIterator[bytes]]:
        """The document's reference and an iterator over its decrypted bytes."""
        targets = {"document": document_id}
        await self._require(actor, Permission.MANAGE_DOCUMENTS, "store.document.download", targets)
        ring = self._ring()
        async with self.sessions() as s:
            row = await s.get(Document, document_id)
            if row is None or row.org_id != actor.org_id:
                raise NotFoundError("no such document")
            if row.concern_id is not None:
                await self._readable_concern(s, actor, row.concern_id, "store.document.download")
            sealed = await _Sealed(s, ring).one("documents", row.id, row.pupil_id)
            sha = sealed.get("sha256") or row.sha256 or ""
            prov = await self._provenances(s, [row.provenance_id])
            ref = self._document_ref(
                row, sealed["filename"], sha, prov.get(row.provenance_id or "")
            )
            key = await ring.pupil_key(s, row.pupil_id)
        await self._audit(
            "store.document.download", actor, actor.org_id, {**targets, "pupil": ref.pupil_id}
        )
        path = self._blob_dir(row.org_id, row.pupil_id) / (row.name or sha)
        return ref, blobs.read_decrypted(path, key, row.pupil_id, sha)
