"""The audit log in the database: appends, checkpoints, proofs, witnessing, verification.

:class:`AuditLog` implements :class:`schemas.auditing.AuditSink`. It is a façade over
the log's parts, each over the same database (:class:`~transfer.audit.logdb.LogDB`):

- :mod:`~transfer.audit.appender`: writing entries (group commit, intents);
- :mod:`~transfer.audit.proofs`: roots, inclusion and consistency proofs;
- :mod:`~transfer.audit.checkpoints`: signed tree heads, the signing key, the anchor file;
- :mod:`~transfer.audit.witnesses`: counterparts' checkpoints we keep;
- :mod:`~transfer.audit.reading`: searching and reading the entries;
- :mod:`~transfer.audit.verification`: checking the whole stored log, with the pure
  :mod:`~transfer.audit.verifier` (which also checks exports, with no database).

The names callers use from those modules are importable from here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from keys import aead
from schemas.auditing import AuditEvent
from transfer.audit.appender import Appender
from transfer.audit.checkpoint import Signer, Verifier
from transfer.audit.checkpoints import (
    ANCHOR,
    DEFAULT_ORIGIN,
    AnchorDamaged,
    Checkpoints,
    PeerCheckpoint,
    StoredCheckpoint,
    key_aad,
    origin_for,
)
from transfer.audit.logdb import LogDB
from transfer.audit.proofs import Proofs
from transfer.audit.reading import Reader, ShownEntry
from transfer.audit.verification import Verification
from transfer.audit.verifier import TamperError, TreeChecker, b64, unb64
from transfer.audit.witnesses import WitnessConflict, Witnesses, WitnessResult
from transfer.config import Config
from transfer.store.db import make_engine

__all__ = [
    "ANCHOR",
    "DEFAULT_ORIGIN",
    "AnchorDamaged",
    "AuditLog",
    "PeerCheckpoint",
    "ShownEntry",
    "StoredCheckpoint",
    "TamperError",
    "TreeChecker",
    "WitnessConflict",
    "WitnessResult",
    "b64",
    "key_aad",
    "origin_for",
    "unb64",
]


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
        self._db = LogDB(engine, clock)
        self._own_engine = own_engine
        self._appender = Appender(self._db)
        self._proofs = Proofs(self._db)
        self._checkpoints = Checkpoints(self._db, self._proofs, kek, origin=origin, anchor=anchor)
        self._witnesses = Witnesses(self._db)
        self._reader = Reader(self._db)
        self._verification = Verification(self._db, self._checkpoints)

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
        await self._appender.close()
        if self._own_engine:
            await self._db.engine.dispose()

    @property
    def origin(self) -> str:
        return self._checkpoints.origin

    @property
    def engine(self) -> AsyncEngine:
        """The database engine the log works on."""
        return self._db.engine

    # ---------------------------------------------------------------- appending

    async def record(self, event: AuditEvent) -> None:
        """AuditSink: append one event; return once it is committed."""
        await self._appender.append(event)

    async def append(self, event: AuditEvent) -> int:
        """Append one event and return its sequence number (durable on return)."""
        return await self._appender.append(event)

    async def record_intent(self, event: AuditEvent, intent_id: str, at: datetime) -> bool:
        """IntentSink: append the entry an intent row promises, and delete the row, in one
        transaction (in the group commit); nothing if the row is already gone."""
        return await self._appender.record_intent(event, intent_id, at)

    async def replay_intents(self, *, older_than: timedelta | None = None, limit: int = 500) -> int:
        """Append the entries promised by intent rows still waiting, each exactly once
        (:meth:`Appender.replay_intents <transfer.audit.appender.Appender.replay_intents>`);
        return how many this call appended."""
        return await self._appender.replay_intents(older_than=older_than, limit=limit)

    async def intents_waiting(self) -> int:
        """How many promised entries are not yet in the log (``audit verify`` reports them)."""
        return await self._appender.intents_waiting()

    async def append_many(self, events: Sequence[AuditEvent]) -> list[int]:
        """Append a batch in one transaction; return their sequence numbers."""
        return await self._appender.append_many(events)

    # --------------------------------------------------------------------- keys

    async def signer(self) -> Signer:
        """The log's note signer, generated and sealed under the KEK at first use."""
        return await self._checkpoints.signer()

    async def verifier(self) -> Verifier:
        """The public half; ``(await log.verifier()).vkey`` is the exportable form."""
        return await self._checkpoints.verifier()

    # -------------------------------------------------------------- tree access

    async def size(self) -> int:
        return await self._db.size()

    async def root(self, size: int | None = None) -> bytes:
        return await self._proofs.root(size)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Hashes proving entry ``index`` is in the tree of ``size`` (O(log n) lookups)."""
        return await self._proofs.inclusion_proof(index, size)

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """Hashes proving the tree of size ``old`` is a prefix of the tree of size ``new``."""
        return await self._proofs.consistency_proof(old, new)

    async def entry(self, seq: int) -> tuple[bytes, bytes]:
        """The stored bytes and leaf hash of entry ``seq``."""
        return await self._proofs.entry(seq)

    # -------------------------------------------------------------- checkpoints

    async def checkpoint(self) -> StoredCheckpoint:
        """Sign and store a checkpoint of the whole log (the latest is reused if no change)."""
        return await self._checkpoints.checkpoint()

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        return await self._checkpoints.latest_checkpoint()

    async def checkpoints(self) -> list[StoredCheckpoint]:
        return await self._checkpoints.checkpoints()

    async def for_peer(self, since: int | None) -> PeerCheckpoint:
        """Our latest checkpoint (signed now if needed) and a consistency proof from ``since``.

        ``since`` is the size of our checkpoint the peer last stored (from its
        :meth:`held_size`), or ``None``.
        """
        return await self._checkpoints.for_peer(since)

    # ---------------------------------------------------------------- witnessing

    async def held_size(self, origin: str) -> int | None:
        """The largest tree size of ``origin``'s log we hold a checkpoint for."""
        return await self._witnesses.held_size(origin)

    async def store_witnessed(
        self,
        note: str,
        vkey: str,
        *,
        from_org: str,
        since: int | None = None,
        proof: Sequence[bytes] = (),
    ) -> WitnessResult:
        """Keep a checkpoint a counterpart sent us (e.g. in a receipt), after checking it
        (:meth:`Witnesses.store_witnessed <transfer.audit.witnesses.Witnesses.store_witnessed>`);
        a contradiction is stored as evidence and raised as :class:`WitnessConflict`."""
        return await self._witnesses.store_witnessed(
            note, vkey, from_org=from_org, since=since, proof=proof
        )

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
        return await self._witnesses.check_witness(
            note, vkey, from_org=from_org, since=since, proof=proof
        )

    async def witnessed(self, origin: str | None = None) -> list[dict[str, Any]]:
        return await self._witnesses.witnessed(origin)

    # ------------------------------------------------------------------ reading

    async def count(self, **filters: Any) -> int:
        """How many entries :meth:`show` would find with these filters (no limit)."""
        return await self._reader.count(**filters)

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
        """Entries matching every given filter (:meth:`Reader.show
        <transfer.audit.reading.Reader.show>`); a row whose columns were edited to match a
        search is refused (:class:`TamperError`)."""
        return await self._reader.show(
            pupil=pupil,
            person=person,
            org=org,
            action=action,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
            newest_first=newest_first,
        )

    def iter_chunks(
        self, chunk: int | None = None, *, below: int | None = None
    ) -> AsyncIterator[list[tuple[int, bytes, bytes]]]:
        """Every stored row ``(seq, body, leaf_hash)`` in sequence order, a chunk at a time."""
        return self._reader.iter_chunks(chunk, below=below)

    def iter_bodies(self) -> AsyncIterator[tuple[int, bytes, bytes]]:
        """Every stored row ``(seq, body, leaf_hash)`` in sequence order."""
        return self._reader.iter_bodies()

    # ------------------------------------------------------------ verification

    async def verify(self, extra: Sequence[tuple[str, str]] = ()) -> int:
        """Recompute the whole tree from the stored entries and check it; return the size
        (:meth:`Verification.verify <transfer.audit.verification.Verification.verify>`).
        Raises :class:`TamperError` naming the first problem."""
        return await self._verification.verify(extra)
