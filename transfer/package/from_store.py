"""From the concern store to a package: a leaver's file, streamed.

This is the adapter between the store (async, SQLAlchemy) and the pure
builder (sync, file objects). :func:`leaver_file_entries` reads the pupil and
the whole chronology (every concern, triage decision, action, contact and
document reference the actor may read) and serialises each record as
canonical JSON; documents become :class:`EntrySource` s whose size and
SHA-256 come from the store (documents are content-addressed) and whose bytes
are read from the store only while the package is written, chunk by chunk,
decrypted from the store's encrypted file straight into the package's age
stream. :func:`build_leaver_package` runs the builder in a worker thread and
feeds it from the event loop, so neither the package nor a document is ever
held in memory or written to disk in plaintext.

Layout (``docs/package-format.md``): ``records/pupil.json``,
``records/chronology.json``, ``records/people.json`` (who the staff ids in the
records are, by name and role), ``records/<kind>/<id>.json`` for concerns,
triage, actions, contacts, document references and pupil events (``events``),
``documents/<sha256>``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, TypeVar
from uuid import UUID

from pydantic import TypeAdapter

from keys import minisign
from schemas.manifest import PackageKind, Recipient, Sender, Subject, canonical_json
from schemas.records import (
    SCHEMA_VERSION,
    ActionRecord,
    ChronologyEntry,
    ConcernRecord,
    ContactRecord,
    DocumentRef,
    PersonRecord,
    PupilEventRecord,
    PupilRecord,
    TriageRecord,
)
from transfer.age import X25519Recipient
from transfer.errors import HandoverError
from transfer.package.build import BuiltPackage, build_package
from transfer.package.errors import EntryMismatchError
from transfer.package.layout import EntrySource

if TYPE_CHECKING:
    from transfer.store.permissions import Actor
    from transfer.store.service import Store

__all__ = [
    "PEOPLE_PATH",
    "RECORD_TYPES",
    "LeaverFile",
    "build_leaver_package",
    "leaver_file_entries",
]

#: The record types a leaver's file holds, with their schema versions (``records_schema``).
RECORD_TYPES: dict[str, int] = {
    name: SCHEMA_VERSION
    for name in (
        "pupil",
        "chronology-entry",
        "concern",
        "triage",
        "action",
        "contact",
        "document",
        "pupil-event",
        "person",
    )
}
#: Who the staff ids in the records are (:class:`PersonRecord` list), so that a receiver
#: can say who recorded what; staff of the sending organisation only.
PEOPLE_PATH = "records/people.json"
_PEOPLE = TypeAdapter(list[PersonRecord])

_KIND_DIRS: dict[type[object], str] = {
    ConcernRecord: "concerns",
    TriageRecord: "triage",
    ActionRecord: "actions",
    ContactRecord: "contacts",
    DocumentRef: "documents",
    PupilEventRecord: "events",
}

_T = TypeVar("_T")
_CHRONOLOGY = TypeAdapter(list[ChronologyEntry])


@dataclass(frozen=True)
class LeaverFile:
    """What goes into a leaver's package, ready for :func:`build_package`."""

    pupil: PupilRecord
    chronology: tuple[ChronologyEntry, ...]
    #: Records first (small, already serialised), then documents (streamed when written).
    entries: tuple[EntrySource, ...]

    @property
    def subject(self) -> Subject:
        p = self.pupil
        return Subject(upn=p.upn, surname=p.surname, forename=p.forename, dob=p.dob)


#: Bytes of a stored document passed from the event loop to the builder's thread at a time.
BRIDGE_BYTES = 1024 * 1024
#: Readers being closed by a task (see :meth:`_LoopBridge.iterate`), held until they are.
_CLOSING: set[asyncio.Task[None]] = set()


