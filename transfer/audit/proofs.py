"""Inclusion and consistency proofs, and tree roots, served from the stored tree.

Appending stores every full subtree's hash (``audit_nodes``; the leaves are in
``audit_entries``), so a root or a proof needs O(log n) lookups, made in one query.
The Merkle maths is :mod:`transfer.audit.merkle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from transfer.audit import merkle
from transfer.audit.logdb import LogDB
from transfer.audit.tables import audit_entries, audit_nodes
from transfer.errors import InputError, IntegrityError, NotFoundError
from transfer.wording import plural


class Proofs:
    """Roots, proofs and single entries of the log's stored tree."""

    def __init__(self, db: LogDB) -> None:
        self._db = db

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
        async with self._db.engine.connect() as conn:
            got = await self._nodes(conn, wanted)
            missing = [w for w in wanted if w not in got]
            if missing:
                have = await self._db.head_size(conn)
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
        size = await self._db.size() if size is None else size
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
        async with self._db.engine.connect() as conn:
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
