"""Appending to the audit log: one entry, a batch, or the entries intents promise.

Every append runs in one transaction that first locks the single ``audit_head`` row
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the transaction starts with a
write, so writers queue on the database lock), so several processes appending to
one database get one total order with no gaps and no duplicates. A process
remembers the head it last committed and builds the next batch from it before
touching the database; the batch's first statement then moves the head on only if
it is still that head (else the head is read under the lock and the batch rebuilt).
Concurrent ``record`` calls in one process are committed together (group commit);
each call still returns only after its entry is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from schemas.auditing import AuditEvent, event_from_json
from transfer.audit import merkle
from transfer.audit.entry import (
    COLUMNS,
    MAX_BODY,
    ZERO_HASH,
    Columns,
    Entry,
    EntryFormatError,
    entry_from_event,
)
from transfer.audit.logdb import LogDB
from transfer.audit.tables import audit_entries, audit_head, audit_intents, audit_nodes
from transfer.errors import InputError, IntegrityError
from transfer.wording import plural

log = logging.getLogger("handover.audit")


@dataclass(frozen=True)
class _Head:
    """The ``audit_head`` row: tree size, its compact range, the last leaf hash."""

    size: int
    compact: bytes
    last_leaf: bytes

    def values(self) -> dict[str, Any]:
        return {"size": self.size, "compact": self.compact, "last_leaf": self.last_leaf}


@dataclass(frozen=True)
class _Batch:
    """The rows that append a batch of entries after a given head, and the head after them."""

    seqs: list[int]
    entries: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    head: _Head


def _column_values(columns: Columns) -> dict[str, Any]:
    return dict(zip(COLUMNS, columns, strict=True))


def _build(head: _Head, items: Sequence[Entry]) -> _Batch:
    """The rows for ``items`` (checked entries) placed after ``head``."""
    compact = merkle.CompactRange.decode(head.size, head.compact)
    last = head.last_leaf
    entries: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    seqs: list[int] = []
    for checked in items:
        entry = replace(checked, seq=compact.size, prev=last)
        body = entry.encode()
        if len(body) > MAX_BODY:  # a longer sequence number can take it over the limit
            raise InputError(f"an audit entry may be at most {MAX_BODY} bytes")
        leaf = merkle.leaf_hash(body)
        seqs.append(entry.seq)
        entries.append(
            {"seq": entry.seq, "body": body, "leaf_hash": leaf, **_column_values(entry.columns())}
        )
        nodes.extend({"level": lv, "idx": ix, "hash": h} for lv, ix, h in compact.append(leaf))
        last = leaf
    return _Batch(seqs, entries, nodes, _Head(compact.size, compact.encode(), last))


class Appender:
    """Writes entries to the log, committing concurrent appends together."""

    def __init__(self, db: LogDB) -> None:
        self._db = db
        #: Checked entries (made at position 0) waiting for the next group commit, each with
        #: the intent row it settles (None for a plain append).
        self._pending: list[tuple[Entry, str | None, asyncio.Future[int | None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: The head as this process last committed it (a guess, checked under the lock).
        self._head: _Head | None = None

    async def close(self) -> None:
        """Wait for the group commit under way, if any."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def append(self, event: AuditEvent) -> int:
        """Append one event and return its sequence number (durable on return)."""
        # Refuse a bad event here, to its caller alone, not to the whole group commit.
        checked = entry_from_event(event, 0, ZERO_HASH, self._db.now())
        seq = await self._enqueue(checked, None)
        return -1 if seq is None else seq  # a plain append is never skipped

    async def record_intent(self, event: AuditEvent, intent_id: str, at: datetime) -> bool:
        """IntentSink: append the entry an intent row promises, and delete the row, in one
        transaction (in the group commit); nothing if the row is already gone."""
        checked = entry_from_event(event, 0, ZERO_HASH, at.astimezone(UTC))
        await self._enqueue(checked, intent_id)
        return True

    async def _enqueue(self, checked: Entry, intent_id: str | None) -> int | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int | None] = loop.create_future()
        self._pending.append((checked, intent_id, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def replay_intents(self, *, older_than: timedelta | None = None, limit: int = 500) -> int:
        """Append the entries promised by intent rows still waiting, each exactly once.

        A row is left when a process was killed between committing a change and appending
        its audit entry (or the append failed). ``serve`` replays every row at start-up, and
        rows older than a minute on each sweep (another process sharing the database may
        have died). Returns how many entries this call appended.
        """
        query = sa.select(audit_intents).order_by(audit_intents.c.created_at, audit_intents.c.id)
        if older_than is not None:
            query = query.where(audit_intents.c.created_at < self._db.now() - older_than)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        items: list[Entry] = []
        ids: list[str | None] = []
        for row in rows:
            try:
                event = event_from_json(row.event)
                at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
                event = replace(event, detail={**event.detail, "replayed": True})
                items.append(entry_from_event(event, 0, ZERO_HASH, at.astimezone(UTC)))
            except (ValueError, InputError, EntryFormatError) as exc:
                raise IntegrityError(
                    f"the promised audit entry {row.id} cannot be read ({exc}): the database "
                    "was altered; run 'handover audit verify'"
                ) from None
            ids.append(str(row.id))
        seqs = await self._append_batch(items, ids)
        replayed = sum(1 for seq in seqs if seq is not None)
        if replayed:
            log.warning(
                "wrote %s promised by changes committed before a crash",
                plural(replayed, "audit entry"),
            )
        return replayed

    async def intents_waiting(self) -> int:
        """How many promised entries are not yet in the log (``audit verify`` reports them)."""
        async with self._db.engine.connect() as conn:
            return int(
                (
                    await conn.execute(sa.select(sa.func.count()).select_from(audit_intents))
                ).scalar_one()
            )

    async def append_many(self, events: Sequence[AuditEvent]) -> list[int]:
        """Append a batch in one transaction; return their sequence numbers."""
        now = self._db.now()
        items = [entry_from_event(e, 0, ZERO_HASH, now) for e in events]
        return [seq for seq in await self._append_batch(items) if seq is not None]

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                seqs = await self._append_batch(
                    [checked for checked, _, _ in batch], [intent for _, intent, _ in batch]
                )
            except Exception as exc:  # handed to every waiting caller
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), seq in zip(batch, seqs, strict=True):
                if not fut.done():
                    fut.set_result(seq)
            # Let the callers just answered run before the next batch is taken: those
            # that append again join it, instead of waiting behind a batch of the few
            # entries that arrived during this commit.
            await asyncio.sleep(0)

    async def _append_batch(
        self, items: Sequence[Entry], intents: Sequence[str | None] | None = None
    ) -> list[int | None]:
        """Append entries checked by :func:`entry_from_event` (at any position) in order.

        ``intents`` names, for each item, the intent row it settles (or None): the rows are
        deleted in the same transaction, and an item whose row is already gone (another
        process appended it) is skipped (its sequence number is None).
        """
        if not items:
            return []
        cached, self._head = self._head, None
        async with self._db.engine.begin() as conn:
            marks = list(intents) if intents is not None else [None] * len(items)
            wanted = [i for i in marks if i is not None]
            keep = list(range(len(items)))
            if wanted:
                # First, so that two processes settling the same row queue on it: the one
                # that deletes it appends the entry; the other finds it gone.
                gone = await conn.execute(
                    sa.delete(audit_intents)
                    .where(audit_intents.c.id.in_(wanted))
                    .returning(audit_intents.c.id)
                )
                deleted = {str(r[0]) for r in gone.all()}
                keep = [i for i, mark in enumerate(marks) if mark is None or mark in deleted]
                if not keep:
                    self._head = cached
                    return [None] * len(items)
            kept = [items[i] for i in keep]
            batch: _Batch | None = None
            if cached is not None:
                # Built from the head as this process last committed it, before the database
                # is touched; one statement then takes the write lock and moves the head on,
                # only if it is still that head (no other process appended since).
                batch = _build(cached, kept)
                moved = await conn.execute(
                    sa.update(audit_head)
                    .where(
                        audit_head.c.id == 1,
                        audit_head.c.size == cached.size,
                        audit_head.c.last_leaf == cached.last_leaf,
                        audit_head.c.compact == cached.compact,
                    )
                    .values(**batch.head.values())
                )
                if moved.rowcount != 1:
                    batch = None
            if batch is None:
                batch = _build(_Head(*await self._db.lock_head(conn)), kept)
                await conn.execute(
                    sa.update(audit_head).where(audit_head.c.id == 1).values(**batch.head.values())
                )
            await conn.execute(sa.insert(audit_entries), batch.entries)
            if batch.nodes:
                await conn.execute(sa.insert(audit_nodes), batch.nodes)
        self._head = batch.head
        seqs: list[int | None] = [None] * len(items)
        for i, seq in zip(keep, batch.seqs, strict=True):
            seqs[i] = seq
        return seqs
