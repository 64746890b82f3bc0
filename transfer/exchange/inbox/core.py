"""What every part of the inbox shares: the store and keys, the paths, the clock, the audit.

:class:`InboxCore` holds the state (``config`` and ``free_space`` may be replaced while
the node runs, as the tests do) and the plumbing the upload, receipts and review parts
call; :class:`transfer.exchange.inbox.Inbox` is one, with those parts beside it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from transfer.audit.log import AuditLog
from transfer.config import Config
from transfer.errors import NotFoundError
from transfer.exchange.inbox.models import InboxDirectory, PeerCaller, RecordLimits
from transfer.exchange.tables import IncomingPackage
from transfer.space import free_bytes
from transfer.states.incoming import INCOMING, IncomingEvent
from transfer.store.base import AuditIntent
from transfer.store.db import sessionmaker
from transfer.store.permissions import Actor
from transfer.store.service import Store

Outcome = Literal["ok", "refused", "failed"]


def moves(event: IncomingEvent) -> tuple[ColumnElement[bool]]:
    """The ``WHERE`` of the conditional update applying ``event`` (its machine's sources)."""
    sources, _ = INCOMING.update(event)
    return (IncomingPackage.state.in_([state.value for state in sources]),)


def to_state(event: IncomingEvent) -> dict[str, str]:
    """The ``SET state = ...`` of the conditional update applying ``event``."""
    return {"state": INCOMING.update(event)[1].value}


def package_id_of(text: str | uuid.UUID) -> str:
    try:
        return str(text if isinstance(text, uuid.UUID) else uuid.UUID(str(text)))
    except ValueError:
        raise NotFoundError("there is no such package (a package id is a UUID)") from None


def own(row: IncomingPackage, caller: PeerCaller) -> None:
    """NotFoundError unless ``caller`` sent the package (a sender sees only its own)."""
    if row.sender_org_id != caller.org_id:
        raise NotFoundError("there is no such package from your organisation on this node")


class InboxCore:
    """The state and plumbing shared by the parts of the inbox."""

    def __init__(
        self,
        *,
        store: Store,
        keys: KeyFiles,
        directory: InboxDirectory,
        config: Config,
        data_dir: Path,
        audit_log: AuditLog | None = None,
        clock: Callable[[], datetime] | None = None,
        free_space: Callable[[Path], int] = free_bytes,
    ) -> None:
        self.store = store
        self.keys = keys
        self.directory = directory
        self.config = config
        self.audit_log = audit_log
        self.sessions: async_sessionmaker[AsyncSession] = sessionmaker(store.engine)
        self._clock = clock or store.now
        self.incoming_dir = data_dir / "incoming"
        self.inbox_dir = data_dir / "inbox"
        #: Bytes free on the file system holding a path (``transfer.space.free_bytes``).
        self.free_space = free_space

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def part_path(self, package_id: str) -> Path:
        return self.incoming_dir / f"{package_id}.part"

    def inbox_path(self, package_id: str) -> Path:
        return self.inbox_dir / f"{package_id}.age"

    @property
    def record_limits(self) -> RecordLimits:
        t = self.config.transfer
        return RecordLimits(per_record=t.max_record_bytes, total=t.max_records_bytes)

    async def audit(
        self,
        action: str,
        actor: Actor | str | None,
        org: str | None,
        targets: dict[str, str],
        outcome: Outcome = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        await self.store.record_event(action, actor, org, targets, outcome=outcome, **detail)

    async def intend(
        self,
        session: AsyncSession,
        action: str,
        actor: Actor | str | None,
        org: str | None,
        targets: dict[str, str],
        outcome: Outcome = "ok",
        **detail: str | int | bool | None,
    ) -> AuditIntent:
        """The audit entry of a change, promised in the change's own transaction."""
        return await self.store.intend(session, action, actor, org, targets, outcome, **detail)

    async def row(self, package_id: str) -> IncomingPackage:
        async with self.sessions() as s:
            row = await s.get(IncomingPackage, package_id)
        if row is None:
            raise NotFoundError("there is no such package on this node")
        return row

    async def keyset(self, org_id: str) -> KeySet:
        return await asyncio.to_thread(self.keys.load, org_id)
