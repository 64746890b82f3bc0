"""Completing an upload: check the whole package, then deliver it or refuse it.

:meth:`Delivery.complete` checks the size and SHA-256 of the whole ciphertext, decrypts
*only the manifest* (in memory), checks its signature, sender, kind and addressee,
moves the file to ``data_dir/inbox/<id>.age`` and issues the signed **delivered**
receipt, all idempotent. A package failing a check is refused for good under its id.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import os
from pathlib import Path

from sqlalchemy import update

from transfer.errors import HandoverError, IntegrityError, TransportError
from transfer.exchange.inbox.core import InboxCore, moves, own, package_id_of, to_state
from transfer.exchange.inbox.models import OffsetMismatchError, PackageRefusedError, PeerCaller
from transfer.exchange.inbox.reading import inspect_file
from transfer.exchange.inbox.receipts import Receipts, receipt_row
from transfer.exchange.inbox.upload import Uploads
from transfer.exchange.tables import DELIVERED, RECEIVING, REFUSED, IncomingPackage
from transfer.receipts import SignedReceipt
from transfer.states.incoming import IncomingEvent
from transfer.store.base import AuditIntent
from transfer.store.permissions import PermissionDenied

_HASH_CHUNK = 1024 * 1024


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(_HASH_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Delivery:
    """Completes uploads: the checks of the whole package, then delivered or refused."""

    def __init__(self, core: InboxCore, receipts: Receipts, uploads: Uploads) -> None:
        self.core = core
        self.receipts = receipts
        self.uploads = uploads

    async def complete(self, caller: PeerCaller, package_id: str) -> SignedReceipt:
        """Check the whole upload and its manifest; store it as delivered; the receipt."""
        pid = package_id_of(package_id)
        row = await self.core.row(pid)
        own(row, caller)
        if row.state == REFUSED:
            raise PackageRefusedError(f"package {pid} was refused: {row.refused_reason}")
        if row.state != RECEIVING:
            return await self.receipts.delivered(row)
        part = self.core.part_path(pid)
        try:
            fd = await asyncio.to_thread(os.open, part, os.O_RDWR)
        except FileNotFoundError:
            if self.core.inbox_path(pid).exists():
                fd = await asyncio.to_thread(os.open, self.core.inbox_path(pid), os.O_RDONLY)
                part = self.core.inbox_path(pid)
            else:
                held = await self.uploads.resume_point(row)
                raise OffsetMismatchError(
                    f"the upload of package {pid} is not complete; continue from offset {held}",
                    detail={"offset": held},
                ) from None
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            row = await self.core.row(pid)
            if row.state == REFUSED:
                raise PackageRefusedError(f"package {pid} was refused: {row.refused_reason}")
            if row.state != RECEIVING:
                return await self.receipts.delivered(row)
            return await self._check_and_deliver(row, part)
        finally:
            await asyncio.to_thread(os.close, fd)

    def _held_sha256(self, pid: str, part: Path) -> tuple[str, int]:
        """SHA-256 and size of the held file (worker thread).

        Read and hashed again unless one request brought the whole file in this process;
        then the digest checked on that request's body is the file's.
        """
        known = self.uploads.whole_sha256.pop(pid, None)
        if known is not None:
            return known, part.stat().st_size
        return _sha256_file(part)

    async def _refuse(self, row: IncomingPackage, part: Path, err: HandoverError) -> None:
        reason = f"{err.slug}: {err.diagnostics()}"[:300]
        intents: list[AuditIntent] = []
        async with self.core.sessions() as s, s.begin():
            done = await s.execute(
                update(IncomingPackage)
                .where(IncomingPackage.id == row.id, *moves(IncomingEvent.REFUSE))
                .values(**to_state(IncomingEvent.REFUSE), refused_reason=reason)
            )
            if getattr(done, "rowcount", 0) == 1:
                intents.append(
                    await self.core.intend(
                        s,
                        "transfer.received",
                        None,
                        row.recipient_org_id,
                        {"package": row.id},
                        "refused",
                        sender=row.sender_org_id,
                        reason=err.slug,
                    )
                )
        await self.core.store.settle(*intents)
        await asyncio.to_thread(part.unlink, True)

    async def _check_and_deliver(self, row: IncomingPackage, part: Path) -> SignedReceipt:
        pid = row.id
        if row.received != row.size:
            raise OffsetMismatchError(
                f"the upload of package {pid} is not complete: {row.received} of {row.size} "
                f"bytes held; continue from offset {row.received}",
                detail={"offset": row.received},
            )
        sha, size = await asyncio.to_thread(self._held_sha256, pid, part)
        if size != row.size or not hmac.compare_digest(sha, row.ciphertext_sha256):
            # The bytes held are not the package offered: start again from nothing.
            await asyncio.to_thread(os.truncate, part, 0)
            async with self.core.sessions() as s, s.begin():
                await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == pid, IncomingPackage.state == RECEIVING)
                    .values(received=0)
                )
            await self.core.audit(
                "transfer.received",
                None,
                row.recipient_org_id,
                {"package": pid},
                "refused",
                sender=row.sender_org_id,
                reason="hash-mismatch",
            )
            raise IntegrityError(
                f"the {size} bytes received do not have the SHA-256 offered for package {pid}; "
                "they were discarded: upload the package again from offset 0",
                detail={"offset": 0},
            )
        try:
            keyset = await self.core.keyset(row.recipient_org_id)
            sender_keys = await self.core.directory.sender_keys()
            verified = await asyncio.to_thread(inspect_file, part, keyset, sender_keys)
            m = verified.manifest
            if str(m.package_id) != pid:
                raise IntegrityError(
                    f"the package's signed manifest names package {m.package_id}, not {pid}"
                )
            if m.sender.org_id != row.sender_org_id:
                raise PermissionDenied(
                    f"the package's manifest is from {m.sender.org_id}, but it was sent by "
                    f"{row.sender_org_id}; an organisation may only deliver its own packages"
                )
            if m.kind != row.package_kind:
                raise IntegrityError(
                    f"the package's manifest says it is a {m.kind}, but it was offered as a "
                    f"{row.package_kind}"
                )
        except TransportError:
            raise  # a passing failure here (disk, database): the sender completes again later
        except HandoverError as err:
            await self._refuse(row, part, err)
            raise
        target = self.core.inbox_path(pid)
        if part != target:

            def move() -> None:
                self.core.inbox_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.replace(part, target)
                _fsync_dir(self.core.inbox_dir)

            await asyncio.to_thread(move)
        # The state, the delivered receipt and their audit entries commit together: a
        # process killed at any moment leaves either none of them or all of them.
        signed = await self.receipts.sign(row, DELIVERED)
        now = self.core.now()
        intents: list[AuditIntent] = []
        async with self.core.sessions() as s, s.begin():
            moved = await s.execute(
                update(IncomingPackage)
                .where(IncomingPackage.id == pid, *moves(IncomingEvent.CHECKED))
                .values(
                    **to_state(IncomingEvent.CHECKED),
                    delivered_at=now,
                    manifest_sha256=verified.manifest_sha256,
                    entries=len(verified.manifest.entries),
                    content_size=verified.manifest.total_size,
                )
            )
            if getattr(moved, "rowcount", 0) == 1:
                s.add(receipt_row(signed, False, now))
                intents.append(
                    await self.core.intend(
                        s,
                        "transfer.received",
                        None,
                        row.recipient_org_id,
                        {"package": pid},
                        sender=row.sender_org_id,
                        size=row.size,
                        ciphertext_sha256=row.ciphertext_sha256,
                        kind=row.package_kind,
                    )
                )
                intents.append(
                    await self.core.intend(
                        s,
                        "receipt.issued",
                        None,
                        row.recipient_org_id,
                        {"package": pid, "receipt": str(signed.body.receipt_id)},
                        kind=DELIVERED,
                        to=row.sender_org_id,
                    )
                )
        if not intents:  # another process delivered it at the same moment: its receipt
            return await self.receipts.delivered(await self.core.row(pid))
        await self.core.store.settle(*intents)
        return signed
