"""What the parts of the store share: new ids, the pupil and tombstone records, and sealed-field
access for one operation (:class:`_Sealed`, which seals through
:func:`transfer.store.keyring.sealed_field`, the one place a field is sealed).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.records import Destination, PupilRecord, TombstoneRecord
from transfer.errors import InputError, NotFoundError
from transfer.store.keyring import KeyRing, open_field, sealed_field
from transfer.store.tables import Pupil, SealedField, Tombstone

log = logging.getLogger("handover.store")

# Sealed fields per record table.
CONCERN_FIELDS: Final = ("account", "location", "people_involved")
MARK_FIELDS: Final = ("description",)
TRIAGE_FIELDS: Final = ("reason",)
ACTION_FIELDS: Final = ("text",)
CONTACT_FIELDS: Final = ("agency", "outcome")
DOCUMENT_FIELDS: Final = ("filename",)
EVENT_FIELDS: Final = ("summary",)


def _new_id() -> str:
    return str(uuid.uuid4())


def _submission_id(record_id: str | None) -> str:
    """The id of a new record: a form's own (so that a form sent twice is stored once), or
    a new one."""
    if record_id is None:
        return _new_id()
    try:
        return str(uuid.UUID(record_id))
    except ValueError:
        raise InputError(
            "this form's own reference is not valid; reload the page and try again"
        ) from None


def _pupil_record(p: Pupil) -> PupilRecord:
    destination = None
    if p.destination_kind is not None:
        destination = Destination(
            kind=p.destination_kind,
            urn=p.destination_urn,
            laestab=p.destination_laestab,
            name=p.destination_name,
        )
    return PupilRecord(
        id=p.id,
        org_id=p.org_id,
        upn=p.upn,
        surname=p.surname,
        forename=p.forename,
        dob=p.dob,
        sex=p.sex,
        year_group=p.year_group,
        on_roll_from=p.on_roll_from,
        leaving_date=p.leaving_date,
        destination=destination,
        created_at=p.created_at,
        updated_at=p.updated_at,
        erased_at=p.erased_at,
    )


def _set_destination(p: Pupil, d: Destination | None) -> None:
    p.destination_kind = d.kind if d else None
    p.destination_urn = d.urn if d else None
    p.destination_laestab = d.laestab if d else None
    p.destination_name = d.name if d else None


class _Sealed:
    """Sealed-field access for one operation."""

    def __init__(self, session: AsyncSession, ring: KeyRing) -> None:
        self.session = session
        self.ring = ring

    async def put(
        self, table: str, record_id: str, pupil_ids: Iterable[str], fields: dict[str, str]
    ) -> None:
        for pupil_id in pupil_ids:
            key = await self.ring.pupil_key(self.session, pupil_id)
            for name, value in fields.items():
                self.session.add(sealed_field(key, table, name, record_id, pupil_id, value))

    async def for_pupil(self, pupil_id: str) -> _PupilFields:
        """Every sealed field held for one pupil, still sealed; opened only when asked for."""
        # Plain Core rows, not ORM objects: a long chronology has thousands.
        conn = await self.session.connection()
        result = await conn.execute(
            select(
                SealedField.record_table,
                SealedField.record_id,
                SealedField.field,
                SealedField.sealed,
            ).where(SealedField.pupil_id == pupil_id)
        )
        rows: list[tuple[str, str, str, bytes]] = [tuple(r) for r in result]  # type: ignore[misc]
        key = await self.ring.pupil_key(self.session, pupil_id) if rows else b""
        return _PupilFields(pupil_id, key, rows)

    async def one(self, table: str, record_id: str, pupil_id: str) -> dict[str, str]:
        rows = (
            await self.session.scalars(
                select(SealedField).where(
                    SealedField.record_table == table,
                    SealedField.record_id == record_id,
                    SealedField.pupil_id == pupil_id,
                )
            )
        ).all()
        key = await self.ring.pupil_key(self.session, pupil_id)
        return {
            r.field: open_field(key, table, r.field, record_id, pupil_id, r.sealed) for r in rows
        }


class _PupilFields:
    """One pupil's sealed fields, unsealed one record at a time on demand."""

    def __init__(
        self, pupil_id: str, key: bytes, rows: Iterable[tuple[str, str, str, bytes]]
    ) -> None:
        self.pupil_id = pupil_id
        self.key = key
        self.rows: dict[tuple[str, str], list[tuple[str, bytes]]] = defaultdict(list)
        for table, record_id, name, sealed in rows:
            self.rows[(table, record_id)].append((name, sealed))

    def __getitem__(self, where: tuple[str, str]) -> dict[str, str]:
        table, record_id = where
        rows = self.rows.get(where)
        if not rows:
            raise NotFoundError(f"the sealed content of a {table} record is missing")
        return {
            name: open_field(self.key, table, name, record_id, self.pupil_id, sealed)
            for name, sealed in rows
        }


def _tombstone_record(t: Tombstone) -> TombstoneRecord:
    return TombstoneRecord(
        id=t.id,
        org_id=t.org_id,
        pupil_id=t.pupil_id,
        erased_at=t.erased_at,
        policy=t.policy,
        erased_by=t.erased_by,
        erased=dict(t.erased),
    )
