"""Delivery: claiming due packages with a lease, uploading each (resumable, chunk by chunk)
until the receiver's signed ``delivered`` receipt, and retrying or failing
(:class:`OutboxDelivery`, part of :class:`transfer.exchange.outbox.Outbox`)."""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import and_, or_, select, update

from transfer.errors import (
    HandoverError,
    IntegrityError,
    TransportError,
)
from transfer.exchange import backoff
from transfer.exchange.outbox.receipts import OutboxReceipts, _receipt_from_json
from transfer.exchange.outbox.records import (
    LeaseLostError,
    PackageFileDamagedError,
    PackageFileMissingError,
    PackageRow,
    _label,
    _moves,
    _p,
    _rowcount,
    _short,
    _to,
    check_own_copy,
)
from transfer.exchange.tables import (
    outgoing_events,
)
from transfer.httpsig import DigestHasher, digest_header
from transfer.states.outgoing import OutgoingEvent as On
from transfer.transport.base import PeerRefused
from transfer.wording import plural

if TYPE_CHECKING:
    pass


log = logging.getLogger("handover.outbox")

#: The sender reads its package file in pieces of this size (one worker-thread hop each).
_READ_PIECE: Final = 1024 * 1024
#: Consecutive "wrong offset" answers tolerated before the attempt is given up.
_MAX_OFFSET_CONFLICTS: Final = 3


def _digest_range(path: Path, offset: int, length: int) -> str:
    hasher = DigestHasher()
    with path.open("rb") as fh:
        fh.seek(offset)
        left = length
        while left:
            piece = fh.read(min(_READ_PIECE, left))
            if not piece:
                raise PackageFileMissingError(
                    f"the package file {path.name} is shorter than recorded"
                )
            hasher.update(piece)
            left -= len(piece)
    return hasher.header()


class _ChunkDigests:
    """Each upload chunk's ``Content-Digest``; the next one is hashed ahead, in a worker thread.

    The digest must be in the request's headers (the signature covers it), so a
    chunk is read twice: once to hash it, once to send it. Hashing chunk *k + 1*
    while chunk *k* is sent keeps the wire busy; ``hashlib`` releases the GIL.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._ahead: tuple[int, int, asyncio.Task[str]] | None = None

    async def get(self, offset: int, length: int) -> str:
        """The digest of ``length`` bytes at ``offset`` (hashed ahead if it was foreseen)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if ahead[0] == offset and ahead[1] == length:
                return await ahead[2]
            _drop(ahead[2])  # the peer asked for another offset
        return await asyncio.to_thread(_digest_range, self._path, offset, length)

    def prefetch(self, offset: int, length: int) -> None:
        """Start hashing the chunk likely to come next (nothing if there is none)."""
        if self._ahead is not None:
            _drop(self._ahead[2])
            self._ahead = None
        if length > 0:
            task = asyncio.create_task(asyncio.to_thread(_digest_range, self._path, offset, length))
            self._ahead = (offset, length, task)

    def close(self) -> None:
        """Forget a digest hashed ahead but not needed (the upload ended or failed)."""
        if self._ahead is not None:
            _drop(self._ahead[2])
            self._ahead = None


def _drop(task: asyncio.Task[str]) -> None:
    """Cancel an unneeded hashing task; an error it already had is seen, not logged as lost."""
    if task.done():
        if not task.cancelled():
            task.exception()
    else:
        task.cancel()