class _LoopBridge:
    """Runs the store's coroutines on its event loop from the builder's worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def run(self, awaitable: Awaitable[_T]) -> _T:
        async def call() -> _T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def iterate(self, chunks: AsyncIterator[bytes]) -> Generator[bytes, None, None]:
        """The chunks, fetched about ``BRIDGE_BYTES`` at a time: one hop between the threads
        per batch, not per chunk (the store reads 64 KiB chunks).

        The next batch is asked for before this one is handed over, so that the event loop
        decrypts and checks it while this thread encrypts the one before (the two run on
        two cores; at most two batches are held at once).
        """

        async def batch() -> tuple[list[bytes], bool]:
            got: list[bytes] = []
            held = 0
            while held < BRIDGE_BYTES:
                try:
                    item = await chunks.__anext__()
                except StopAsyncIteration:
                    return got, True
                got.append(item)
                held += len(item)
            return got, False

        ahead: concurrent.futures.Future[tuple[list[bytes], bool]] | None = None
        try:
            ahead = fetching = asyncio.run_coroutine_threadsafe(batch(), self._loop)
            while True:
                items, ended = fetching.result()
                ahead = None
                if not ended:
                    ahead = fetching = asyncio.run_coroutine_threadsafe(batch(), self._loop)
                yield from items
                if ended:
                    return
        finally:
            if self._on_loop_thread():
                # Finalised by the garbage collector on the loop's own thread (a consumer
                # that neither finished nor closed it): waiting here would stop the loop for
                # good, so the reader is closed by a task once the batch under way is done.
                task = self._loop.create_task(_close_after(ahead, chunks))
                _CLOSING.add(task)
                task.add_done_callback(_CLOSING.discard)
            else:
                if ahead is not None:
                    # Stopped early (an error here, or the consumer closed the generator):
                    # let the batch under way finish, whatever it raised, before the reader
                    # is closed on the loop (an async generator cannot be closed while
                    # running).
                    with contextlib.suppress(BaseException):
                        ahead.result()
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    asyncio.run_coroutine_threadsafe(aclose(), self._loop).result()

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False


async def _close_after(
    ahead: concurrent.futures.Future[tuple[list[bytes], bool]] | None,
    chunks: AsyncIterator[bytes],
) -> None:
    if ahead is not None:
        with contextlib.suppress(BaseException):
            await asyncio.wrap_future(ahead)
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _document_source(
    store: Store, actor: Actor, ref: DocumentRef, bridge: _LoopBridge
) -> EntrySource:
    def opener() -> Iterator[bytes]:
        stored, chunks = bridge.run(store.read_document(actor, ref.id))
        if stored.size != ref.size or not hmac.compare_digest(stored.sha256, ref.sha256):
            bridge.run(_aclose(chunks))
            raise EntryMismatchError(
                f"document {ref.id} changed in the store while the package was being made; "
                "the package was not made"
            )
        yield from bridge.iterate(chunks)

    # The store's reader authenticates every chunk and raises DocumentTampered at the end
    # unless the bytes are the stored SHA-256, checked equal to ref.sha256 above.
    return EntrySource(
        path=f"documents/{ref.sha256}",
        size=ref.size,
        sha256=ref.sha256,
        opener=opener,
        self_checking=True,
    )


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def leaver_file_entries(
    store: Store,
    actor: Actor,
    pupil_id: str,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
) -> LeaverFile:
    """Read everything about ``pupil_id`` the actor may read, as package entries.

    The actor should be the DSL (who reads every record). Documents are not
    read here; each is read from the store when the package is written, on
    ``loop`` (default: the running loop) — so the entries must be written from
    another thread (as :func:`build_leaver_package` does), never on that loop.
    """
    bridge = _LoopBridge(loop or asyncio.get_running_loop())
    pupil = await store.get_pupil(actor, pupil_id)
    chronology = tuple(await store.chronology(actor, pupil_id))
    records: list[EntrySource] = [
        EntrySource.from_json("records/pupil.json", pupil),
        EntrySource.from_bytes(
            "records/chronology.json",
            _canonical_list(chronology),
        ),
        await people_entry(store, actor, chronology),
    ]
    seen_paths: set[str] = {e.path for e in records}
    documents: dict[str, EntrySource] = {}
    for item in chronology:
        record = item.record
        path = f"records/{_KIND_DIRS[type(record)]}/{record.id}.json"
        if path not in seen_paths:
            seen_paths.add(path)
            records.append(EntrySource.from_json(path, record))
        if isinstance(record, DocumentRef) and record.sha256 not in documents:
            documents[record.sha256] = _document_source(store, actor, record, bridge)
    return LeaverFile(pupil=pupil, chronology=chronology, entries=(*records, *documents.values()))


async def people_entry(
    store: Store, actor: Actor, chronology: Sequence[ChronologyEntry]
) -> EntrySource:
    """``records/people.json``: the sending organisation's staff who recorded the lines of
    ``chronology`` (decided, created, uploaded), by id, name and role."""
    from transfer.store.people import recorded_by

    named = await store.people_named(actor, (recorded_by(e.record) for e in chronology))
    return EntrySource.from_bytes(
        PEOPLE_PATH, canonical_json(_PEOPLE.dump_python(list(named), mode="json"))
    )


def _canonical_list(items: Sequence[ChronologyEntry]) -> bytes:
    return canonical_json(_CHRONOLOGY.dump_python(list(items), mode="json"))


async def build_leaver_package(
    store: Store,
    actor: Actor,
    pupil_id: str,
    out: BinaryIO,
    *,
    sender: Sender,
    recipient: Recipient,
    signer: minisign.SecretKey,
    recipients: Sequence[X25519Recipient],
    kind: PackageKind = "leaver_file",
    package_id: UUID | None = None,
) -> BuiltPackage:
    """Build the leaver's file of ``pupil_id`` into ``out``, streaming documents from the store.

    On error ``out`` holds an unfinished age stream: discard it.
    """
    leaver = await leaver_file_entries(store, actor, pupil_id)
    targets = {"pupil": pupil_id, "recipient": recipient.org_id}
    try:
        built = await asyncio.to_thread(
            build_package,
            out,
            kind=kind,
            sender=sender,
            recipient=recipient,
            subject=leaver.subject,
            entries=list(leaver.entries),
            signer=signer,
            recipients=recipients,
            package_id=package_id,
            created_at=store.now(),
            records_schema=RECORD_TYPES,
        )
    except HandoverError as exc:
        await store.record_event(
            "package.build", actor, actor.org_id, targets, outcome="failed", reason=exc.slug
        )
        raise
    await store.record_event(
        "package.build",
        actor,
        actor.org_id,
        {**targets, "package": str(built.manifest.package_id)},
        kind=kind,
        entries=len(built.manifest.entries),
        ciphertext_sha256=built.ciphertext_sha256,
    )
    return built
