"""Uploads from other nodes: the offer, then the chunks (contracts §5).

Called by :mod:`transfer.api.peer` once a request's signature has checked;
the last step, ``complete``, is :mod:`transfer.exchange.inbox.delivery`.

- :meth:`Uploads.offer` registers a package *before any byte*: the sender is the signing
  organisation, the recipient is hosted here, the size is within
  ``transfer.max_package_bytes`` and the disk can hold it above its reserve. The same
  package id again resumes (or, once delivered, returns the delivered receipt); the same
  id with another size, hash or sender is a conflict.
- :meth:`Uploads.receive_chunk` streams one chunk to ``data_dir/incoming/<id>.part`` at
  the held offset, hashing as it goes; a chunk whose bytes do not match its
  ``Content-Digest``, or that is cut short, is truncated away, so the held offset is
  always the last good one. The chunk is fsynced before the new offset is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hmac
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import update

from schemas.peer import OfferBody
from transfer.errors import (
    ConflictError,
    InsufficientStorageError,
    NotFoundError,
    TooLargeError,
    TransportError,
)
from transfer.exchange.inbox.core import InboxCore, own, package_id_of
from transfer.exchange.inbox.models import (
    OffsetMismatchError,
    PackageRefusedError,
    PeerCaller,
    UploadBusyError,
)
from transfer.exchange.inbox.receipts import Receipts
from transfer.exchange.tables import DELIVERED, RECEIVING, REFUSED, IncomingPackage
from transfer.httpsig import DigestHasher, DigestMismatchError, check_digest
from transfer.space import as_out_of_space
from transfer.store.base import AuditIntent
from transfer.store.permissions import PermissionDenied

log = logging.getLogger("handover.inbox")


def _hash_and_write(fd: int, hasher: DigestHasher, piece: bytes, offset: int) -> int:
    """Hash ``piece`` and write it at ``offset``, on the event loop; the bytes written.

    Each piece of a received body is hashed and written where it is read, as a plain
    aiohttp upload handler writes its file: measured on the two-core machine, handing
    batches to a worker thread made a 1 GiB upload about 1.5 times slower (the worker
    and the event loop passed the GIL to and fro, and three busy threads shared two
    cores). Writing into the page cache does not wait for the disk; the fsyncs of the
    checkpoints run in a worker.
    """
    hasher.update(piece)
    view = memoryview(piece)
    total = 0
    while total < len(view):
        n = os.pwrite(fd, view[total:], offset + total)
        if n <= 0:
            raise OSError(errno.EIO, "the disk accepted no more of the chunk")
        total += n
    return total


class Uploads:
    """The uploads in progress: offers, chunks and the offsets held."""

    def __init__(self, core: InboxCore, receipts: Receipts) -> None:
        self.core = core
        self.receipts = receipts
        #: Uploads whose whole body came in one request from offset 0, with its checked
        #: digest: ``complete`` need not read the file again (in this process only).
        self.whole_sha256: dict[str, str] = {}

    async def offer(self, caller: PeerCaller, offer: OfferBody) -> tuple[int, dict[str, Any]]:
        """Register (or resume) an upload; the answer's status and body (contracts §5)."""
        pid = str(offer.package_id)
        targets = {"package": pid}
        if offer.sender_org_id != caller.org_id:
            await self.core.audit(
                "transfer.offer",
                None,
                offer.recipient_org_id,
                targets,
                "refused",
                sender=caller.org_id,
                reason="sender-mismatch",
            )
            raise PermissionDenied(
                f"the request is signed by {caller.org_id} but offers a package from "
                f"{offer.sender_org_id}; an organisation may only send its own packages"
            )
        hosted = await asyncio.to_thread(self.core.keys.exists, offer.recipient_org_id)
        if hosted:
            try:
                await self.core.store.get_organisation(offer.recipient_org_id)
            except NotFoundError:
                hosted = False
        if not hosted:
            await self.core.audit(
                "transfer.offer",
                None,
                None,
                targets,
                "refused",
                sender=caller.org_id,
                reason="recipient-not-hosted",
            )
            raise NotFoundError(
                f"organisation {offer.recipient_org_id} is not hosted on this node; check its "
                "endpoint in the directory"
            )
        limit = self.core.config.transfer.max_package_bytes
        if offer.size > limit:
            await self.core.audit(
                "transfer.offer",
                None,
                offer.recipient_org_id,
                targets,
                "refused",
                sender=caller.org_id,
                reason="too-large",
                size=offer.size,
            )
            raise TooLargeError(
                f"the package is {offer.size} bytes, over this node's limit of {limit} bytes"
            )
        await self._check_room(caller, offer)
        now = self.core.now()
        row = IncomingPackage(
            id=pid,
            recipient_org_id=offer.recipient_org_id,
            sender_org_id=caller.org_id,
            sender_name=caller.name[:200],
            sender_key_id=caller.key_id,
            package_kind=offer.package_kind,
            size=offer.size,
            ciphertext_sha256=offer.ciphertext_sha256,
            received=0,
            state=RECEIVING,
            offered_at=now,
        )
        created = False
        intent: AuditIntent | None = None
        try:
            async with self.core.sessions() as s, s.begin():
                if await s.get(IncomingPackage, pid) is None:
                    s.add(row)
                    intent = await self.core.intend(
                        s,
                        "transfer.offer",
                        None,
                        offer.recipient_org_id,
                        targets,
                        sender=caller.org_id,
                        size=offer.size,
                        kind=offer.package_kind,
                    )
                    created = True
        except sa_exc.IntegrityError:
            created = False
        if not created:
            row = await self.core.row(pid)
            same = (
                row.sender_org_id == caller.org_id
                and row.recipient_org_id == offer.recipient_org_id
                and row.size == offer.size
                and row.package_kind == offer.package_kind
                and hmac.compare_digest(row.ciphertext_sha256, offer.ciphertext_sha256)
            )
            if not same:
                await self.core.audit(
                    "transfer.offer",
                    None,
                    offer.recipient_org_id,
                    targets,
                    "refused",
                    sender=caller.org_id,
                    reason="id-conflict",
                )
                raise ConflictError(
                    f"package {pid} is already known here with another sender, recipient, size "
                    "or hash; a package id is used for one package only"
                )
            if row.state == REFUSED:
                raise PackageRefusedError(
                    f"package {pid} was refused earlier "
                    f"({row.refused_reason or 'it failed a check'}); build a new package to send "
                    "again",
                )
            if row.state != RECEIVING:
                receipt = await self.receipts.delivered(row)
                return 200, {"state": DELIVERED, "receipt": receipt.to_dict()}
        if created and intent is not None:
            await self.core.store.settle(intent)
        await asyncio.to_thread(self._ensure_part, pid)
        if created:
            return 201, {"offset": 0, "state": RECEIVING}
        return 200, {"offset": await self.resume_point(row), "state": RECEIVING}

    async def _check_room(self, caller: PeerCaller, offer: OfferBody) -> None:
        """Refuse (507) an upload this node's disk cannot hold while keeping its reserve.

        What is still to come (the whole package, or the rest of an upload being resumed)
        plus ``transfer.disk_reserve_bytes`` must be free on the file system holding
        ``incoming/``; otherwise the upload would fill the disk and stop smaller packages
        (and everything else the node writes). The sender keeps the package and offers it
        again on its retry schedule.
        """
        pid = str(offer.package_id)
        held = 0
        async with self.core.sessions() as s:
            row = await s.get(IncomingPackage, pid)
        if row is not None:
            if row.state != RECEIVING or row.sender_org_id != caller.org_id:
                return  # already here, or not this sender's: the offer's own checks answer
            held = min(row.received, offer.size)
        needed = offer.size - held
        reserve = self.core.config.transfer.disk_reserve_bytes
        free = await asyncio.to_thread(self.core.free_space, self.core.incoming_dir)
        if free - needed >= reserve:
            return
        await self.core.audit(
            "transfer.offer",
            None,
            offer.recipient_org_id,
            {"package": pid},
            "refused",
            sender=caller.org_id,
            reason="insufficient-storage",
            size=offer.size,
            needed=needed,
            free=free,
            reserve=reserve,
        )
        log.warning(
            "package %s from %s refused for now: %d more bytes would leave %d free, under the "
            "reserve of %d (transfer.disk_reserve_bytes); free space on the disk of %s",
            pid,
            caller.org_id,
            needed,
            max(0, free - needed),
            reserve,
            self.core.incoming_dir,
        )
        raise InsufficientStorageError(
            f"this node cannot hold package {pid} ({needed} more bytes) just now: it has "
            f"{max(free, 0)} bytes free and keeps {reserve} in reserve; offer it again later",
            detail={"needed": needed},
        )

    def _ensure_part(self, pid: str) -> None:
        self.core.incoming_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.core.part_path(pid), os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)

    async def resume_point(self, row: IncomingPackage) -> int:
        """The held offset, lowered to 0 if the file behind it is gone (the operator removed it)."""
        path = self.core.part_path(row.id)
        size = await asyncio.to_thread(lambda: path.stat().st_size if path.exists() else -1)
        if size < row.received:
            await asyncio.to_thread(self._ensure_part, row.id)
            async with self.core.sessions() as s, s.begin():
                await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == row.id, IncomingPackage.state == RECEIVING)
                    .values(received=0)
                )
            log.warning("the partial upload of package %s was missing; restarting it", row.id)
            return 0
        return row.received

    async def upload_offset(self, caller: PeerCaller, package_id: str) -> int:
        """``HEAD``: how many bytes of the upload are held (its size once delivered)."""
        row = await self.core.row(package_id_of(package_id))
        own(row, caller)
        if row.state == REFUSED:
            raise PackageRefusedError(f"package {row.id} was refused: {row.refused_reason}")
        if row.state != RECEIVING:
            return row.size
        return await self.resume_point(row)

    async def receive_chunk(
        self,
        caller: PeerCaller,
        package_id: str,
        offset: int,
        digest_header: str,
        chunks: AsyncIterator[bytes],
    ) -> int:
        """Write one chunk at ``offset``; the new offset. All of the chunk or none of it."""
        pid = package_id_of(package_id)
        row = await self.core.row(pid)
        own(row, caller)
        if row.state != RECEIVING:
            raise ConflictError(
                f"package {pid} is already complete here; nothing more is needed",
                detail={"offset": row.size},
            )
        try:
            fd = await asyncio.to_thread(os.open, self.core.part_path(pid), os.O_RDWR)
        except FileNotFoundError:
            held = await self.resume_point(row)
            raise OffsetMismatchError(
                f"the upload must continue from offset {held}", detail={"offset": held}
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UploadBusyError(
                        f"another upload of package {pid} is in progress; try again shortly",
                        detail={"offset": row.received},
                    ) from None
                raise
            row = await self.core.row(pid)  # fresh, now that we hold the file
            if row.state != RECEIVING:
                raise ConflictError(
                    f"package {pid} is already complete here", detail={"offset": row.size}
                )
            held = row.received
            if offset != held:
                raise OffsetMismatchError(
                    f"the chunk starts at offset {offset} but this node holds {held} bytes of "
                    f"package {pid}; continue from {held}",
                    detail={"offset": held},
                )
            return await self._write_chunk(fd, row, digest_header, chunks)
        finally:
            await asyncio.to_thread(os.close, fd)  # also releases the lock

    async def _write_chunk(
        self, fd: int, row: IncomingPackage, digest_header: str, chunks: AsyncIterator[bytes]
    ) -> int:
        """Stream one request's body to the file at the held offset; the new held offset.

        Every ``transfer.checkpoint_bytes`` the bytes so far are fsynced and the held offset
        committed, so a break (a dropped connection, a killed process) resumes from the last
        checkpoint instead of the request's start. Bytes kept that way are checked against
        the offered SHA-256 of the whole package at ``complete``; a request whose body does
        not match its signed ``Content-Digest`` is undone back to where it started.
        """
        start = row.received
        await asyncio.to_thread(os.ftruncate, fd, start)
        every = self.core.config.transfer.checkpoint_bytes
        hasher = DigestHasher()
        queued = start  # start + every byte written so far
        committed = start  # the held offset in the database (fsynced bytes before it)
        # A checkpoint's fsync and commit run while the next bytes are read and written; the
        # next checkpoint first waits for it (at most one in flight).
        pending: asyncio.Task[int] | None = None
        mark = start  # where the last checkpoint (committed or in flight) is
        try:
            async for piece in chunks:
                if queued + len(piece) > row.size:
                    raise TooLargeError(
                        f"the chunk goes beyond the package's declared size of {row.size} bytes"
                    )
                if not piece:
                    continue
                queued += _hash_and_write(fd, hasher, piece, queued)
                if queued - mark >= every:
                    if pending is not None:
                        committed = await pending
                    pending = asyncio.create_task(self._hold(fd, row.id, committed, queued))
                    mark = queued
            if pending is not None:
                committed = await pending
                pending = None
            check_digest(digest_header, hasher.digest())
            new = await self._hold(fd, row.id, committed, queued)
            if start == 0 and new == row.size:
                # This body was the whole package: its digest is the package's SHA-256.
                self.whole_sha256[row.id] = hasher.digest().hex()
            return new
        except BaseException as exc:
            if pending is not None:
                # Let the checkpoint in flight end: what it committed is held.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    committed = await asyncio.shield(pending)
            keep = committed
            if isinstance(exc, (TooLargeError, DigestMismatchError)) and committed != start:
                # The body is not what the sender signed: none of it is kept.
                keep = await self._unhold(row.id, committed, start)
            # Keep only what was committed: the held offset stays good.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, keep)
            if isinstance(exc, OSError):
                full = as_out_of_space(exc, str(self.core.incoming_dir))
                if full is not None:
                    full.detail["offset"] = keep
                    raise full from None
                raise TransportError(f"could not store the chunk: {exc.strerror}") from None
            if isinstance(exc, TransportError) and keep != start:
                raise TransportError(
                    f"{exc.message} ({keep} bytes are held)", detail={"offset": keep}
                ) from None
            raise

    async def _hold(self, fd: int, pid: str, held: int, new: int) -> int:
        """Make the bytes up to ``new`` durable, then commit ``new`` as the held offset."""
        await asyncio.to_thread(os.fsync, fd)
        if not await self._move_held(pid, held, new):
            raise UploadBusyError(
                f"package {pid} changed while this chunk was written; ask for the "
                "offset and continue",
                detail={"offset": held},
            )
        return new

    async def _unhold(self, pid: str, held: int, back_to: int) -> int:
        """Put the held offset back to ``back_to`` (a checkpointed body proved bad)."""
        return back_to if await self._move_held(pid, held, back_to) else held

    async def _move_held(self, pid: str, held: int, to: int) -> bool:
        """Set the held offset of a receiving upload from ``held`` to ``to``; whether it was."""
        async with self.core.sessions() as s, s.begin():
            result = await s.execute(
                update(IncomingPackage)
                .where(
                    IncomingPackage.id == pid,
                    IncomingPackage.received == held,
                    IncomingPackage.state == RECEIVING,
                )
                .values(received=to)
            )
        return bool(getattr(result, "rowcount", 1) == 1)
