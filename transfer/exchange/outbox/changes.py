"""Cancelling a package not yet delivered, and sending a failed one again
(:class:`OutboxChanges`, part of :class:`transfer.exchange.outbox.Outbox`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, update

from transfer.errors import (
    ConflictError,
)
from transfer.exchange.outbox.core import OutboxCore
from transfer.exchange.outbox.records import (
    OutgoingRecord,
    PackageFileDamagedError,
    _crashed_draft,
    _label,
    _moves,
    _p,
    _rowcount,
    _to,
    check_own_copy,
)
from transfer.states.outgoing import OUTGOING, Outgoing
from transfer.states.outgoing import OutgoingEvent as On
from transfer.store.permissions import Actor

if TYPE_CHECKING:
    pass


class OutboxChanges(OutboxCore):
    """Cancel and resend packages."""

    # ------------------------------------------------------------ cancel, resend

    async def cancel(
        self, actor: Actor, package_id: str, *, via: str | None = None
    ) -> OutgoingRecord:
        """Stop a package that has not been delivered; its file is deleted."""
        row = await self._row_for(actor, package_id)
        await self._require(actor, row.kind, "transfer.cancelled", {"package": row.id})
        now = self._now()
        # A draft is cancelled only when its build was cut short (one being built is busy).
        cancel_from, _ = OUTGOING.update(On.CANCEL)
        built_sources = [state.value for state in cancel_from if state is not Outgoing.DRAFT]
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(
                    _p.c.id == row.id,
                    or_(
                        and_(
                            _p.c.state.in_(built_sources),
                            or_(_p.c.lease_until.is_(None), _p.c.lease_until < now),
                        ),
                        _crashed_draft(now),  # left by a build that was cut short
                    ),
                )
                .values(
                    **_to(On.CANCEL),
                    state_changed_at=now,
                    next_attempt_at=None,
                    claimed_by=None,
                    lease_until=None,
                )
            )
            intents = []
            if _rowcount(done) == 1:
                await s.execute(self._event(row.id, "cancelled", "cancelled", now, actor))
                intents.append(await self._intend(s, "transfer.cancelled", actor, row, via=via))
        await self.store.settle(*intents)
        if _rowcount(done) != 1:
            current = await self._held(row.id)
            await self._audit("transfer.cancelled", actor, current, "refused", state=current.state)
            if current.state in ("queued", "failed"):
                raise ConflictError(
                    "this package is being delivered right now; try again in a few minutes"
                )
            if current.state == "draft":
                raise ConflictError(
                    "this package is being built right now; it is queued in a moment: cancel "
                    "it then"
                )
            raise ConflictError(
                f"this package is {current.state}, so it cannot be cancelled (only a package not "
                "yet delivered can be); if it was delivered, ask the receiver to reject it"
            )
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.path_of(row.id).unlink, True)
            await asyncio.to_thread((self.outgoing_dir / f"{row.id}.age.tmp").unlink, True)
        await self._chronology(
            actor,
            row.pupils,
            "cancelled",
            f"{_label(row.kind)} to {row.to_name} cancelled",
            row.id,
            now,
        )
        return await self._record(await self._held(row.id))

    async def resend(
        self, actor: Actor, package_id: str, *, via: str | None = None
    ) -> OutgoingRecord:
        """Queue a failed package again: the same package id and the same bytes."""
        row = await self._row_for(actor, package_id)
        await self._require(actor, row.kind, "transfer.resent", {"package": row.id})
        if not OUTGOING.can(Outgoing(row.state), On.RESEND):
            await self._audit("transfer.resent", actor, row, "refused", state=row.state)
            raise ConflictError(
                f"this package is {row.state}; only a failed package can be sent again"
            )
        path = self.path_of(row.id)
        if not await asyncio.to_thread(path.is_file):
            await self._audit("transfer.resent", actor, row, "refused", reason="file-missing")
            raise ConflictError(
                "the package's file is no longer in the outbox, so it cannot be sent again; "
                "queue a new one"
            )
        try:
            await check_own_copy(path, *row.built())
        except PackageFileDamagedError as exc:
            await self._audit("transfer.resent", actor, row, "refused", reason="file-damaged")
            raise ConflictError(exc.message) from None
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(_p.c.id == row.id, *_moves(On.RESEND))
                .values(
                    **_to(On.RESEND),
                    queued_at=now,
                    state_changed_at=now,
                    next_attempt_at=now,
                    attempts=0,
                    last_error=None,
                    failure_reason=None,
                    claimed_by=None,
                    lease_until=None,
                )
            )
            intents = []
            if _rowcount(done) == 1:
                await s.execute(self._event(row.id, "resent", "queued", now, actor))
                intents.append(await self._intend(s, "transfer.resent", actor, row, via=via))
        await self.store.settle(*intents)
        if _rowcount(done) != 1:
            raise ConflictError("this package changed meanwhile; reload it and try again")
        await self._chronology(
            actor,
            row.pupils,
            "resent",
            f"{_label(row.kind)} to {row.to_name} queued again",
            row.id,
            now,
        )
        return await self._record(await self._held(row.id))