async def _read_range(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes of ``path`` from ``offset``, in pieces; the next piece is read (in a
    worker thread) while this one is sent."""
    fh = await asyncio.to_thread(path.open, "rb")
    ahead: asyncio.Future[bytes] | None = None
    try:
        await asyncio.to_thread(fh.seek, offset)
        left = length
        ahead = asyncio.ensure_future(asyncio.to_thread(fh.read, min(_READ_PIECE, left)))
        while left and ahead is not None:
            piece = await ahead
            ahead = None
            if not piece:
                raise PackageFileMissingError(
                    f"the package file {path.name} is shorter than recorded"
                )
            left -= len(piece)
            if left:
                ahead = asyncio.ensure_future(asyncio.to_thread(fh.read, min(_READ_PIECE, left)))
            yield piece
    finally:
        if ahead is not None:
            # A read still running in its thread must end before the file is closed.
            await asyncio.wait([ahead])
            if not ahead.cancelled():
                ahead.exception()
        await asyncio.to_thread(fh.close)


def _offset(value: object, size: int, where: str) -> int:
    try:
        n = int(str(value))
    except ValueError:
        raise IntegrityError(f"{where} gave an upload offset that is not a number") from None
    if not 0 <= n <= size:
        raise IntegrityError(f"{where} gave the upload offset {n}, outside 0..{size}")
    return n


class OutboxDelivery(OutboxReceipts):
    """Claim, upload, retry and fail."""

    # ------------------------------------------------------------------ delivery

    async def claim(self, limit: int) -> builtins.list[str]:
        """Claim up to ``limit`` due items for this process (a lease of ``self.lease``); each
        claim starts an attempt (``attempts`` counts them)."""
        now = self._now()
        lease = now + self.lease
        due = and_(
            _p.c.state == "queued",
            or_(_p.c.next_attempt_at.is_(None), _p.c.next_attempt_at <= now),
            or_(_p.c.lease_until.is_(None), _p.c.lease_until < now),
        )
        order = (_p.c.next_attempt_at, _p.c.created_at, _p.c.id)
        claim = {"claimed_by": self.worker_id, "lease_until": lease, "attempts": _p.c.attempts + 1}
        if not self._sqlite:
            async with self.store.sessions() as s, s.begin():
                ids = list(
                    (
                        await s.execute(
                            select(_p.c.id)
                            .where(due)
                            .order_by(*order)
                            .limit(limit)
                            .with_for_update(skip_locked=True)
                        )
                    ).scalars()
                )
                if ids:
                    await s.execute(update(_p).where(_p.c.id.in_(ids)).values(**claim))
            return ids
        async with self.store.sessions() as s:
            candidates = list(
                (
                    await s.execute(select(_p.c.id).where(due).order_by(*order).limit(limit))
                ).scalars()
            )
        claimed: builtins.list[str] = []
        for package_id in candidates:
            async with self.store.sessions() as s, s.begin():
                done = await s.execute(update(_p).where(_p.c.id == package_id, due).values(**claim))
            if _rowcount(done) == 1:
                claimed.append(package_id)
        return claimed

    async def _renew(self, package_id: str) -> None:
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(
                    _p.c.id == package_id, _p.c.claimed_by == self.worker_id, _p.c.state == "queued"
                )
                .values(lease_until=now + self.lease)
            )
        if _rowcount(done) != 1:
            raise LeaseLostError(
                f"package {package_id} was taken over by another process or changed state"
            )

    async def deliver_due(self, *, limit: int = 10) -> int:
        """One delivery sweep: claim up to ``limit`` due items and try each (concurrently).

        Returns how many items were tried. Safe to run in several processes at once.
        """
        await self.discard_stale_drafts()
        ids = await self.claim(limit)
        if ids:
            await asyncio.gather(*(self._deliver(package_id) for package_id in ids))
        return len(ids)

    async def deliver_flowing(self, *, window: int = 10, most: int = 200) -> int:
        """A delivery sweep that keeps up to ``window`` deliveries going at once.

        As each delivery ends, the next due item is claimed (with its own lease), so one
        slow receiver holds one slot, not the whole sweep; the sweep ends when nothing
        is due and nothing is in flight, or after ``most`` items. Returns how many were
        tried. Safe to run in several processes at once (each claim is a lease).
        """
        await self.discard_stale_drafts()
        running: set[asyncio.Future[None]] = set()
        tried = 0
        try:
            while True:
                free = min(window - len(running), most - tried)
                if free > 0:
                    ids = await self.claim(free)
                    tried += len(ids)
                    running.update(asyncio.ensure_future(self._deliver(i)) for i in ids)
                if not running:
                    return tried
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # _deliver handles every error of a delivery itself
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _deliver(self, package_id: str) -> None:
        row = await self._row(package_id)
        if row is None or row.claimed_by != self.worker_id:
            return
        try:
            await self._upload(row)
        except LeaseLostError as exc:
            log.warning("package %s: %s", package_id, exc.message)
        except PeerRefused as exc:
            await self._fail(row, exc.message, slug=exc.slug, status=exc.status)
        except TransportError as exc:
            await self._retry(row, exc.message, slug=exc.slug)
        except IntegrityError as exc:
            if isinstance(exc, (PackageFileMissingError, PackageFileDamagedError)):
                await self._fail(row, exc.message, slug=exc.slug)
            else:
                # A receipt that does not verify, or an answer that makes no sense: the
                # receiver may be mid-way through a key change; try again, give up in time.
                await self._retry(row, exc.message, slug=exc.slug)
        except HandoverError as exc:
            await self._fail(row, exc.message, slug=exc.slug)
        except Exception:
            log.exception("package %s: unexpected error while delivering", package_id)
            await self._retry(row, "an unexpected error on this node (see its log)", slug="error")

    async def _upload(self, row: PackageRow) -> None:
        path = self.path_of(row.id)
        if not await asyncio.to_thread(path.is_file):
            raise PackageFileMissingError(
                f"the package file {path.name} is no longer in the outbox; queue a new package"
            )
        size, sha256 = row.built()
        await check_own_copy(path, size, sha256)
        frm, to = row.org_id, row.to_org_id
        where = f"{row.to_name} ({to})"
        start = await self.client.request_json(
            frm,
            to,
            "POST",
            "/peer/v1/packages",
            {
                "package_id": row.id,
                "package_kind": row.kind,
                "sender_org_id": frm,
                "recipient_org_id": to,
                "size": size,
                "ciphertext_sha256": sha256,
            },
        )
        if start.get("state") == "delivered" and start.get("receipt") is not None:
            await self._accept_delivery(row, start["receipt"])
            return
        offset = _offset(start.get("offset"), size, where)
        # The lease is renewed every third of its length while the upload runs; a lost lease
        # stops the upload at once.
        sending = asyncio.ensure_future(self._send_body(row, path, offset, where))
        keeper = asyncio.ensure_future(self._keep_lease(row.id))
        try:
            await asyncio.wait({sending, keeper}, return_when=asyncio.FIRST_COMPLETED)
            if not sending.done():
                keeper.result()  # the keeper only ends by failing: the lease was lost
            await sending
        finally:
            for task in (sending, keeper):
                task.cancel()
            await asyncio.gather(sending, keeper, return_exceptions=True)
        if not await self._has_event(row.id, "sent"):
            now = self._now()
            async with self.store.sessions() as s, s.begin():
                await s.execute(self._event(row.id, "sent", "queued", now))
                intent = await self._intend(s, "transfer.sent", None, row, size=size)
            await self.store.settle(intent)
        target = f"/peer/v1/packages/{row.id}/complete"
        done = await self.client.request_json(frm, to, "POST", target, {})
        await self._accept_delivery(row, done.get("receipt"))

    async def _keep_lease(self, package_id: str) -> None:
        """Renew this process's lease on an item until cancelled; raises once it is lost."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            await self._renew(package_id)

    async def _send_body(self, row: PackageRow, path: Path, offset: int, where: str) -> None:
        """``PATCH`` the package's bytes from ``offset`` until the receiver holds them all.

        Each request carries at most ``transfer.chunk_bytes``; by default the whole rest of
        the package. Its ``Content-Digest`` must be in the headers (the signature covers it):
        for the whole package from offset 0 it is the package's known SHA-256, otherwise the
        range is hashed first (the next range while this one is on the wire).
        """
        size, sha256 = row.built()
        frm, to = row.org_id, row.to_org_id
        chunk = self.config.transfer.chunk_bytes
        target = f"/peer/v1/packages/{row.id}"
        digests = _ChunkDigests(path)
        conflicts = 0
        try:
            while offset < size:
                n = min(chunk, size - offset)
                if offset == 0 and n == size:
                    digest = digest_header(bytes.fromhex(sha256))
                else:
                    digest = await digests.get(offset, n)
                    # The next chunk is hashed while this one is on the wire.
                    digests.prefetch(offset + n, min(chunk, size - offset - n))
                try:
                    resp = await self.client.request(
                        frm,
                        to,
                        "PATCH",
                        target,
                        data=_read_range(path, offset, n),
                        digest=digest,
                        headers={
                            "Content-Type": "application/offset+octet-stream",
                            "Upload-Offset": str(offset),
                            "Content-Length": str(n),
                        },
                    )
                except PeerRefused as exc:
                    if exc.status != 409 or conflicts >= _MAX_OFFSET_CONFLICTS:
                        raise
                    conflicts += 1
                    held = exc.problem.get("offset")
                    if held is None:
                        head = await self.client.request(frm, to, "HEAD", target)
                        held = head.headers.get("Upload-Offset")
                    offset = _offset(held, size, where)
                    continue
                conflicts = 0
                self.bytes_sent += n
                offset = _offset(resp.headers.get("Upload-Offset"), size, where)
        finally:
            digests.close()

    async def _has_event(self, package_id: str, event: str) -> bool:
        async with self.store.sessions() as s:
            found = (
                await s.execute(
                    select(outgoing_events.c.id)
                    .where(
                        outgoing_events.c.package_id == package_id, outgoing_events.c.event == event
                    )
                    .limit(1)
                )
            ).first()
        return found is not None

    async def _accept_delivery(self, row: PackageRow, value: object) -> None:
        signed = _receipt_from_json(value)
        if signed.body.kind != "delivered":
            raise IntegrityError(
                f"the other node answered the upload with a {signed.body.kind} receipt, "
                "not a delivered one"
            )
        if not await self.take_receipt(signed):
            # Held already (pushed, or the answer to an earlier attempt): nothing moved the
            # state, so the lease is given back here; a new receipt's move gave it back.
            await self._release(row.id)

    async def _release(self, package_id: str) -> None:
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(_p)
                .where(_p.c.id == package_id, _p.c.claimed_by == self.worker_id)
                .values(claimed_by=None, lease_until=None)
            )

    async def _retry(self, row: PackageRow, message: str, *, slug: str) -> None:
        now = self._now()
        current = await self._row(row.id)
        if current is None or current.claimed_by != self.worker_id or current.state != "queued":
            await self._release(row.id)
            return
        queued_at = current.queued_at or current.created_at
        if backoff.should_give_up(queued_at, now, self.config.transfer.give_up_hours):
            hours = self.config.transfer.give_up_hours
            await self._fail(
                current,
                f"not delivered within {plural(hours, 'hour')}; the last error was: {message}",
                slug=slug,
                gave_up=True,
            )
            return
        when = self._delay(max(1, int(current.attempts)))
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(_p.c.id == row.id, _p.c.claimed_by == self.worker_id, _p.c.state == "queued")
                .values(
                    next_attempt_at=when,
                    last_error=_short(message),
                    claimed_by=None,
                    lease_until=None,
                )
            )
            intents = []
            if _rowcount(done) == 1:
                await s.execute(self._event(row.id, "retry", "queued", now, detail=message))
                attempt = await self._intend(
                    s,
                    "transfer.attempt",
                    None,
                    current,
                    "failed",
                    reason=slug,
                    attempt=int(current.attempts),
                    next_attempt=when.isoformat(),
                )
                intents.append(attempt)
        log.info("package %s not delivered yet (%s); next try at %s", row.id, message, when)
        await self.store.settle(*intents)

    async def _fail(
        self,
        row: PackageRow,
        message: str,
        *,
        slug: str,
        status: int | None = None,
        gave_up: bool = False,
    ) -> None:
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(_p.c.id == row.id, _p.c.claimed_by == self.worker_id, *_moves(On.GIVE_UP))
                .values(
                    **_to(On.GIVE_UP),
                    state_changed_at=now,
                    failure_reason=_short(message),
                    last_error=_short(message),
                    next_attempt_at=None,
                    claimed_by=None,
                    lease_until=None,
                )
            )
            intents = []
            if _rowcount(done) == 1:
                await s.execute(self._event(row.id, "failed", "failed", now, detail=message))
                failed = await self._intend(
                    s,
                    "transfer.failed",
                    None,
                    row,
                    "failed",
                    reason=slug,
                    peer_status=status,
                    gave_up=gave_up,
                )
                intents.append(failed)
        if _rowcount(done) != 1:
            await self._release(row.id)
            return
        log.warning("package %s failed: %s", row.id, message)
        await self.store.settle(*intents)
        await self._chronology(
            None,
            row.pupils,
            "failed",
            f"{_label(row.kind)} to {row.to_name} could not be delivered: {message}"[:1000],
            row.id,
            now,
        )
