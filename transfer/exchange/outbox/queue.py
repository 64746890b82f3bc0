"""Queueing a package: a leaver's file built here, or a referral built elsewhere
(:class:`OutboxQueue`, part of :class:`transfer.exchange.outbox.Outbox`)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final
from uuid import UUID

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select, update

from schemas.directory import DirectoryEntry
from schemas.manifest import PackageKind, Recipient, Sender
from schemas.records import PupilRecord
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
    IntegrityError,
    TransportError,
)
from transfer.exchange.outbox.core import OutboxCore
from transfer.exchange.outbox.records import (
    REASON_FIELD,
    REASON_TABLE,
    LeaverFileToAgencyError,
    OutgoingRecord,
    ReasonNeeded,
    ReasonRequiredError,
    SendChecks,
    _file_sha256,
    _label,
    _moves,
    _needed_text,
    _p,
    _Pending,
    _rowcount,
    _to,
    check_reason,
    is_destination,
)
from transfer.exchange.tables import (
    outgoing_pupils,
)
from transfer.package.build import BuiltPackage
from transfer.states.outgoing import OutgoingEvent as On
from transfer.store.permissions import Actor

if TYPE_CHECKING:
    pass


log = logging.getLogger("handover.outbox")

_REACHED: Final = ("delivered", "viewed", "accepted", "rejected")
#: Why a reason is needed, as stored in ``reasons_needed`` and shown to the DSL.


class _DraftGoneError(Exception):
    """The draft being queued is no longer a draft (removed or cancelled meanwhile)."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutboxQueue(OutboxCore):
    """Queue packages."""

    # ------------------------------------------------------------------ queueing

    async def send_checks(self, actor: Actor, pupil_id: str, to_org_id: str) -> SendChecks:
        """What sending the pupil's leaver's file to ``to_org_id`` would ask, without making
        anything: the receiver's directory entry, whether it is a school, a file already
        waiting to go there, and the reasons needed (with why, in words). The same checks
        :meth:`queue_leaver_file` makes; the actor needs ``transfer.send``."""
        pupil_id = await self.store.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id, "recipient": to_org_id}
        await self._require(actor, "leaver_file", "transfer.read", targets)
        entry = await self.directory.entry(to_org_id)
        pupil = await self.store.get_pupil(actor, pupil_id)
        return await self._checks(pupil, entry)

    async def _checks(self, pupil: PupilRecord, entry: DirectoryEntry) -> SendChecks:
        async with self.store.sessions() as s:
            earlier = (
                await s.execute(
                    select(_p.c.id, _p.c.state, _p.c.queued_at)
                    .join(outgoing_pupils, outgoing_pupils.c.package_id == _p.c.id)
                    .where(
                        outgoing_pupils.c.pupil_id == pupil.id,
                        _p.c.to_org_id == entry.org_id,
                        _p.c.kind == "leaver_file",
                        _p.c.state.in_(("draft", "queued", *_REACHED)),
                    )
                    .order_by(_p.c.created_at.desc())
                )
            ).all()
        pending = next((r for r in earlier if r.state in ("draft", "queued")), None)
        reached = [r for r in earlier if r.state in _REACHED]
        needed: list[ReasonNeeded] = []
        why: list[str] = []
        if reached:
            last = reached[0]
            needed.append("repeat")
            sent = f" on {last.queued_at:%d %B %Y}" if last.queued_at else ""
            why.append(
                f"{pupil.forename} {pupil.surname}'s file was already sent to {entry.name}"
                f"{sent} (package {last.id}, {last.state})"
            )
        if not is_destination(pupil.destination, entry):
            needed.append("not_destination")
            d = pupil.destination
            recorded = (
                "no destination is recorded"
                if d is None or d.kind == "unknown"
                else f"the recorded destination is {d.name or d.urn or d.laestab or d.kind}"
            )
            why.append(
                f"{entry.name} is not {pupil.forename} {pupil.surname}'s recorded next school "
                f"({recorded})"
            )
        return SendChecks(
            entry=entry,
            is_school=entry.kind == "school",
            needed=tuple(needed),
            why=tuple(why),
            pending=_Pending(pending.id, pending.state) if pending is not None else None,
        )

    async def queue_leaver_file(
        self,
        actor: Actor,
        pupil_id: str,
        to_org_id: str,
        *,
        via: str | None = None,
        reason: str | None = None,
    ) -> OutgoingRecord:
        """Build the pupil's leaver's file for ``to_org_id`` and queue it for delivery.

        ``pupil_id`` may be the pupil's UPN. The file goes only to a school. Sending
        it again to a school it already reached, or to a school that is not the
        pupil's recorded destination, needs a ``reason`` (:class:`ReasonRequiredError`
        says which, and nothing is made); the reason is kept sealed with the package
        and in the pupil's chronology, and the audit records that one was needed.
        """
        from transfer.age import X25519Recipient
        from transfer.package.from_store import build_leaver_package

        pupil_id = await self.store.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id, "recipient": to_org_id}
        await self._require(actor, "leaver_file", "transfer.queued", targets)
        reason = check_reason(reason)
        if to_org_id == actor.org_id:
            raise InputError("a leaver's file is sent to another organisation, not to your own")
        entry = await self.directory.entry(to_org_id)
        if entry.kind != "school":
            await self.store.record_event(
                "transfer.queued", actor, actor.org_id, targets, "refused", reason="not_a_school"
            )
            raise LeaverFileToAgencyError(
                f"{entry.name} is not a school: a leaver's child-protection file goes only to "
                "the pupil's next school. To share information with an agency, make a referral "
                "('handover referral new'), which carries only what the agency needs."
            )
        pupil = await self.store.get_pupil(actor, pupil_id)
        checks = await self._checks(pupil, entry)
        pending = checks.pending
        if pending is not None and pending.state == "draft":
            if await self.discard_stale_drafts(package_id=pending.id):
                # Left by a process killed while building it: gone now, so this one goes.
                checks = await self._checks(pupil, entry)
                pending = checks.pending
            else:
                raise ConflictError(
                    f"a leaver's file for this pupil to {entry.name} is being built right now "
                    f"(package {pending.id}); it is queued in a moment: cancel it then to send "
                    "a new one"
                )
        if pending is not None:
            raise ConflictError(
                f"a leaver's file for this pupil is already waiting to go to {entry.name} "
                f"(package {pending.id}); cancel it first to send a new one"
            )
        needed, why = list(checks.needed), list(checks.why)
        if needed and reason is None:
            await self.store.record_event(
                "transfer.queued",
                actor,
                actor.org_id,
                targets,
                "refused",
                reason="reason_required",
                reasons_needed=",".join(needed),
            )
            raise ReasonRequiredError(
                "; ".join(why) + ". Check, then give the reason for sending it (it is recorded).",
                detail={"reasons_needed": list(needed)},
            )
        keyset = await asyncio.to_thread(self.keys.load, actor.org_id)
        package_id = str(uuid.uuid4())
        now = self._now()
        await self._insert_draft(
            actor, package_id, entry, "leaver_file", [pupil.id], now, reasons_needed=needed
        )
        tmp = self.outgoing_dir / f"{package_id}.age.tmp"
        # The build lease says a live process is building this draft (see _crashed_draft).
        keeper = asyncio.ensure_future(self._keep_draft(package_id))
        try:
            if needed and reason is not None:
                await self.store.seal_notes(
                    REASON_TABLE, package_id, pupil.id, {REASON_FIELD: reason}
                )
            fh = await asyncio.to_thread(self._create_tmp, tmp)
            try:
                built = await build_leaver_package(
                    self.store,
                    actor,
                    pupil.id,
                    fh,
                    sender=Sender(
                        org_id=keyset.org_id,
                        key_fingerprint=keyset.fingerprint,
                        signing_key_id=keyset.key_id_hex,
                    ),
                    recipient=Recipient(org_id=entry.org_id, key_fingerprint=entry.fingerprint),
                    signer=keyset.minisign_secret_key(),
                    recipients=[X25519Recipient.from_string(entry.recipient)],
                    package_id=UUID(package_id),
                )
                await asyncio.to_thread(self._seal_file, fh, tmp, self.path_of(package_id))
            finally:
                await asyncio.to_thread(fh.close)
        except BaseException as exc:
            keeper.cancel()
            await asyncio.shield(self._drop_draft(package_id, tmp))
            if isinstance(exc, HandoverError):
                await self.store.record_event(
                    "transfer.queued",
                    actor,
                    actor.org_id,
                    {**targets, "package": package_id},
                    "failed",
                    reason=exc.slug,
                )
            if isinstance(exc, OSError):
                raise TransportError(
                    f"cannot write the package to {self.outgoing_dir}: {exc.strerror}"
                ) from None
            raise
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        return await self._queue(
            actor, package_id, built, via=via, reason=reason if needed else None
        )

    async def queue_file(
        self,
        actor: Actor,
        *,
        package_path: Path,
        built: BuiltPackage,
        to_org_id: str,
        pupil_ids: Sequence[str],
        kind: PackageKind,
        via: str | None = None,
    ) -> OutgoingRecord:
        """Queue a package built elsewhere (a referral); the outbox takes the file over.

        ``package_path`` must be under ``data_dir/outgoing/``; its size and
        SHA-256 must be those of ``built``, which must be addressed from the
        actor's organisation to ``to_org_id``.
        """
        package_id = str(built.manifest.package_id)
        targets = {"package": package_id, "recipient": to_org_id}
        await self._require(actor, kind, "transfer.queued", targets)
        m = built.manifest
        if m.kind != kind or m.sender.org_id != actor.org_id or m.recipient.org_id != to_org_id:
            raise InputError(
                "the package's manifest does not match what it is queued as (kind, sender or "
                "recipient differ)"
            )
        if not pupil_ids:
            raise InputError("a queued package names at least one pupil")
        src = await asyncio.to_thread(Path(package_path).resolve)
        if src.parent != await asyncio.to_thread(self.outgoing_dir.resolve):
            raise InputError(f"a package to queue must be built under {self.outgoing_dir}")
        try:
            size, sha = await asyncio.to_thread(_file_sha256, src)
        except OSError as exc:
            raise InputError(f"cannot read the package {src.name}: {exc.strerror}") from None
        if size != built.ciphertext_size or not hmac.compare_digest(sha, built.ciphertext_sha256):
            raise IntegrityError(
                "the package file is not the one that was built (its size or SHA-256 differ)"
            )
        entry = await self.directory.entry(to_org_id)
        await self._insert_draft(actor, package_id, entry, kind, list(pupil_ids), self._now())
        try:
            await asyncio.to_thread(self._adopt, src, self.path_of(package_id))
        except OSError as exc:
            await self._drop_draft(package_id, None)
            raise TransportError(
                f"cannot move the package into the outbox: {exc.strerror}"
            ) from None
        return await self._queue(actor, package_id, built, via=via)

    def _create_tmp(self, tmp: Path) -> BinaryIO:
        self.outgoing_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(fd, "wb")

    def _seal_file(self, fh: BinaryIO, tmp: Path, final: Path) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.outgoing_dir)

    def _adopt(self, src: Path, final: Path) -> None:
        with src.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(src, final)
        _fsync_dir(self.outgoing_dir)

    async def _insert_draft(
        self,
        actor: Actor,
        package_id: str,
        entry: DirectoryEntry,
        kind: str,
        pupil_ids: Sequence[str],
        now: datetime,
        *,
        reasons_needed: Sequence[str] = (),
    ) -> None:
        try:
            async with self.store.sessions() as s, s.begin():
                await s.execute(
                    insert(_p).values(
                        id=package_id,
                        org_id=actor.org_id,
                        to_org_id=entry.org_id,
                        to_name=entry.name[:200],
                        kind=kind,
                        state="draft",
                        created_by=actor.staff_id,
                        created_at=now,
                        state_changed_at=now,
                        attempts=0,
                        pulls=0,
                        claimed_by=self.worker_id,
                        lease_until=now + self.lease,
                        reasons_needed=",".join(reasons_needed) or None,
                    )
                )
                for pupil_id in dict.fromkeys(pupil_ids):
                    await s.execute(
                        insert(outgoing_pupils).values(package_id=package_id, pupil_id=pupil_id)
                    )
                await s.execute(self._event(package_id, "draft", "draft", now, actor))
        except sa_exc.IntegrityError:
            raise ConflictError(f"package {package_id} is already in the outbox") from None

    async def _queue(
        self,
        actor: Actor,
        package_id: str,
        built: BuiltPackage,
        *,
        via: str | None,
        reason: str | None = None,
    ) -> OutgoingRecord:
        try:
            return await self._queue_built(actor, package_id, built, via=via, reason=reason)
        except _DraftGoneError:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.path_of(package_id).unlink, True)
            raise ConflictError(
                f"package {package_id} was removed while it was being built (its build took "
                "too long, or it was cancelled); send it again"
            ) from None

    async def _queue_built(
        self,
        actor: Actor,
        package_id: str,
        built: BuiltPackage,
        *,
        via: str | None,
        reason: str | None,
    ) -> OutgoingRecord:
        now = self._now()
        draft = await self._row(package_id)
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(_p.c.id == package_id, *_moves(On.BUILT))
                .values(
                    **_to(On.BUILT),
                    queued_at=now,
                    state_changed_at=now,
                    next_attempt_at=now,
                    claimed_by=None,
                    lease_until=None,
                    ciphertext_size=built.ciphertext_size,
                    ciphertext_sha256=built.ciphertext_sha256,
                    manifest_sha256=built.manifest_sha256,
                )
            )
            if draft is None or _rowcount(done) != 1:
                # Cancelled or removed meanwhile (its build lease had run out): not queued.
                raise _DraftGoneError(package_id)
            await s.execute(
                self._event(
                    package_id,
                    "queued",
                    "queued",
                    now,
                    actor,
                    detail="reason given" if reason is not None else None,
                )
            )
            intent = await self._intend(
                s,
                "transfer.queued",
                actor,
                draft,
                ciphertext_sha256=built.ciphertext_sha256,
                size=built.ciphertext_size,
                via=via,
                reasons_needed=draft.reasons_needed,
            )
        await self.store.settle(intent)
        row = await self._held(package_id)
        summary = f"{_label(row.kind)} queued for {row.to_name}"
        if reason is not None:
            summary += f" ({_needed_text(row.reasons_needed)}; the reason given: {reason})"
        await self._chronology(actor, row.pupils, "queued", summary, package_id, now)
        return await self._record(row)

    async def _keep_draft(self, package_id: str) -> None:
        """Renew the build lease of a draft while this process builds it (until cancelled)."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            async with self.store.sessions() as s, s.begin():
                await s.execute(
                    update(_p)
                    .where(
                        _p.c.id == package_id,
                        _p.c.state == "draft",
                        _p.c.claimed_by == self.worker_id,
                    )
                    .values(lease_until=self._now() + self.lease)
                )
