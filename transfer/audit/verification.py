"""``AuditLog.verify``: reading the stored log and every checkpoint held of it, and
checking them with the pure :mod:`transfer.audit.verifier`.

On a large log the rows are checked in worker processes, a chunk at a time, while the
next chunk loads (on SQLite the workers read their chunks from the database file
themselves); this process folds the leaf hashes into the tree.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from transfer.audit import merkle
from transfer.audit.checkpoint import Checkpoint
from transfer.audit.checkpoints import AnchorDamaged, Checkpoints
from transfer.audit.entry import Row
from transfer.audit.logdb import LogDB
from transfer.audit.tables import audit_checkpoints, audit_entries, audit_head, audit_witnessed
from transfer.audit.verifier import (
    Chunk,
    TamperError,
    TreeChecker,
    check_rows,
    own_checkpoint,
    recheck_witnessed,
)
from transfer.wording import plural

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

VERIFY_CHUNK = 20_000
#: Processes that parse and hash entries during verify() (large logs only).
VERIFY_WORKERS = 2


class Verification:
    """Checks the whole stored log (see :meth:`verify`)."""

    def __init__(self, db: LogDB, checkpoints: Checkpoints) -> None:
        self._db = db
        self._checkpoints = checkpoints

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
        verifier = await self._checkpoints.verifier()
        targets: list[tuple[Checkpoint, str]] = []
        async with self._db.engine.connect() as conn:
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
                        own_checkpoint(r.note, verifier, f"stored checkpoint #{r.id}"),
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
                targets.append((own_checkpoint(w["note"], verifier, src), src))
        recheck_witnessed([w for w in witnessed if w["origin"] != verifier.name])
        # A damaged checkpoint file is reported once the log itself has been checked, so the
        # report says whether anything else is wrong.
        anchor_problem: str | None = None
        if self._checkpoints.anchor is not None:
            src = f"the checkpoint file {self._checkpoints.anchor}"
            try:
                note, _ = self._checkpoints.anchor_note()
                if note is not None:
                    targets.append((own_checkpoint(note, verifier, src), src))
            except (AnchorDamaged, TamperError) as exc:
                anchor_problem = exc.message
        for source, note in extra:
            targets.append((own_checkpoint(note, verifier, source), source))
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
        async with self._db.engine.connect() as conn:
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
        in_flight: deque[tuple[asyncio.Future[Chunk], Callable[[], Awaitable[Chunk]]]] = deque()

        def start_pool() -> ProcessPoolExecutor:
            # Imported here, for a large log only: a short verify starts without them.
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # fork: the workers only run check_run (json, hashlib, sqlite3), and unlike
            # spawn it does not re-import the caller's __main__ module.
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            return ProcessPoolExecutor(workers, mp_context=mp.get_context(method))

        async def take(chunk: Chunk, again: Callable[[], Awaitable[Chunk]]) -> None:
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

                    async def again(lo: int = lo, hi: int = hi) -> Chunk:
                        assert pool is not None
                        return await loop.run_in_executor(pool, _check_stored, path, lo, hi, True)

                    in_flight.append(
                        (loop.run_in_executor(pool, _check_stored, path, lo, hi), again)
                    )
                    await drain(workers)
                await drain(0)
                return
            async for rows in self._verify_rows(below):

                async def again_here(rows: list[Row] = rows) -> Chunk:
                    return check_rows(rows, detail=True)

                if pool is None and len(rows) < VERIFY_CHUNK:
                    await take(check_rows(rows), again_here)  # a small log: no processes
                    continue
                if pool is None:
                    pool = start_pool()
                in_flight.append((loop.run_in_executor(pool, check_rows, rows), again_here))
                await drain(workers)
            await drain(0)
        finally:
            for fut, _ in in_flight:
                fut.cancel()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _verify_columns(self) -> list[sa.ColumnElement[Any]]:
        """The search columns as verification reads them: ``at`` as the text
        ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC (on SQLite, exactly the text it holds and
        compares when a search filters on time), the others as stored."""
        c = audit_entries.c
        if self._db.sqlite:
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
            async with self._db.engine.connect() as conn:
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
        async with self._db.engine.connect() as conn:
            return [int(v) for v in (await conn.execute(q)).scalars()]

    def _sqlite_file(self) -> str | None:
        """The SQLite database file, when worker processes can open it themselves."""
        if not self._db.sqlite:
            return None
        name = self._db.engine.url.database
        if not name or name == ":memory:" or name.startswith("file:"):
            return None
        return name


_STORED_ROWS = (
    "SELECT seq, body, leaf_hash, at, action, actor, org, pupil, person FROM audit_entries"
    " WHERE seq >= ? AND seq < ? ORDER BY seq"
)


def _check_stored(path: str, lo: int, hi: int, detail: bool = False) -> Chunk:
    """Read rows ``lo <= seq < hi`` from the SQLite file at ``path`` and check them (in a
    worker process, over its own read-only connection; ``at`` is read as the text the
    database holds)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute("PRAGMA query_only = ON")
        rows = conn.execute(_STORED_ROWS, (lo, hi)).fetchall()
    finally:
        conn.close()
    return check_rows(rows, detail)
