"""Checkpoints (signed tree heads) of the audit log, the key that signs them, and the
copy of the newest one kept beside the database.

The note format and its signatures are :mod:`transfer.audit.checkpoint` (pure); this
module signs and stores checkpoints of the log in the database, keeps the newest in
the data directory (``ANCHOR``: a database restored from a backup contradicts it) and
hands counterparts our latest with a consistency proof (:class:`PeerCheckpoint`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from keys import aead
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
)
from transfer.audit.logdb import LogDB
from transfer.audit.proofs import Proofs
from transfer.audit.tables import audit_checkpoints, audit_key
from transfer.audit.verifier import b64, unb64
from transfer.errors import InputError, IntegrityError
from transfer.private_files import private_dir

log = logging.getLogger("handover.audit")

DEFAULT_ORIGIN = "handover.invalid/audit"
#: Where, inside the data directory, the newest checkpoint is kept outside the database.
ANCHOR = Path("audit") / "latest-checkpoint.note"


def origin_for(base_url: str) -> str:
    """The log's origin line and key name: the node's host (and port) and ``/audit``."""
    host = urlsplit(base_url).netloc or "handover.invalid"
    return f"{host}/audit"


class AnchorDamaged(IntegrityError):
    """The checkpoint file in the data directory cannot be read as a checkpoint."""


def key_aad(origin: str) -> bytes:
    return f"handover/audit-log-key/v1|{origin}".encode()


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


class Checkpoints:
    """Signs, stores and reads the log's checkpoints; holds its signing key."""

    def __init__(
        self, db: LogDB, proofs: Proofs, kek: bytes, *, origin: str, anchor: Path | None
    ) -> None:
        self._db = db
        self._proofs = proofs
        self._kek = kek
        self._origin = origin
        #: The checkpoint file in the data directory (None: not kept).
        self.anchor = anchor
        self._signer: Signer | None = None
        #: A damaged checkpoint file was logged (once per process).
        self._anchor_warned = False

    # --------------------------------------------------------------------- keys

    async def signer(self) -> Signer:
        """The log's note signer, generated and sealed under the KEK at first use."""
        if self._signer is not None:
            return self._signer
        async with self._db.engine.begin() as conn:
            row = (
                await conn.execute(sa.select(audit_key).where(audit_key.c.id == 1))
            ).one_or_none()
            if row is None:
                await self._db.lock_head(conn)  # one process creates the key
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
                        created_at=self._db.now(),
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

    # -------------------------------------------------------------- checkpoints

    async def checkpoint(self) -> StoredCheckpoint:
        """Sign and store a checkpoint of the whole log (the latest is reused if no change)."""
        signer = await self.signer()
        async with self._db.engine.begin() as conn:
            size, compact_blob, _ = await self._db.lock_head(conn)
            latest = await self._latest(conn)
            if latest is not None and latest.size == size:
                stored = latest
            else:
                root = merkle.CompactRange.decode(size, compact_blob).root()
                cp = Checkpoint(signer.name, size, root)
                note = sign_checkpoint(cp, signer)
                now = self._db.now()
                await conn.execute(
                    sa.insert(audit_checkpoints).values(
                        size=size, root=root, note=note, created_at=now
                    )
                )
                stored = StoredCheckpoint(note, cp, now)
        # On a worker thread: its fsync would otherwise stop every request this process
        # serves while the disk flushes (a receipt signs a checkpoint for each package).
        await asyncio.to_thread(self._write_anchor, stored)
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
        async with self._db.engine.connect() as conn:
            return await self._latest(conn)

    async def checkpoints(self) -> list[StoredCheckpoint]:
        async with self._db.engine.connect() as conn:
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
        if self.anchor is None:
            return
        private_dir(self.anchor.parent)
        # Read, compared and replaced under a lock on the directory, so that two checkpoints
        # signed at once (worker threads, or the processes sharing this data directory)
        # cannot leave the older one in the file.
        fd = os.open(self.anchor.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._replace_anchor(self.anchor, stored)
        finally:
            os.close(fd)  # also releases the lock

    def _replace_anchor(self, anchor: Path, stored: StoredCheckpoint) -> None:
        try:
            current = self.read_anchor()
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
        fd, tmp = tempfile.mkstemp(dir=anchor.parent, prefix=".checkpoint-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(stored.note)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, anchor)

    def read_anchor(self) -> Checkpoint | None:
        """The checkpoint in the anchor file (None if there is none), or :class:`AnchorDamaged`."""
        return self.anchor_note()[1]

    def anchor_note(self) -> tuple[str, Checkpoint] | tuple[None, None]:
        if self.anchor is None or not self.anchor.exists():
            return None, None
        try:
            note = self.anchor.read_bytes().decode("utf-8")
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
                f"the checkpoint file {self.anchor} is damaged or was altered ({reason})"
            ) from None

    async def for_peer(self, since: int | None) -> PeerCheckpoint:
        """Our latest checkpoint (signed now if needed) and a consistency proof from ``since``.

        ``since`` is the size of our checkpoint the peer last stored (from its
        ``AuditLog.held_size``), or ``None``.
        """
        latest = await self.checkpoint()
        proof: list[bytes] = []
        if since is not None and 0 < since < latest.size:
            proof = await self._proofs.consistency_proof(since, latest.size)
        elif since is not None and since > latest.size:
            since = None  # the peer claims more than we have; it will see the conflict
        return PeerCheckpoint(latest.note, since, proof)
