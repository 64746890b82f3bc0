"""The key hierarchy: KEK -> organisation key -> pupil data key -> sealed fields.

A :class:`KeyRing` unseals keys on demand and caches them for its own life,
which is one store operation (one request) at most: the store makes a new one
per call and drops it at the end.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keys import aead
from transfer.errors import IntegrityError, NotFoundError, PolicyError
from transfer.store.tables import Organisation, Pupil, PupilKey, SealedField


class KeyDestroyed(PolicyError):
    """The pupil's data key was destroyed (erased under a retention policy or by a DSL)."""


def org_key_aad(org_id: str) -> bytes:
    return f"handover/org-key/v1|{org_id}".encode()


def pupil_key_aad(org_id: str, pupil_id: str) -> bytes:
    return f"handover/pupil-key/v1|{org_id}|{pupil_id}".encode()


def field_aad(table: str, field: str, record_id: str, pupil_id: str) -> bytes:
    return f"handover/field/v1|{table}|{field}|{record_id}|{pupil_id}".encode()


def sealed_field(
    key: bytes, table: str, field: str, record_id: str, pupil_id: str, value: str
) -> SealedField:
    """The row holding ``value`` sealed under the pupil's data ``key``, bound (as associated
    data) to its table, field, record and pupil, so a sealed value moved to another place
    does not open. The one place a field is sealed (the store, imports and referrals)."""
    sealed = aead.seal(key, value.encode(), field_aad(table, field, record_id, pupil_id))
    return SealedField(
        record_table=table, record_id=record_id, pupil_id=pupil_id, field=field, sealed=sealed
    )


def open_field(
    key: bytes, table: str, field: str, record_id: str, pupil_id: str, sealed: bytes
) -> str:
    """The text of a sealed field (:func:`sealed_field`); IntegrityError if it was altered
    or moved."""
    return aead.unseal(key, sealed, field_aad(table, field, record_id, pupil_id)).decode()


class KeyRing:
    """Unsealed keys for one operation."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != aead.KEY_SIZE:
            raise ValueError("the key-encryption key must be 32 bytes")
        self._kek = kek
        self._orgs: dict[str, bytes] = {}
        self._pupils: dict[str, bytes] = {}

    def seal_org_key(self, org_id: str, key: bytes) -> bytes:
        self._orgs[org_id] = key
        return aead.seal(self._kek, key, org_key_aad(org_id))

    async def org_key(self, session: AsyncSession, org_id: str) -> bytes:
        key = self._orgs.get(org_id)
        if key is None:
            sealed = await session.scalar(
                select(Organisation.sealed_key).where(Organisation.id == org_id)
            )
            if sealed is None:
                raise NotFoundError(f"organisation {org_id!r} is not on this node")
            try:
                key = aead.unseal(self._kek, sealed, org_key_aad(org_id))
            except IntegrityError:
                raise IntegrityError(
                    f"the key of organisation {org_id!r} did not open: "
                    "the key-encryption key is wrong or the database was altered"
                ) from None
            self._orgs[org_id] = key
        return key

    async def new_pupil_key(self, session: AsyncSession, org_id: str, pupil_id: str) -> bytes:
        """A fresh data key for a new pupil; returns it sealed under the organisation key."""
        key = aead.new_key()
        self._pupils[pupil_id] = key
        return aead.seal(await self.org_key(session, org_id), key, pupil_key_aad(org_id, pupil_id))

    async def pupil_key(self, session: AsyncSession, pupil_id: str) -> bytes:
        key = self._pupils.get(pupil_id)
        if key is not None:
            return key
        row = (
            await session.execute(
                select(Pupil.org_id, PupilKey.sealed_key)
                .join(PupilKey, PupilKey.pupil_id == Pupil.id)
                .where(Pupil.id == pupil_id)
            )
        ).one_or_none()
        if row is None:
            raise NotFoundError("no such pupil")
        org_id, sealed = row
        if sealed is None:
            raise KeyDestroyed("this pupil's records have been erased")
        org_key = await self.org_key(session, org_id)
        key = aead.unseal(org_key, sealed, pupil_key_aad(org_id, pupil_id))
        self._pupils[pupil_id] = key
        return key

    async def load_pupil_keys(self, session: AsyncSession, pupil_ids: Iterable[str]) -> None:
        """Open many pupils' keys with one query (then :meth:`pupil_key` finds them)."""
        wanted = [p for p in dict.fromkeys(pupil_ids) if p not in self._pupils]
        for start in range(0, len(wanted), 500):
            rows = (
                await session.execute(
                    select(Pupil.id, Pupil.org_id, PupilKey.sealed_key)
                    .join(PupilKey, PupilKey.pupil_id == Pupil.id)
                    .where(Pupil.id.in_(wanted[start : start + 500]))
                )
            ).all()
            for pupil_id, org_id, sealed in rows:
                if sealed is None:
                    continue
                org_key = await self.org_key(session, org_id)
                self._pupils[pupil_id] = aead.unseal(
                    org_key, sealed, pupil_key_aad(org_id, pupil_id)
                )

    def forget(self, pupil_id: str) -> None:
        self._pupils.pop(pupil_id, None)
