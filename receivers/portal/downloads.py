"""The agency's downloads: each document decrypted and checked chunk by chunk, and its
last chunk released only while the link is open."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import (
    Any,
    Final,
)

from sqlalchemy import update

from keys.keyset import KeySet
from receivers.portal.core import PortalCore
from receivers.portal.errors import (
    LinkExpired,
)
from receivers.portal.reading import (
    StopReading,
    list_documents,
    open_stored,
    read_records,
)
from receivers.portal.records import (
    DocumentView,
    PortalVisit,
)
from receivers.portal.tables import PortalPickup
from schemas import jsontext
from schemas.manifest import ManifestEntry
from transfer.age import X25519Identity
from transfer.errors import (
    NotFoundError,
)
from transfer.package.layout import KeySetSenderKeys
from transfer.package.open import verify_package


class _Stopped(Exception):
    """The reader of a download went away (raised from ``on_entry`` to stop the package's
    reading, which has no other way to be stopped)."""


class _Gone:
    """The stored package is no longer held (the reader says why the link stopped)."""


_GONE: Final = _Gone()


@dataclass(frozen=True)
class _Last:
    """A document's last chunk: handed over only if the link may still release it."""

    data: bytes


class Downloads(PortalCore):
    """The documents of a referral, streamed to the agency."""

    async def documents(self, visit: PortalVisit) -> tuple[DocumentView, ...]:
        row = await self._pickup(visit.pickup_id)
        keyset = self._keyset(row.org_id)
        identity = X25519Identity.from_private_bytes(visit.identity)
        manifest, raw = await self._read(row, read_records, identity, keyset)
        parsed: dict[str, Any] = {}
        for path, data in raw.items():
            with contextlib.suppress(ValueError, TypeError):
                parsed[path] = jsontext.loads(data or b"")
        return list_documents(manifest, parsed)

    async def download(
        self, visit: PortalVisit, index: int, *, ip: str | None = None
    ) -> tuple[DocumentView, AsyncIterator[bytes]]:
        """One document and its bytes, decrypted and checked chunk by chunk.

        The last chunk is handed over only after the document's SHA-256 has
        matched the signed manifest, so an altered document never arrives whole,
        and only if the link is still open at that moment: the release is one
        conditional update (counted, with its receipt event), so no document is
        released after the link closes (acknowledged and the grace passed,
        withdrawn, locked or expired), however many downloads run at once.
        """
        docs = await self.documents(visit)
        if not 0 <= index < len(docs):
            raise NotFoundError("there is no such document in this referral")
        doc = docs[index]
        row = await self._pickup(visit.pickup_id)
        keyset = self._keyset(row.org_id)
        identity = X25519Identity.from_private_bytes(visit.identity)
        return doc, self._stream(row, doc, identity, keyset, ip)

    async def _stream(
        self,
        row: PortalPickup,
        doc: DocumentView,
        identity: X25519Identity,
        keyset: KeySet,
        ip: str | None,
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | _Last | _Gone | BaseException | None] = asyncio.Queue(
            maxsize=4
        )
        stop = threading.Event()
        path = self._file(row.id)

        def put(item: bytes | _Last | _Gone | BaseException | None) -> None:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while True:
                try:
                    future.result(timeout=0.5)
                    return
                except concurrent.futures.TimeoutError:
                    if stop.is_set():
                        future.cancel()
                        raise _Stopped from None

        def on_entry(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
            if entry.path != doc.path or stop.is_set():
                return
            held = b""
            for chunk in chunks:  # the SHA-256 is checked when this loop ends
                if held:
                    put(held)
                held = chunk
            put(_Last(held))
            raise StopReading

        def work() -> None:
            try:
                stored = open_stored(path)
                if stored is None:
                    put(_GONE)
                    return
                with stored as f:
                    verify_package(
                        f,
                        identities=[identity],
                        sender_keys=KeySetSenderKeys({keyset.org_id: keyset}),
                        addressee=None,
                        on_entry=on_entry,
                    )
                put(NotFoundError("the document is not in the package"))
            except StopReading:
                put(None)
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the reader, which raises it
                with contextlib.suppress(_Stopped):
                    put(exc)

        task = loop.run_in_executor(None, work)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, _Gone):
                    raise await self._gone(row)
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Last):
                    await self._release(row, doc, ip)
                    await self._audit(
                        "portal.download", None, row, ip=ip, document=doc.sha256, size=doc.size
                    )
                    if item.data:
                        yield item.data
                    continue
                yield item
            await self._forward_delivery(row, self.now())
        finally:
            stop.set()
            while not queue.empty():
                queue.get_nowait()
            await task

    async def _release(self, row: PortalPickup, doc: DocumentView, ip: str | None) -> None:
        """Count a document's release and record it, if the link is still open (else raise)."""
        now = self.now()
        async with self.store.sessions() as s, s.begin():
            result = await s.execute(
                update(PortalPickup)
                .where(PortalPickup.id == row.id, self._usable_clause(now))
                .values(downloads=PortalPickup.downloads + 1)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0):
                self._event(
                    s,
                    row.id,
                    "download",
                    ip=ip,
                    who=row.email,
                    what=f"{doc.path} sha256={doc.sha256}",
                )
                return
            fresh = await s.get(PortalPickup, row.id, populate_existing=True)
        assert fresh is not None
        raise self._unusable(fresh) or LinkExpired("this link can no longer be used")
