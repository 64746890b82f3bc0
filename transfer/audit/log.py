"""The audit log in the database: appends, checkpoints, proofs, witnessing, verification.

:class:`AuditLog` implements :class:`schemas.auditing.AuditSink`. Every append
runs in one transaction that first locks the single ``audit_head`` row
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
import base64
import json
import logging
import os
import sqlite3
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keys import aead
from schemas.auditing import AuditEvent, event_from_json
from transfer.audit import merkle
from transfer.audit.checkpoint import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    parse_checkpoint,
    parse_checkpoint_text,
    parse_note,
    sign_checkpoint,
    verify_checkpoint,
)
from transfer.audit.entry import (
    COLUMNS,
    MAX_BODY,
    ZERO_HASH,
    Checked,
    Columns,
    Entry,
    EntryFormatError,
    Row,
    check_many,
    check_run,
    decode,
    entry_from_event,
)
from transfer.audit.tables import (
    audit_checkpoints,
    audit_entries,
    audit_head,
    audit_intents,
    audit_key,
    audit_nodes,
    audit_witnessed,
)
from transfer.config import Config
from transfer.errors import InputError, IntegrityError, NotFoundError
from transfer.private_files import private_dir
from transfer.store.db import make_engine
from transfer.wording import plural

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger("handover.audit")

DEFAULT_ORIGIN = "handover.invalid/audit"
#: Where, inside the data directory, the newest checkpoint is kept outside the database.
ANCHOR = Path("audit") / "latest-checkpoint.note"


def origin_for(base_url: str) -> str:
    """The log's origin line and key name: the node's host (and port) and ``/audit``."""
    host = urlsplit(base_url).netloc or "handover.invalid"
    return f"{host}/audit"


VERIFY_CHUNK = 20_000
#: Processes that parse and hash entries during verify() (large logs only).
VERIFY_WORKERS = 2


class TamperError(IntegrityError):
    """The stored log does not match itself or a checkpoint: something was altered."""

    #: "changed", "inserted", "removed", "reordered", "truncated", "rolled-back",
    #: "contradicted", "head" or "checkpoint".
    kind: str = "changed"

    def __init__(
        self, kind: str, message: str, *, seq: int | None = None, column: str | None = None
    ) -> None:
        super().__init__(message, detail={"kind": kind, "seq": seq})
        self.kind = kind
        self.seq = seq
        #: The search column found changed (``pupil``, ``at``...), when that is what is wrong.
        self.column = column


class AnchorDamaged(IntegrityError):
    """The checkpoint file in the data directory cannot be read as a checkpoint."""


class WitnessConflict(IntegrityError):
    """A counterpart's checkpoint contradicts one it sent before (a fork or rollback)."""


def key_aad(origin: str) -> bytes:
    return f"handover/audit-log-key/v1|{origin}".encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


@dataclass(frozen=True)
class StoredCheckpoint:
    note: str
    checkpoint: Checkpoint
    created_at: datetime

    @property
    def size(self) -> int:
        return self.checkpoint.size


@dataclass(frozen=True)
class PeerCheckpoint:
    """What a receipt carries: our latest checkpoint and a proof from the size the peer holds."""

    note: str
    since: int | None
    proof: list[bytes]

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.note, "since": self.since, "proof": [b64(p) for p in self.proof]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PeerCheckpoint:
        try:
            since = obj.get("since")
            return cls(
                note=str(obj["checkpoint"]),
                since=None if since is None else int(since),
                proof=[unb64(p) for p in obj.get("proof") or []],
            )
        except (KeyError, TypeError, ValueError):
            raise InputError("a peer checkpoint needs 'checkpoint', 'since' and 'proof'") from None


@dataclass(frozen=True)
class WitnessResult:
    """How a counterpart's checkpoint relates to the ones we already hold from that log.

    ``status``: "first" (none held before), "same" (already held), "consistent"
    (the proof shows it extends the largest one held), "unproven" (larger, no
    proof given), "older" (smaller than one held, and agrees where checkable).
    """

    status: str
    origin: str
    size: int
    previous_size: int | None


@dataclass(frozen=True)
class ShownEntry:
    seq: int
    entry: Entry


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


def _stored_columns(row: Any) -> Columns:
    """A row's search columns (``at`` ... ``person``), as :data:`Columns`."""
    return (row.at, row.action, row.actor, row.org, row.pupil, row.person)


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


