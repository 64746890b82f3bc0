"""What every part of the audit log shares: its database engine, its clock and the head row.

The parts (:mod:`~transfer.audit.appender`, :mod:`~transfer.audit.proofs`,
:mod:`~transfer.audit.checkpoints`, :mod:`~transfer.audit.witnesses`,
:mod:`~transfer.audit.reading`, :mod:`~transfer.audit.verification`) each hold one
:class:`LogDB`; :class:`transfer.audit.log.AuditLog` puts them together.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from transfer.audit.tables import audit_head
from transfer.errors import IntegrityError


class LogDB:
    """The log's database engine (SQLite or PostgreSQL) and clock."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))
        self.sqlite = engine.dialect.name == "sqlite"

    def now(self) -> datetime:
        when = self._clock()
        if when.tzinfo is None:
            raise ValueError("the audit log's clock must return an aware datetime")
        return when.astimezone(UTC)

    async def lock_head(self, conn: AsyncConnection) -> tuple[int, bytes, bytes]:
        """The head row ``(size, compact range, last leaf)``, locked for this transaction."""
        head = (audit_head.c.size, audit_head.c.compact, audit_head.c.last_leaf)
        if self.sqlite:
            # Take SQLite's write lock before reading, so concurrent writers queue: a
            # no-op write that returns the head (one statement, one round trip).
            query: sa.Executable = (
                sa.update(audit_head)
                .where(audit_head.c.id == 1)
                .values(size=audit_head.c.size)
                .returning(*head)
            )
        else:
            query = sa.select(*head).where(audit_head.c.id == 1).with_for_update()
        row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise IntegrityError("the audit log's head row is missing: the log was tampered with")
        return int(row.size), bytes(row.compact), bytes(row.last_leaf)

    async def head_size(self, conn: AsyncConnection) -> int:
        """The tree size the head row records."""
        return int(
            (
                await conn.execute(sa.select(audit_head.c.size).where(audit_head.c.id == 1))
            ).scalar_one()
        )

    async def size(self) -> int:
        async with self.engine.connect() as conn:
            return await self.head_size(conn)
