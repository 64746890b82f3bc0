"""Witnessing: keeping the checkpoints counterparts' logs send us, after checking them.

A receipt carries the sender's latest checkpoint and a consistency proof from the size
we last held (``transfer.exchange.witness``). Each is checked against every checkpoint
already held from that log (:func:`transfer.audit.verifier.witness_problem`) and kept
in ``audit_witnessed``; a contradiction (a fork or a rollback) is kept as evidence and
raised as :class:`WitnessConflict`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from transfer.audit.checkpoint import Verifier, verify_checkpoint
from transfer.audit.logdb import LogDB
from transfer.audit.tables import audit_witnessed
from transfer.audit.verifier import b64, witness_problem
from transfer.errors import IntegrityError


class WitnessConflict(IntegrityError):
    """A counterpart's checkpoint contradicts one it sent before (a fork or rollback)."""


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


class Witnesses:
    """The checkpoints of other logs that counterparts sent us."""

    def __init__(self, db: LogDB) -> None:
        self._db = db

    async def held_size(self, origin: str) -> int | None:
        """The largest tree size of ``origin``'s log we hold a checkpoint for."""
        async with self._db.engine.connect() as conn:
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
        async with self._db.engine.begin() as conn:
            held = [
                (int(r.size), bytes(r.root))
                for r in await conn.execute(
                    sa.select(audit_witnessed.c.size, audit_witnessed.c.root).where(
                        audit_witnessed.c.origin == cp.origin
                    )
                )
            ]
            problem = witness_problem(cp, held, since, proof)
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
                        received_at=self._db.now(),
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
        async with self._db.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(q)]
