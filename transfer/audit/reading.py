"""Reading the audit log: searching it (``audit show``) and reading every row in order.

Searches filter on the columns stored beside each entry (``transfer.audit.entry.COLUMNS``);
every entry found is checked against them, so a row edited to match a search is refused
(:class:`~transfer.audit.verifier.TamperError`), never shown as if it matched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from transfer.audit.entry import COLUMNS, Columns, Entry, EntryFormatError, decode
from transfer.audit.logdb import LogDB
from transfer.audit.tables import audit_entries
from transfer.audit.verifier import TamperError, column_changed, first_difference

#: Rows read per query by :meth:`Reader.iter_chunks`.
READ_CHUNK = 20_000


@dataclass(frozen=True)
class ShownEntry:
    seq: int
    entry: Entry


def _stored_columns(row: Any) -> Columns:
    """A row's search columns (``at`` ... ``person``), as :data:`Columns`."""
    return (row.at, row.action, row.actor, row.org, row.pupil, row.person)


class Reader:
    """Searches and reads the stored entries."""

    def __init__(self, db: LogDB) -> None:
        self._db = db

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
        async with self._db.engine.connect() as conn:
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
        async with self._db.engine.connect() as conn:
            for r in await conn.execute(q):
                try:
                    entry = decode(bytes(r.body))
                except EntryFormatError:
                    raise TamperError(
                        "changed", f"entry #{r.seq} is not a valid entry: it was changed", seq=r.seq
                    ) from None
                column = first_difference(entry.columns(), _stored_columns(r))
                if column is not None:
                    raise column_changed(int(r.seq), column)
                out.append(ShownEntry(int(r.seq), entry))
        return out

    async def iter_chunks(
        self, chunk: int | None = None, *, below: int | None = None
    ) -> AsyncIterator[list[tuple[int, bytes, bytes]]]:
        """Every stored row ``(seq, body, leaf_hash)`` in sequence order, a chunk at a time.

        Rows with any ``seq`` (even negative ones) are included; ``below`` stops
        before that sequence number.
        """
        chunk = chunk or READ_CHUNK
        last: int | None = None
        c = audit_entries.c
        while True:
            q = sa.select(c.seq, c.body, c.leaf_hash).order_by(c.seq).limit(chunk)
            if last is not None:
                q = q.where(c.seq > last)
            if below is not None:
                q = q.where(c.seq < below)
            async with self._db.engine.connect() as conn:
                rows = (await conn.execute(q)).all()
            if not rows:
                return
            yield [(int(s), bytes(b), bytes(h)) for s, b, h in rows]
            last = int(rows[-1][0])

    async def iter_bodies(self) -> AsyncIterator[tuple[int, bytes, bytes]]:
        """Every stored row ``(seq, body, leaf_hash)`` in sequence order."""
        async for rows in self.iter_chunks():
            for row in rows:
                yield row