class AuditLog:
    """The tamper-evident audit log over one database (SQLite or PostgreSQL)."""

    def __init__(
        self,
        engine: AsyncEngine,
        kek: bytes,
        *,
        origin: str = DEFAULT_ORIGIN,
        clock: Callable[[], datetime] | None = None,
        anchor: Path | None = None,
        own_engine: bool = False,
    ) -> None:
        if len(kek) != aead.KEY_SIZE:
            raise ValueError("the key-encryption key must be 32 bytes")
        self._engine = engine
        self._kek = kek
        self._origin = origin
        self._clock = clock or (lambda: datetime.now(UTC))
        self._anchor = anchor
        self._own_engine = own_engine
        #: Checked entries (made at position 0) waiting for the next group commit, each with
        #: the intent row it settles (None for a plain append).
        self._pending: list[tuple[Entry, str | None, asyncio.Future[int | None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._signer: Signer | None = None
        self._sqlite = engine.dialect.name == "sqlite"
        #: The head as this process last committed it (a guess, checked under the lock).
        self._head: _Head | None = None
        #: A damaged checkpoint file was logged (once per process).
        self._anchor_warned = False

    @classmethod
    def open(cls, url: str, kek: bytes, **kwargs: Any) -> AuditLog:
        """A log over its own engine for ``url`` (closed by :meth:`close`)."""
        return cls(make_engine(url), kek, own_engine=True, **kwargs)

    @classmethod
    def for_node(cls, data_dir: Path, config: Config, kek: bytes) -> AuditLog:
        """The node's log: its database, origin and checkpoint file (what serve and the CLI use)."""
        return cls.open(
            config.database_url(data_dir),
            kek,
            origin=origin_for(config.node.base_url),
            anchor=data_dir / ANCHOR,
        )

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._own_engine:
            await self._engine.dispose()

    # ---------------------------------------------------------------- appending

    async def record(self, event: AuditEvent) -> None:
        """AuditSink: append one event; return once it is committed."""
        await self.append(event)

    async def append(self, event: AuditEvent) -> int:
        """Append one event and return its sequence number (durable on return)."""
        # Refuse a bad event here, to its caller alone, not to the whole group commit.
        checked = entry_from_event(event, 0, ZERO_HASH, self._now())
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
            query = query.where(audit_intents.c.created_at < self._now() - older_than)
        async with self._engine.connect() as conn:
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
        async with self._engine.connect() as conn:
            return int(
                (
                    await conn.execute(sa.select(sa.func.count()).select_from(audit_intents))
                ).scalar_one()
            )

    async def append_many(self, events: Sequence[AuditEvent]) -> list[int]:
        """Append a batch in one transaction; return their sequence numbers."""
        now = self._now()
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

    def _now(self) -> datetime:
        when = self._clock()
        if when.tzinfo is None:
            raise ValueError("the audit log's clock must return an aware datetime")
        return when.astimezone(UTC)

    async def _lock_head(self, conn: AsyncConnection) -> tuple[int, bytes, bytes]:
        head = (audit_head.c.size, audit_head.c.compact, audit_head.c.last_leaf)
        if self._sqlite:
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
        async with self._engine.begin() as conn:
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
                batch = _build(_Head(*await self._lock_head(conn)), kept)
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

    # --------------------------------------------------------------------- keys

    async def signer(self) -> Signer:
        """The log's note signer, generated and sealed under the KEK at first use."""
        if self._signer is not None:
            return self._signer
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(sa.select(audit_key).where(audit_key.c.id == 1))
            ).one_or_none()
            if row is None:
                await self._lock_head(conn)  # one process creates the key
                row = (
                    await conn.execute(sa.select(audit_key).where(audit_key.c.id == 1))
                ).one_or_none()
            if row is None:
                signer = Signer.generate(self._origin)
                await conn.execute(
                    sa.insert(audit_key).values(
                        id=1,
                        origin=self._origin,
                        public_key=signer.verifier.public_key,
                        sealed_seed=aead.seal(self._kek, signer.seed, key_aad(self._origin)),
                        created_at=self._now(),
                    )
                )
            else:
                seed = aead.unseal(self._kek, bytes(row.sealed_seed), key_aad(row.origin))
                signer = Signer(row.origin, seed)
                if signer.verifier.public_key != bytes(row.public_key):
                    raise IntegrityError("the audit log's stored public key does not match its key")
        self._signer = signer
        self._origin = signer.name
        return signer

    async def verifier(self) -> Verifier:
        """The public half; ``(await log.verifier()).vkey`` is the exportable form."""
        return (await self.signer()).verifier

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def engine(self) -> AsyncEngine:
        """The database engine the log works on."""
        return self._engine

    # -------------------------------------------------------------- tree access

    async def size(self) -> int:
        async with self._engine.connect() as conn:
            return int(
                (
                    await conn.execute(sa.select(audit_head.c.size).where(audit_head.c.id == 1))
                ).scalar_one()
            )

    async def _nodes(
        self, conn: AsyncConnection, wanted: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        """The wanted subtree hashes, in one query (leaves from audit_entries)."""
        leaves = [ix for lv, ix in wanted if lv == 0]
        by_level: dict[int, list[int]] = {}
        for lv, ix in wanted:
            if lv > 0:
                by_level.setdefault(lv, []).append(ix)
        parts: list[sa.Select[Any]] = []
        if leaves:
            e = audit_entries.c
            parts.append(
                sa.select(
                    sa.literal(0).label("level"), e.seq.label("idx"), e.leaf_hash.label("hash")
                ).where(e.seq.in_(leaves))
            )
        if by_level:
            n = audit_nodes.c
            # One indexed range per level (a tuple IN is not indexed by SQLite).
            parts.append(
                sa.select(n.level, n.idx, n.hash).where(
                    sa.or_(
                        *(sa.and_(n.level == lv, n.idx.in_(ixs)) for lv, ixs in by_level.items())
                    )
                )
            )
        if not parts:
            return {}
        query = parts[0] if len(parts) == 1 else sa.union_all(*parts)
        rows = (await conn.execute(query)).all()
        return {(int(lv), int(ix)): bytes(h) for lv, ix, h in rows}

    async def _with_nodes(self, wanted: Sequence[tuple[int, int]], size: int) -> merkle.Lookup:
        async with self._engine.connect() as conn:
            got = await self._nodes(conn, wanted)
            missing = [w for w in wanted if w not in got]
            if missing:
                have = int(
                    (
                        await conn.execute(sa.select(audit_head.c.size).where(audit_head.c.id == 1))
                    ).scalar_one()
                )
                if size > have:
                    raise NotFoundError(
                        f"the audit log has {plural(have, 'entry')}, fewer than {size}"
                    )
                raise IntegrityError(
                    f"the audit log's stored subtree hash {missing[0]} is missing: "
                    "run 'handover audit verify'"
                )
        return lambda level, index: got[(level, index)]

    async def root(self, size: int | None = None) -> bytes:
        size = await self.size() if size is None else size
        lookup = await self._with_nodes(merkle.root_nodes(size), size)
        return merkle.root_from_lookup(lookup, size)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Hashes proving entry ``index`` is in the tree of ``size`` (O(log n) lookups)."""
        if not 0 <= index < size:
            raise InputError(f"entry {index} is not in a tree of size {size}")
        lookup = await self._with_nodes(merkle.inclusion_nodes(index, size), size)
        return merkle.inclusion_proof(lookup, index, size)

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """Hashes proving the tree of size ``old`` is a prefix of the tree of size ``new``."""
        if not 0 < old <= new:
            raise InputError(f"no consistency proof from size {old} to size {new}")
        lookup = await self._with_nodes(merkle.consistency_nodes(old, new), new)
        return merkle.consistency_proof(lookup, old, new)

    async def entry(self, seq: int) -> tuple[bytes, bytes]:
        """The stored bytes and leaf hash of entry ``seq``."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(audit_entries.c.body, audit_entries.c.leaf_hash).where(
                        audit_entries.c.seq == seq
                    )
                )
            ).one_or_none()
        if row is None:
            raise NotFoundError(f"there is no audit entry #{seq}")
        return bytes(row.body), bytes(row.leaf_hash)

    # -------------------------------------------------------------- checkpoints

    async def checkpoint(self) -> StoredCheckpoint:
        """Sign and store a checkpoint of the whole log (the latest is reused if no change)."""
        signer = await self.signer()
        async with self._engine.begin() as conn:
            size, compact_blob, _ = await self._lock_head(conn)
            latest = await self._latest(conn)
            if latest is not None and latest.size == size:
                stored = latest
            else:
                root = merkle.CompactRange.decode(size, compact_blob).root()
                cp = Checkpoint(signer.name, size, root)
                note = sign_checkpoint(cp, signer)
                now = self._now()
                await conn.execute(
                    sa.insert(audit_checkpoints).values(
                        size=size, root=root, note=note, created_at=now
                    )
                )
                stored = StoredCheckpoint(note, cp, now)
        self._write_anchor(stored)
        return stored

    async def _latest(self, conn: AsyncConnection) -> StoredCheckpoint | None:
        row = (
            await conn.execute(
                sa.select(audit_checkpoints)
                .order_by(audit_checkpoints.c.size.desc(), audit_checkpoints.c.id.desc())
                .limit(1)
            )
        ).one_or_none()
        if row is None:
            return None
        return StoredCheckpoint(
            row.note, parse_checkpoint_text(parse_note(row.note).text), row.created_at
        )

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        async with self._engine.connect() as conn:
            return await self._latest(conn)

    async def checkpoints(self) -> list[StoredCheckpoint]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.id))
            return [
                StoredCheckpoint(
                    r.note, parse_checkpoint_text(parse_note(r.note).text), r.created_at
                )
                for r in rows
            ]

    def _write_anchor(self, stored: StoredCheckpoint) -> None:
        """Keep the latest checkpoint beside (not in) the database: a restored DB contradicts it.

        A damaged file is left as it is (it may be evidence, and ``audit verify`` reports
        it) and not updated until the operator moves it aside; work goes on meanwhile.
        """
        if self._anchor is None:
            return
        try:
            current = self._read_anchor()
        except AnchorDamaged as exc:
            if not self._anchor_warned:
                self._anchor_warned = True
                log.warning(
                    "%s; it is left as it is and not updated: run 'handover audit verify', "
                    "then move it aside (docs/operations.md)",
                    exc.message,
                )
            return
        if current is not None and current.size >= stored.size:
            return
        private_dir(self._anchor.parent)
        fd, tmp = tempfile.mkstemp(dir=self._anchor.parent, prefix=".checkpoint-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(stored.note)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._anchor)

    def _read_anchor(self) -> Checkpoint | None:
        """The checkpoint in the anchor file (None if there is none), or :class:`AnchorDamaged`."""
        return self._anchor_note()[1]

    def _anchor_note(self) -> tuple[str, Checkpoint] | tuple[None, None]:
        if self._anchor is None or not self._anchor.exists():
            return None, None
        try:
            note = self._anchor.read_bytes().decode("utf-8")
            return note, parse_checkpoint(note)[1]
        except (OSError, UnicodeDecodeError, NoteError) as exc:
            reason = (
                exc.message
                if isinstance(exc, NoteError)
                else exc.strerror
                if isinstance(exc, OSError)
                else "it is not UTF-8 text"
            )
            raise AnchorDamaged(
                f"the checkpoint file {self._anchor} is damaged or was altered ({reason})"
            ) from None

    async def for_peer(self, since: int | None) -> PeerCheckpoint:
        """Our latest checkpoint (signed now if needed) and a consistency proof from ``since``.

        ``since`` is the size of our checkpoint the peer last stored (from its
        :meth:`held_size`), or ``None``.
        """
        latest = await self.checkpoint()
        proof: list[bytes] = []
        if since is not None and 0 < since < latest.size:
            proof = await self.consistency_proof(since, latest.size)
        elif since is not None and since > latest.size:
            since = None  # the peer claims more than we have; it will see the conflict
        return PeerCheckpoint(latest.note, since, proof)

    # ---------------------------------------------------------------- witnessing

    async def held_size(self, origin: str) -> int | None:
        """The largest tree size of ``origin``'s log we hold a checkpoint for."""
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(
                    sa.select(sa.func.max(audit_witnessed.c.size)).where(
                        audit_witnessed.c.origin == origin
                    )
                )
            ).scalar_one_or_none()
        return None if value is None else int(value)

    async def store_witnessed(
        self,
        note: str,
        vkey: str,
        *,
        from_org: str,
        since: int | None = None,
        proof: Sequence[bytes] = (),
    ) -> WitnessResult:
        """Keep a checkpoint a counterpart sent us (e.g. in a receipt), after checking it.

        The signature must verify with ``vkey`` (from the directory) and the
        checkpoint must agree with every one already held from that log: same
        size, same root; and ``proof`` (a consistency proof from size ``since``)
        must show it extends the one held at ``since``. A contradiction is stored
        as evidence and raised as :class:`WitnessConflict`.
        """
        return await self._witness(note, vkey, from_org, since, proof, store=True)

    async def check_witness(
        self,
        note: str,
        vkey: str,
        *,
        from_org: str,
        since: int | None = None,
        proof: Sequence[bytes] = (),
    ) -> WitnessResult:
        """What :meth:`store_witnessed` would say, without storing anything."""
        return await self._witness(note, vkey, from_org, since, proof, store=False)

    async def _witness(
        self,
        note: str,
        vkey: str,
        from_org: str,
        since: int | None,
        proof: Sequence[bytes],
        *,
        store: bool,
    ) -> WitnessResult:
        verifier = Verifier.from_vkey(vkey)
        cp = verify_checkpoint(note, verifier)
        async with self._engine.begin() as conn:
            held = [
                (int(r.size), bytes(r.root))
                for r in await conn.execute(
                    sa.select(audit_witnessed.c.size, audit_witnessed.c.root).where(
                        audit_witnessed.c.origin == cp.origin
                    )
                )
            ]
            problem = _witness_problem(cp, held, since, proof)
            largest = max((s for s, _ in held), default=None)
            if problem is not None:
                status = "conflict"
            elif not held:
                status = "first"
            elif any(s == cp.size for s, _ in held):
                status = "same"
            elif largest is not None and cp.size < largest:
                status = "older"
            elif since is not None and proof and since == largest:
                status = "consistent"
            else:
                status = "unproven"
            if store and status != "same":
                await conn.execute(
                    sa.insert(audit_witnessed).values(
                        from_org=from_org,
                        origin=cp.origin,
                        vkey=verifier.vkey,
                        size=cp.size,
                        root=cp.root,
                        note=note,
                        prev_size=since if proof else None,
                        proof=json.dumps([b64(p) for p in proof]) if proof else None,
                        status=status,
                        received_at=self._now(),
                    )
                )
        if problem is not None:
            raise WitnessConflict(
                f"the checkpoint from {from_org} (log {cp.origin}, size {cp.size}) contradicts "
                f"one we already hold: {problem}"
                + ("; it has been kept as evidence" if store else "")
            )
        return WitnessResult(status, cp.origin, cp.size, largest)

    async def witnessed(self, origin: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(audit_witnessed).order_by(audit_witnessed.c.id)
        if origin is not None:
            q = q.where(audit_witnessed.c.origin == origin)
        async with self._engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(q)]

    # ------------------------------------------------------------------ reading

    def _search(
        self,
        q: sa.Select[Any],
        *,
        pupil: str | None = None,
        person: str | None = None,
        org: str | None = None,
        action: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> sa.Select[Any]:
        """``q`` narrowed by the search columns (see :meth:`show`)."""
        c = audit_entries.c
        if pupil is not None:
            q = q.where(c.pupil == pupil)
        if person is not None:
            q = q.where(sa.or_(c.actor == person, c.person == person))
        if org is not None:
            q = q.where(c.org == org)
        if action is not None:
            wanted = [action] if isinstance(action, str) else list(action)
            q = q.where(
                sa.or_(
                    *(
                        c.action.startswith(a[:-1], autoescape=True)
                        if a.endswith("*")
                        else c.action == a
                        for a in wanted
                    )
                )
            )
        if since is not None:
            q = q.where(c.at >= since.astimezone(UTC))
        if until is not None:
            q = q.where(c.at < until.astimezone(UTC))
        return q

    async def count(self, **filters: Any) -> int:
        """How many entries :meth:`show` would find with these filters (no limit)."""
        q = self._search(sa.select(sa.func.count()).select_from(audit_entries), **filters)
        async with self._engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def show(
        self,
        *,
        pupil: str | None = None,
        person: str | None = None,
        org: str | None = None,
        action: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[ShownEntry]:
        """Entries matching every given filter, oldest first (``action`` may end in ``*``,
        or be several actions, any of which matches); ``offset`` and ``limit`` take a page
        of them, and ``newest_first`` turns the order round.

        The filters search the columns kept beside each entry; every entry found is
        checked against them, so a row whose columns were edited to match a search is
        refused (:class:`TamperError`), never shown as if it matched. A row edited *out* of
        a search is found by :meth:`verify`, which checks every row's columns.
        """
        c = audit_entries.c
        q = self._search(
            sa.select(c.seq, c.body, *(c[name] for name in COLUMNS)).order_by(
                c.seq.desc() if newest_first else c.seq
            ),
            pupil=pupil,
            person=person,
            org=org,
            action=action,
            since=since,
            until=until,
        )
        if offset:
            q = q.offset(offset)
        if limit is not None:
            q = q.limit(limit)
        out: list[ShownEntry] = []
        async with self._engine.connect() as conn:
            for r in await conn.execute(q):
                try:
                    entry = decode(bytes(r.body))
                except EntryFormatError:
                    raise TamperError(
                        "changed", f"entry #{r.seq} is not a valid entry: it was changed", seq=r.seq
                    ) from None
                column = _first_difference(entry.columns(), _stored_columns(r))
                if column is not None:
                    raise _column_changed(int(r.seq), column)
                out.append(ShownEntry(int(r.seq), entry))
        return out

    async def iter_chunks(
        self, chunk: int | None = None, *, below: int | None = None
    ) -> AsyncIterator[list[tuple[int, bytes, bytes]]]:
        """Every stored row ``(seq, body, leaf_hash)`` in sequence order, a chunk at a time.

        Rows with any ``seq`` (even negative ones) are included; ``below`` stops
        before that sequence number.
        """
        chunk = chunk or VERIFY_CHUNK
        last: int | None = None
        c = audit_entries.c
        while True:
            q = sa.select(c.seq, c.body, c.leaf_hash).order_by(c.seq).limit(chunk)
            if last is not None:
                q = q.where(c.seq > last)
            if below is not None:
                q = q.where(c.seq < below)
            async with self._engine.connect() as conn:
                rows = (await conn.execute(q)).all()
            if not rows:
                return
            yield [(int(s), bytes(b), bytes(h)) for s, b, h in rows]
            last = int(rows[-1][0])

    def _verify_columns(self) -> list[sa.ColumnElement[Any]]:
        """The search columns as verification reads them: ``at`` as the text
        ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC (on SQLite, exactly the text it holds and
        compares when a search filters on time), the others as stored."""
        c = audit_entries.c
        if self._sqlite:
            at: sa.ColumnElement[Any] = sa.type_coerce(c.at, sa.Text())
        else:
            at = sa.func.to_char(sa.func.timezone("UTC", c.at), "YYYY-MM-DD HH24:MI:SS.US")
        return [at.label("at"), c.action, c.actor, c.org, c.pupil, c.person]

    async def _verify_rows(self, below: int) -> AsyncIterator[list[Row]]:
        """Every row below ``below`` with its search columns (:data:`Row`), in sequence
        order, a chunk at a time."""
        last: int | None = None
        c = audit_entries.c
        columns = self._verify_columns()
        while True:
            q = (
                sa.select(c.seq, c.body, c.leaf_hash, *columns)
                .where(c.seq < below)
                .order_by(c.seq)
                .limit(VERIFY_CHUNK)
            )
            if last is not None:
                q = q.where(c.seq > last)
            async with self._engine.connect() as conn:
                rows = (await conn.execute(q)).all()
            if not rows:
                return
            yield [(int(r[0]), bytes(r[1]), bytes(r[2]), *r[3:]) for r in rows]
            last = int(rows[-1][0])

    async def _chunk_starts(self, below: int) -> list[int]:
        """The first sequence number of each chunk of :data:`VERIFY_CHUNK` rows below
        ``below`` (whatever numbers the rows hold, gaps and negative ones included)."""
        c = audit_entries.c
        numbered = (
            sa.select(c.seq, sa.func.row_number().over(order_by=c.seq).label("n"))
            .where(c.seq < below)
            .subquery()
        )
        q = (
            sa.select(numbered.c.seq)
            .where((numbered.c.n - 1) % VERIFY_CHUNK == 0)
            .order_by(numbered.c.seq)
        )
        async with self._engine.connect() as conn:
            return [int(v) for v in (await conn.execute(q)).scalars()]

    def _sqlite_file(self) -> str | None:
        """The SQLite database file, when worker processes can open it themselves."""
        if not self._sqlite:
            return None
        name = self._engine.url.database
        if not name or name == ":memory:" or name.startswith("file:"):
            return None
        return name

    async def iter_bodies(self) -> AsyncIterator[tuple[int, bytes, bytes]]:
        """Every stored row ``(seq, body, leaf_hash)`` in sequence order."""
        async for rows in self.iter_chunks():
            for row in rows:
                yield row

    # ------------------------------------------------------------ verification

    async def verify(self, extra: Sequence[tuple[str, str]] = ()) -> int:
        """Recompute the whole tree from the stored entries and check it; return the size.

        Checks every entry's encoding, position and link to its predecessor, that
        the search columns stored beside it (what ``audit show`` filters on) say
        what the entry says, the head row, every stored checkpoint, every
        checkpoint of this log handed back by a counterpart, the anchor file in
        the data directory, and the notes in ``extra`` (``(source, signed
        note)``). Checkpoints other logs sent us are re-checked against each
        other. Raises :class:`TamperError` naming the first problem.
        """
        verifier = await self.verifier()
        targets: list[tuple[Checkpoint, str]] = []
        async with self._engine.connect() as conn:
            head = (
                await conn.execute(sa.select(audit_head).where(audit_head.c.id == 1))
            ).one_or_none()
            if head is None:
                raise TamperError("head", "the audit log's head row was deleted")
            for r in await conn.execute(
                sa.select(audit_checkpoints).order_by(audit_checkpoints.c.id)
            ):
                targets.append(
                    (
                        self._own_checkpoint(r.note, verifier, f"stored checkpoint #{r.id}"),
                        f"stored checkpoint #{r.id}",
                    )
                )
            witnessed = [
                dict(r._mapping)
                for r in await conn.execute(
                    sa.select(audit_witnessed).order_by(audit_witnessed.c.id)
                )
            ]
        for w in witnessed:
            if w["origin"] == verifier.name:
                src = f"the copy of our checkpoint held by {w['from_org']}"
                targets.append((self._own_checkpoint(w["note"], verifier, src), src))
        _recheck_witnessed([w for w in witnessed if w["origin"] != verifier.name])
        # A damaged checkpoint file is reported once the log itself has been checked, so the
        # report says whether anything else is wrong.
        anchor_problem: str | None = None
        if self._anchor is not None:
            src = f"the checkpoint file {self._anchor}"
            try:
                note, _ = self._anchor_note()
                if note is not None:
                    targets.append((self._own_checkpoint(note, verifier, src), src))
            except (AnchorDamaged, TamperError) as exc:
                anchor_problem = exc.message
        for source, note in extra:
            targets.append((self._own_checkpoint(note, verifier, source), source))
        checker = TreeChecker(targets)
        head_size = int(head.size)
        # Only rows below the head's size as read above: appends made while we
        # verify do not disturb it; rows beyond the head are counted at the end.
        await self._feed(checker, head_size)
        count = checker.finish()
        if count < head_size:
            raise TamperError(
                "truncated",
                f"the log was truncated: it holds {plural(count, 'entry')} but its head records "
                f"{head_size} (entries #{count} to #{head_size - 1} are gone)",
                seq=count,
            )
        async with self._engine.connect() as conn:
            # One statement, so one snapshot: the head now, and rows beyond it.
            size_now, beyond = (
                await conn.execute(
                    sa.select(
                        audit_head.c.size,
                        sa.select(sa.func.count())
                        .select_from(audit_entries)
                        .where(audit_entries.c.seq >= audit_head.c.size)
                        .scalar_subquery(),
                    ).where(audit_head.c.id == 1)
                )
            ).one()
        if beyond:
            raise TamperError(
                "inserted",
                f"entry #{size_now} was inserted: the log head records only "
                f"{plural(size_now, 'entry')}",
                seq=int(size_now),
            )
        if count and (
            bytes(head.last_leaf) != checker.last
            or merkle.CompactRange.decode(head_size, bytes(head.compact)).root() != checker.root()
        ):
            raise TamperError(
                "changed" if bytes(head.last_leaf) != checker.last else "head",
                f"entry #{count - 1} was changed: it no longer matches the log head"
                if bytes(head.last_leaf) != checker.last
                else "the log head was altered: its tree does not match the entries",
                seq=count - 1,
            )
        checker.check_beyond()
        checker.check_columns()
        if anchor_problem is not None:
            raise TamperError(
                "checkpoint",
                f"{anchor_problem}. The log itself is intact ({count} entries, consistent with "
                "every other checkpoint held): keep the file with a note of this, then move it "
                "aside (the node writes a new one at its next checkpoint)",
            )
        return count

    async def _feed(self, checker: TreeChecker, below: int) -> None:
        """Check every row in worker processes, in order, while the next chunk loads.

        Workers parse, hash and chain-check whole chunks and compare each row's search
        columns with its entry (:func:`check_run`); this process only folds the leaf
        hashes into the tree and, for a chunk with a problem, goes through it row by row
        to name the first one. On SQLite the workers read their chunks from the database
        file themselves (:func:`_check_stored`), so rows are neither loaded nor copied
        here; otherwise this process reads each chunk and hands it over.
        """
        loop = asyncio.get_running_loop()
        workers = max(1, min(VERIFY_WORKERS, os.cpu_count() or 1))
        pool: ProcessPoolExecutor | None = None
        in_flight: deque[tuple[asyncio.Future[_Chunk], Callable[[], Awaitable[_Chunk]]]] = deque()

        def start_pool() -> ProcessPoolExecutor:
            # Imported here, for a large log only: a short verify starts without them.
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # fork: the workers only run check_run (json, hashlib, sqlite3), and unlike
            # spawn it does not re-import the caller's __main__ module.
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            return ProcessPoolExecutor(workers, mp_context=mp.get_context(method))

        async def take(chunk: _Chunk, again: Callable[[], Awaitable[_Chunk]]) -> None:
            if chunk.run is not None:
                if checker.add_run(chunk.first, *chunk.run):
                    return
                chunk = await again()  # it does not follow on: row by row, to name why
            add = checker.add_checked
            for seq, checked, stored_leaf in chunk.rows:
                add(seq, checked, stored_leaf)

        async def drain(keep: int) -> None:
            while len(in_flight) > keep:
                fut, again = in_flight.popleft()
                await take(await fut, again)

        try:
            path = self._sqlite_file()
            starts = await self._chunk_starts(below) if path is not None else []
            if path is not None and len(starts) > 1:
                pool = start_pool()
                ends = [*starts[1:], below]
                for lo, hi in zip(starts, ends, strict=True):

                    async def again(lo: int = lo, hi: int = hi) -> _Chunk:
                        assert pool is not None
                        return await loop.run_in_executor(pool, _check_stored, path, lo, hi, True)

                    in_flight.append(
                        (loop.run_in_executor(pool, _check_stored, path, lo, hi), again)
                    )
                    await drain(workers)
                await drain(0)
                return
            async for rows in self._verify_rows(below):

                async def again_here(rows: list[Row] = rows) -> _Chunk:
                    return _check_rows(rows, detail=True)

                if pool is None and len(rows) < VERIFY_CHUNK:
                    await take(_check_rows(rows), again_here)  # a small log: no processes
                    continue
                if pool is None:
                    pool = start_pool()
                in_flight.append((loop.run_in_executor(pool, _check_rows, rows), again_here))
                await drain(workers)
            await drain(0)
        finally:
            for fut, _ in in_flight:
                fut.cancel()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _own_checkpoint(self, note: str, verifier: Verifier, source: str) -> Checkpoint:
        try:
            return verify_checkpoint(note, verifier)
        except NoteError as exc:
            raise TamperError(
                "checkpoint", f"{source} is not a valid checkpoint of this log: {exc.message}"
            ) from None


@dataclass(frozen=True)
class _Chunk:
    """A chunk of rows as a worker checked it: a clean run (``run``: the first row's
    ``prev`` and every leaf hash), or each row ``(row seq, checked, stored leaf)``."""

    first: int
    run: tuple[bytes, list[bytes]] | None
    rows: list[tuple[int, Checked, bytes]]


def _check_rows(rows: list[Row], detail: bool = False) -> _Chunk:
    """:func:`check_run` over ``rows`` (in a worker process); ``detail``: row by row."""
    first = rows[0][0] if rows else 0
    result = check_many([r[1] for r in rows], [r[3:] for r in rows]) if detail else check_run(rows)
    if isinstance(result, tuple):
        return _Chunk(first, result, [])
    return _Chunk(first, None, [(r[0], c, r[2]) for r, c in zip(rows, result, strict=True)])


_STORED_ROWS = (
    "SELECT seq, body, leaf_hash, at, action, actor, org, pupil, person FROM audit_entries"
    " WHERE seq >= ? AND seq < ? ORDER BY seq"
)


def _check_stored(path: str, lo: int, hi: int, detail: bool = False) -> _Chunk:
    """Read rows ``lo <= seq < hi`` from the SQLite file at ``path`` and check them (in a
    worker process, over its own read-only connection; ``at`` is read as the text the
    database holds)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute("PRAGMA query_only = ON")
        rows = conn.execute(_STORED_ROWS, (lo, hi)).fetchall()
    finally:
        conn.close()
    return _check_rows(rows, detail)


def _witness_problem(
    cp: Checkpoint, held: Sequence[tuple[int, bytes]], since: int | None, proof: Sequence[bytes]
) -> str | None:
    for size, root in held:
        if size == cp.size and root != cp.root:
            return f"a different root for size {size}"
    if proof:
        if since is None:
            return "a consistency proof without the size it starts from"
        old = [root for size, root in held if size == since]
        if not old:
            return f"a consistency proof from size {since}, which we do not hold"
        try:
            merkle.verify_consistency(since, cp.size, old[0], cp.root, proof)
        except merkle.ProofError as exc:
            return f"the consistency proof from size {since} fails ({exc.message})"
    return None


def _recheck_witnessed(rows: Sequence[dict[str, Any]]) -> None:
    """Re-check counterparts' checkpoints: signatures, equal sizes, stored proofs."""
    by_origin: dict[str, dict[int, bytes]] = {}
    for w in rows:
        src = f"the checkpoint from {w['from_org']} (log {w['origin']}, size {w['size']})"
        try:
            cp = verify_checkpoint(w["note"], Verifier.from_vkey(w["vkey"]))
        except NoteError as exc:
            raise TamperError("checkpoint", f"{src} was altered: {exc.message}") from None
        if cp.size != int(w["size"]) or cp.root != bytes(w["root"]) or cp.origin != w["origin"]:
            raise TamperError("checkpoint", f"{src} no longer matches its stored size or root")
        seen = by_origin.setdefault(cp.origin, {})
        if w["status"] != "conflict":
            if cp.size in seen and seen[cp.size] != cp.root:
                raise TamperError("contradicted", f"{src} contradicts another we hold")
            if w["proof"]:
                prev = seen.get(int(w["prev_size"]))
                proof = [unb64(p) for p in json.loads(w["proof"])]
                try:
                    if prev is None:
                        raise merkle.ProofError("the checkpoint it extends is gone")
                    merkle.verify_consistency(int(w["prev_size"]), cp.size, prev, cp.root, proof)
                except merkle.ProofError as exc:
                    raise TamperError("contradicted", f"{src}: {exc.message}") from None
            seen[cp.size] = cp.root


def _first_difference(entry: Columns, stored: Columns) -> str | None:
    """The first of :data:`COLUMNS` whose stored value differs from the entry's."""
    for name, said, held in zip(COLUMNS, entry, stored, strict=True):
        if name == "at":
            if (
                not isinstance(held, datetime)
                or (held if held.tzinfo else held.replace(tzinfo=UTC)) != said
            ):
                return name
        elif held != said:
            return name
    return None


def _column_changed(seq: int, column: str) -> TamperError:
    return TamperError(
        "changed",
        f"entry #{seq}'s {column!r} column was changed: it no longer says what the entry says, "
        f"so searching the log by {column} (audit show) would miss or misplace it",
        seq=seq,
        column=column,
    )


class TreeChecker:
    """Streams stored rows, re-hashes them and names the first thing wrong (pure).

    ``targets`` are checkpoints of this log to hold the recomputed tree to.
    """

    def __init__(self, targets: Sequence[tuple[Checkpoint, str]] = ()) -> None:
        self._targets: dict[int, list[tuple[Checkpoint, str]]] = {}
        for cp, src in targets:
            self._targets.setdefault(cp.size, []).append((cp, src))
        self._tree = merkle.CompactRange()
        self._expected = 0
        self.last = ZERO_HASH
        self._gap: tuple[int, int, int] | None = None  # (first missing, seq found, row)
        self._later: set[int] = set()
        #: The first entry whose search columns disagree with it, and which column: reported
        #: by :meth:`check_columns`, after anything wrong with the entries themselves.
        self.column_problem: tuple[int, str] | None = None
        self._check_targets()

    def _check_targets(self) -> None:
        for cp, src in self._targets.get(self._tree.size, ()):
            if self._tree.root() != cp.root:
                raise TamperError(
                    "contradicted",
                    f"the log contradicts {src} (size {cp.size}): its first "
                    f"{plural(cp.size, 'entry')} "
                    "are not the ones that were signed (changed, or rolled back and rewritten)",
                    seq=cp.size,
                )

    def add(self, row: int, body: bytes, stored_leaf: bytes) -> None:
        self.add_checked(row, check_many([body])[0], stored_leaf)

    def add_run(self, first: int, first_prev: bytes, leaves: list[bytes]) -> bool:
        """Take a run of rows :func:`check_run` found clean; False if it does not follow on."""
        if self._gap is not None or first != self._expected or first_prev != self.last:
            return False
        tree, targets = self._tree, self._targets
        end = tree.size + len(leaves)
        if any(tree.size < size <= end for size in targets):
            for leaf in leaves:
                tree.push(leaf)
                if tree.size in targets:
                    self._check_targets()
        else:
            push = tree.push
            for leaf in leaves:
                push(leaf)
        self._expected += len(leaves)
        self.last = leaves[-1]
        return True

    def add_checked(self, row: int, checked: Checked, stored_leaf: bytes) -> None:
        """Take one row whose body was already parsed and hashed by :func:`check_many`."""
        if self._gap is not None:
            if not isinstance(checked, str):
                self._later.add(checked[0])
            return
        if row < 0:
            raise TamperError(
                "inserted", f"a row with the impossible sequence number {row} was inserted", seq=row
            )
        if isinstance(checked, str):
            raise TamperError(
                "changed", f"entry #{row} was changed: its stored bytes are {checked}", seq=row
            )
        s, prev, leaf, column = checked
        if s == self._expected:
            if leaf != stored_leaf:
                raise TamperError(
                    "changed",
                    f"entry #{s} was changed: it no longer matches the hash recorded when it "
                    "was appended",
                    seq=s,
                )
            if prev != self.last:
                raise TamperError(
                    "changed",
                    f"entry #{s - 1} was changed: entry #{s} links to a different hash",
                    seq=s - 1,
                )
            if row != s:
                raise TamperError(
                    "reordered", f"entry #{s} was moved: it is stored as row {row}", seq=s
                )
            if column is not None and self.column_problem is None:
                self.column_problem = (s, column)
            self._tree.push(leaf)
            self._expected += 1
            self.last = leaf
            self._check_targets()
        elif s < self._expected:
            raise TamperError(
                "inserted",
                f"an entry was inserted at row {row}: it claims to be entry #{s}, "
                f"which the log already holds",
                seq=s,
            )
        else:
            self._gap = (self._expected, s, row)

    def finish(self) -> int:
        if self._gap is not None:
            missing, found, row = self._gap
            if missing in self._later:
                raise TamperError(
                    "reordered",
                    f"the entries were reordered: entry #{found} is stored at row {row}, "
                    f"before entry #{missing}",
                    seq=missing,
                )
            upto = found - 1
            what = (
                f"entry #{missing} was"
                if upto == missing
                else f"entries #{missing} to #{upto} were"
            )
            raise TamperError("removed", f"{what} removed: the log jumps to #{found}", seq=missing)
        return self._tree.size

    def check_columns(self) -> None:
        """Raise for the first entry whose search columns were edited (see ``column_problem``)."""
        if self.column_problem is not None:
            raise _column_changed(*self.column_problem)

    def check_beyond(self) -> None:
        """Every checkpoint larger than the log means it was truncated or rolled back."""
        count = self._tree.size
        for size, cps in sorted(self._targets.items()):
            if size > count:
                _, src = cps[0]
                raise TamperError(
                    "rolled-back",
                    f"the log was truncated or rolled back: {src} was signed at size {size} "
                    f"but the log holds only {plural(count, 'entry')}",
                    seq=count,
                )

    def root(self) -> bytes:
        return self._tree.root()
