"""Accepting a received package: a leaver's file imported, or a referral kept.

:meth:`Acceptance.accept` verifies the package again and imports it
(:mod:`transfer.exchange.importing`): pass 1 reads its records, pass 2 decrypts it again
and streams each document into the store encrypted; the **accepted** receipt is queued
for the sender and the ciphertext deleted (the imported records live in the store, where
erasure can reach them).

A **referral** (package kind ``referral_*``, received by an agency: MASH, the LADO, the
police) is not imported: :meth:`Acceptance.accept_referral` verifies it in full and
records the agency's own reference number, which goes back in the signed accepted
receipt; the verified ciphertext stays in ``data_dir/inbox`` for the agency's case work
and can be shown again. :meth:`Acceptance.accept_package` chooses between the two by the
package's kind (the API and the CLI use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.manifest import ManifestEntry
from transfer.errors import ConflictError, HandoverError, InputError, IntegrityError
from transfer.exchange.importing import Importer, ImportPlan, PackageRecords, RecordsImported
from transfer.exchange.inbox.core import InboxCore, moves, to_state
from transfer.exchange.inbox.models import (
    AcceptOutcome,
    InboxAcceptance,
    IncomingSummary,
    ReferenceRequiredError,
    Via,
    clean_reference,
    is_referral,
)
from transfer.exchange.inbox.reading import verify_file
from transfer.exchange.inbox.receipts import Receipts, push_delivered_too, receipt_row
from transfer.exchange.inbox.review import Review
from transfer.exchange.tables import ACCEPTED, OPEN_STATES, IncomingPackage
from transfer.states.incoming import IncomingEvent
from transfer.store.base import AuditIntent
from transfer.store.permissions import Actor
from transfer.wording import plural

log = logging.getLogger("handover.inbox")

#: Pass 2 of an import runs here, not in the default pool, so that its waits on the event
#: loop can never starve the loop's own short file writes of a thread.
_IMPORT_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="handover-import")


class Acceptance:
    """Accepts received packages: imports a leaver's file, keeps a referral."""

    def __init__(
        self, core: InboxCore, receipts: Receipts, review: Review, importer: Importer
    ) -> None:
        self.core = core
        self.receipts = receipts
        self.review = review
        self.importer = importer

    async def accept(
        self,
        actor: Actor,
        package_id: str,
        *,
        pupil_id: str | None = None,
        create_new: bool = False,
        reference: str | None = None,
        via: Via = "api",
    ) -> AcceptOutcome:
        """Verify the package again and import it; the accepted receipt is queued for the sender.

        ``reference`` (optional here) is our own reference, sent in the accepted receipt. A
        referral is never imported: it is accepted with :meth:`accept_referral`.
        """
        row = await self.review.for_dsl(actor, package_id, "transfer.accepted", via)
        targets = {"package": row.id}
        if is_referral(row.package_kind):
            raise InputError(
                f"package {row.id} is a referral ({row.package_kind}): it is not imported into "
                "the pupil store; accept it with your reference number instead"
            )
        if row.state not in OPEN_STATES:
            raise ConflictError(f"package {row.id} was already {row.state}")
        reference = clean_reference(reference)
        if pupil_id is not None:
            # The DSL names the pupil to import into as staff know pupils: by UPN (or id).
            pupil_id = await self.core.store.pupil_id_for(actor, pupil_id)
        plan: ImportPlan | None = None
        try:
            read = await self.review.read_full(row)
            records = read.records
            if records.pupil is None:
                raise InputError(
                    f"package {row.id} ({row.package_kind}) holds no pupil record to import; "
                    "only a leaver's file can be accepted into the store"
                )
            plan = await self.importer.plan(
                actor,
                records,
                read.verified.manifest.subject,
                pupil_id=pupil_id,
                create_new=create_new,
            )
            await self._import_documents(row, plan, records, read.verified.manifest_sha256)
            signed = await self.receipts.sign(
                row,
                ACCEPTED,
                acted_by=actor,
                manifest_sha256=read.verified.manifest_sha256,
                reference=reference,
            )
            now = self.core.now()
            chosen = plan
            intents: list[AuditIntent] = []

            async def promise(s: AsyncSession, done: RecordsImported) -> None:
                intents.append(
                    await self.core.intend(
                        s,
                        "transfer.accepted",
                        actor,
                        actor.org_id,
                        {**targets, "pupil": done.pupil_id},
                        sender=row.sender_org_id,
                        new_pupil=done.new_pupil,
                        matched_by=done.matched_by,
                        records=sum(done.counts.values()),
                        via=via,
                    )
                )
                intents.append(
                    await self.core.intend(
                        s,
                        "receipt.issued",
                        actor,
                        actor.org_id,
                        {**targets, "receipt": str(signed.body.receipt_id)},
                        kind=ACCEPTED,
                        to=row.sender_org_id,
                        via=via,
                    )
                )

            async def claim(s: AsyncSession) -> None:
                result = await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == row.id, *moves(IncomingEvent.ACCEPT))
                    .values(
                        **to_state(IncomingEvent.ACCEPT),
                        decided_at=now,
                        decided_by=actor.staff_id,
                        pupil_id=chosen.pupil_id,
                    )
                )
                if getattr(result, "rowcount", 0) != 1:
                    raise ConflictError(
                        f"package {row.id} was accepted or rejected by someone else meanwhile"
                    )
                s.add(receipt_row(signed, True, now))
                await push_delivered_too(s, row.id, now)

            result = await self.importer.commit(
                actor,
                plan,
                records,
                package_id=row.id,
                source_org_id=row.sender_org_id,
                source_org_name=row.sender_name,
                received_at=row.delivered_at or now,
                claim=claim,
                after=promise,
            )
        except HandoverError as err:
            if plan is not None:
                await self.importer.discard(plan)
            await self.core.audit(
                "transfer.accepted",
                actor,
                actor.org_id,
                targets,
                "refused",
                reason=err.slug,
                via=via,
            )
            raise
        except BaseException:
            if plan is not None:
                await self.importer.discard(plan)
            raise
        await self.core.store.settle(*intents)
        await asyncio.to_thread(self.core.inbox_path(row.id).unlink, True)
        await self._note_in_chronology(
            actor,
            result.pupil_id,
            "transfer.accepted",
            f"File received from {row.sender_name} ({row.package_kind.replace('_', ' ')}) "
            "accepted and imported",
            row.id,
        )
        return AcceptOutcome(
            package=await self.review.summary_of(row.id),
            pupil_id=result.pupil_id,
            new_pupil=result.new_pupil,
            matched_by=result.matched_by,
            counts=result.counts,
            skipped=result.skipped,
            held=result.held,
            amended=result.amended,
        )

    async def accept_referral(
        self, actor: Actor, package_id: str, *, reference: str | None, via: Via = "api"
    ) -> IncomingSummary:
        """Accept a referral with the agency's reference: verified in full, kept, not imported.

        The accepted receipt (naming the manifest and carrying ``reference``) is queued for
        the sender; the ciphertext stays in the inbox for the agency's case work.
        """
        row = await self.review.for_dsl(actor, package_id, "transfer.accepted", via)
        targets = {"package": row.id}
        if not is_referral(row.package_kind):
            raise InputError(
                f"package {row.id} is a {row.package_kind.replace('_', ' ')}, not a referral: "
                "accept it into the pupil store"
            )
        if row.state not in OPEN_STATES:
            raise ConflictError(f"package {row.id} was already {row.state}")
        try:
            if reference is None or not reference.strip():
                raise ReferenceRequiredError(
                    f"package {row.id} is a referral: give your reference number for it "
                    "(reference) to accept it; it goes back to the sender in the signed receipt"
                )
            reference = clean_reference(reference)
            read = await self.review.read_full(row)  # a referral: its form is parsed and checked
            signed = await self.receipts.sign(
                row,
                ACCEPTED,
                acted_by=actor,
                manifest_sha256=read.verified.manifest_sha256,
                reference=reference,
            )
            now = self.core.now()
            async with self.core.sessions() as s, s.begin():
                result = await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == row.id, *moves(IncomingEvent.ACCEPT))
                    .values(
                        **to_state(IncomingEvent.ACCEPT), decided_at=now, decided_by=actor.staff_id
                    )
                )
                if getattr(result, "rowcount", 0) != 1:
                    raise ConflictError(
                        f"package {row.id} was accepted or rejected by someone else meanwhile"
                    )
                s.add(receipt_row(signed, True, now))
                await push_delivered_too(s, row.id, now)
                intents = [
                    await self.core.intend(
                        s,
                        "transfer.accepted",
                        actor,
                        actor.org_id,
                        targets,
                        sender=row.sender_org_id,
                        kind=row.package_kind,
                        kept=True,
                        via=via,
                    ),
                    await self.core.intend(
                        s,
                        "receipt.issued",
                        actor,
                        actor.org_id,
                        {**targets, "receipt": str(signed.body.receipt_id)},
                        kind=ACCEPTED,
                        to=row.sender_org_id,
                        via=via,
                    ),
                ]
        except HandoverError as err:
            await self.core.audit(
                "transfer.accepted",
                actor,
                actor.org_id,
                targets,
                "refused",
                reason=err.slug,
                via=via,
            )
            raise
        await self.core.store.settle(*intents)
        return await self.review.summary_of(row.id)

    async def accept_package(
        self,
        actor: Actor,
        package_id: str,
        *,
        pupil_id: str | None = None,
        create_new: bool = False,
        reference: str | None = None,
        via: Via = "api",
    ) -> InboxAcceptance:
        """Accept whatever the package is: a referral with ``reference``, else import it."""
        row = await self.review.for_dsl(actor, package_id, "transfer.accepted", via)
        if is_referral(row.package_kind):
            if pupil_id is not None or create_new:
                raise InputError(
                    f"package {row.id} is a referral: it is not imported into the pupil store, "
                    "so pupil_id and create_new do not apply"
                )
            summary = await self.accept_referral(actor, row.id, reference=reference, via=via)
            return InboxAcceptance(package=summary, imported=False, reference=summary.reference)
        outcome = await self.accept(
            actor, row.id, pupil_id=pupil_id, create_new=create_new, reference=reference, via=via
        )
        return InboxAcceptance(
            package=outcome.package,
            imported=True,
            reference=outcome.package.reference,
            pupil_id=outcome.pupil_id,
            new_pupil=outcome.new_pupil,
            matched_by=outcome.matched_by,
            counts=outcome.counts,
            skipped=outcome.skipped,
            held=outcome.held,
            amended=outcome.amended,
        )

    async def _note_in_chronology(
        self, actor: Actor, pupil_id: str, kind: str, summary: str, ref: str
    ) -> None:
        add = getattr(self.core.store, "add_pupil_event", None)
        if add is None:
            return
        try:
            await add(actor, pupil_id, kind=kind, summary=summary, ref=ref)
        except HandoverError as err:
            log.warning("could not note %s in pupil %s's chronology: %s", kind, pupil_id, err.slug)

    async def _import_documents(
        self, row: IncomingPackage, plan: ImportPlan, records: PackageRecords, manifest_sha: str
    ) -> None:
        """Pass 2: decrypt the package again, streaming each document into the store encrypted.

        Pass 1 (``read_full``) verified the package whose signed manifest has the SHA-256
        ``manifest_sha``; pass 2 checks each entry against its own manifest, so the same
        manifest in both means the same contents (and the receipt names that manifest).
        """
        wanted = {d.sha256 for d in records.documents}
        if not wanted:
            return
        keyset = await self.core.keyset(row.recipient_org_id)
        sender_keys = await self.core.directory.sender_keys()
        loop = asyncio.get_running_loop()
        limit = self.core.store.max_document_bytes
        importer = self.importer

        def on_entry(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
            if not entry.path.startswith("documents/") or entry.sha256 not in wanted:
                return
            if entry.sha256 in plan.written:
                return
            _stream_to_loop(
                loop,
                chunks,
                lambda source: importer.write_document(plan, entry.sha256, source, limit),
            )

        path = self.core.inbox_path(row.id)
        verified = await loop.run_in_executor(
            _IMPORT_THREADS, lambda: verify_file(path, keyset, sender_keys, on_entry)
        )
        if verified.manifest_sha256 != manifest_sha:
            raise IntegrityError(f"the package file of {row.id} changed while it was imported")
        missing = wanted - set(plan.written)
        if missing:
            raise IntegrityError(
                f"the package lists {plural(len(missing), 'document')} whose files it does not hold"
            )


_END = object()


def _stream_to_loop(
    loop: asyncio.AbstractEventLoop,
    chunks: Iterator[bytes],
    consume: Callable[[AsyncIterator[bytes]], Any],
) -> None:
    """From a worker thread: feed ``chunks`` to the coroutine ``consume(source)`` on ``loop``.

    A small bounded queue carries the chunks, so memory stays at a few chunks;
    if the consumer fails, the producer stops at once and the error is raised
    here; if the producer fails (the package fails its check mid-entry), the
    consumer's source raises too, so it discards what it wrote.
    """
    holder: dict[str, Any] = {}

    async def start() -> None:
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=4)

        async def source() -> AsyncIterator[bytes]:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item

        holder["queue"] = queue
        holder["task"] = asyncio.ensure_future(consume(source()))

    asyncio.run_coroutine_threadsafe(start(), loop).result()
    queue: asyncio.Queue[object] = holder["queue"]
    task: asyncio.Future[Any] = holder["task"]

    async def put(item: object) -> bool:
        putting = asyncio.ensure_future(queue.put(item))
        done, _ = await asyncio.wait({putting, task}, return_when=asyncio.FIRST_COMPLETED)
        if putting not in done:
            putting.cancel()
            return False
        return True

    def send(item: object) -> bool:
        return asyncio.run_coroutine_threadsafe(put(item), loop).result()

    try:
        for chunk in chunks:
            if not send(chunk):
                break
        else:
            send(_END)
    except BaseException as exc:
        send(IntegrityError("the package failed a check while a document was being stored"))
        asyncio.run_coroutine_threadsafe(_settle(task), loop).result()
        raise exc
    asyncio.run_coroutine_threadsafe(_settle(task), loop).result()
    task.result()


async def _settle(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        await task
