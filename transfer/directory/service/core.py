"""The directory's state, its merged view (cached while nothing stored changes) and the
contract the other services read it through.

:class:`DirectoryCore` is the base of the parts that
:class:`transfer.directory.service.Directory` joins."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Integer, Row, String, cast, func, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from schemas.directory import DirectoryEntry, Revocation
from transfer.directory.document import (
    DEFAULT_GRACE,
    DirectoryView,
    entry_from_keyset,
    revocations_from_keyset,
)
from transfer.directory.service.records import (
    _OWN_KIND,
    ListedEntry,
    Source,
    UnknownOrganisationError,
    UnknownSignerError,
    _OrgRow,
)
from transfer.directory.tables import (
    SOURCE_AUTHORITY,
    SOURCE_LOCAL,
    DocumentRow,
    EntryRow,
    RevocationRow,
)
from transfer.errors import (
    InputError,
)
from transfer.store.service import Store
from transfer.store.tables import Organisation
from transfer.store.types import UTCDateTime

_document = DocumentRow.__table__
_entries = EntryRow.__table__
_orgs = Organisation.__table__
_local = _entries.c.source == SOURCE_LOCAL

#: What tells a directory view whether anything stored changed (one row, ``id`` NULL).
_STAMP = select(
    cast(null(), String).label("id"),
    cast(null(), String).label("name"),
    cast(null(), String).label("kind"),
    cast(null(), String).label("urn"),
    cast(null(), String).label("laestab"),
    select(_document.c.serial).order_by(_document.c.id).limit(1).scalar_subquery().label("serial"),
    select(_document.c.sha256).order_by(_document.c.id).limit(1).scalar_subquery().label("sha256"),
    select(func.count()).select_from(_entries).where(_local).scalar_subquery().label("local_count"),
    select(func.max(_entries.c.added_at)).where(_local).scalar_subquery().label("local_added"),
)
#: The same, and a row for each of the node's organisations as its own entry shows it.
_STAMP_AND_ORGS = union_all(
    _STAMP,
    select(
        _orgs.c.id,
        _orgs.c.name,
        _orgs.c.kind,
        _orgs.c.urn,
        _orgs.c.laestab,
        cast(null(), BigInteger),
        cast(null(), String),
        cast(null(), Integer),
        cast(null(), UTCDateTime()),
    ),
)


class DirectoryCore:
    """The state, the merged view and the contract the parts of :class:`Directory` share."""

    def __init__(
        self,
        store: Store,
        *,
        keys: KeyFiles | None = None,
        base_url: str | None = None,
        grace: timedelta = DEFAULT_GRACE,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._base_url = base_url.rstrip("/") if base_url else None
        self._grace = grace
        self._clock = clock or store.now
        self._db_token: tuple[object, ...] | None = None
        self._db_entries: tuple[list[DirectoryEntry], list[DirectoryEntry], list[Revocation]] = (
            [],
            [],
            [],
        )
        self._own_token: tuple[object, ...] | None = None
        self._own: tuple[list[DirectoryEntry], list[Revocation]] = ([], [])
        # The merged view, kept while neither part changed (issue 16: it was rebuilt for
        # every package). ``_generation`` moves on at every change made through this
        # object, so its own writes apply at once even within one clock tick.
        self._generation = 0
        self._view: tuple[tuple[object, ...], DirectoryView] | None = None

    # ------------------------------------------------------------- the view

    async def _load_db(self, s: AsyncSession, stamp: Row[Any]) -> None:
        # ``stamp`` (from :data:`_STAMP`) tells whether anything stored changed: the held
        # document's serial and hash (a new document, with its revocations) and the
        # hand-added entries.
        token: tuple[object, ...] = (
            None if stamp.serial is None else (stamp.serial, stamp.sha256),
            stamp.local_count,
            stamp.local_added,
            self._generation,
        )
        if token == self._db_token:
            return
        authority: list[DirectoryEntry] = []
        hand: list[DirectoryEntry] = []
        for row in (await s.scalars(select(EntryRow).order_by(EntryRow.org_id))).all():
            entry = DirectoryEntry.model_validate_json(row.entry)
            (authority if row.source == SOURCE_AUTHORITY else hand).append(entry)
        revocations = [
            Revocation(org_id=r.org_id, key_id=r.key_id, revoked_at=r.revoked_at, reason=r.reason)
            for r in (await s.scalars(select(RevocationRow))).all()
        ]
        self._db_entries = (authority, hand, revocations)
        self._db_token = token

    def _own_stamp(self) -> tuple[object, ...]:
        """What changes whenever a key file of the node's own organisations does: every file
        in the key files' directory, with its modification time, size and inode (a key set
        is replaced, not edited in place). One ``scandir`` and a ``stat`` per file."""
        if self._keys is None:
            return ()
        stamp: list[tuple[str, int, int, int]] = []
        try:
            with os.scandir(self._keys.directory) as found:
                for item in found:
                    try:
                        st = item.stat()
                    except OSError:
                        continue
                    stamp.append((item.name, st.st_mtime_ns, st.st_size, st.st_ino))
        except (FileNotFoundError, NotADirectoryError):
            return ()
        stamp.sort()
        return tuple(stamp)

    def _load_own(self, records: dict[str, _OrgRow]) -> None:
        if self._keys is None:
            return
        token = (self._own_stamp(), tuple(records.values()), self._base_url)
        if token == self._own_token:
            return
        orgs = self._keys.list_orgs()
        entries: list[DirectoryEntry] = []
        revocations: list[Revocation] = []
        for org in orgs:
            keyset: KeySet = self._keys.load(org)
            rec = records.get(org)
            entries.append(
                entry_from_keyset(
                    keyset,
                    name=rec.name if rec is not None else org,
                    kind=_OWN_KIND.get(rec.kind, "other") if rec is not None else "other",
                    urn=rec.urn if rec is not None else None,
                    laestab=rec.laestab if rec is not None else None,
                    endpoint=self._base_url,
                )
            )
            revocations.extend(revocations_from_keyset(keyset))
        self._own = (entries, revocations)
        self._own_token = token

    async def view(self) -> DirectoryView:
        """A snapshot of the merged view (own organisations, the authority's, local ones)."""
        async with self._store.sessions() as s:
            # One statement, through the connection (not the ORM): this runs for every
            # signed request and every receipt (issue 16).
            conn = await s.connection()
            rows = (await conn.execute(_STAMP_AND_ORGS if self._keys is not None else _STAMP)).all()
            stamp = next(r for r in rows if r.id is None)
            await self._load_db(s, stamp)
        records = {
            r.id: _OrgRow(r.id, r.name, r.kind, r.urn, r.laestab)
            for r in sorted((r for r in rows if r.id is not None), key=lambda r: str(r.id))
        }
        self._load_own(records)
        token = (self._db_token, self._own_token)
        if self._view is not None and self._view[0] == token:
            return self._view[1]  # nothing stored changed since it was built
        authority, hand, revoked = self._db_entries
        own, own_revoked = self._own
        view = DirectoryView([*own, *authority, *hand], [*revoked, *own_revoked])
        self._view = (token, view)
        return view

    def _changed(self) -> None:
        """A write through this object: the next view reads everything again."""
        self._generation += 1
        self._view = None

    # ------------------------------------------------------- the contract

    async def entries(self) -> list[DirectoryEntry]:
        """Every organisation in the view, by id."""
        return (await self.view()).entries()

    async def entry(self, org_id: str) -> DirectoryEntry:
        found = (await self.view()).entry(org_id)
        if found is None:
            raise UnknownOrganisationError(
                f"organisation {org_id[:64]!r} is not in this node's directory; import a "
                "current directory or add its entry by hand"
            )
        return found

    async def entry_for_key(self, key_id: str) -> DirectoryEntry:
        try:
            found = (await self.view()).entry_for_key(key_id)
        except InputError:
            found = None
        if found is None:
            raise UnknownSignerError(
                f"signing key {key_id[:20]!r} belongs to no organisation in this node's directory"
            )
        return found

    async def signing_public_key(self, key_id: str, at: datetime) -> bytes:
        """The 32-byte Ed25519 key ``key_id`` if it stands for a signature dated ``at``.

        Raises :class:`UnknownSignerError`, or a :class:`keys.keyset.KeyPolicyError`
        (:class:`~keys.keyset.KeyRevokedError` naming the organisation, key and time).
        """
        return (await self.signer(key_id, at))[1]

    async def signer(self, key_id: str, at: datetime) -> tuple[DirectoryEntry, bytes]:
        """The organisation whose signing key ``key_id`` is, and the key if it stands for a
        signature dated ``at`` (:meth:`entry_for_key` and :meth:`signing_public_key` from
        one look at the directory). Raises as :meth:`signing_public_key` does."""
        view = await self.view()
        try:
            entry = view.entry_for_key(key_id)
        except InputError:
            entry = None
        if entry is None:
            raise UnknownSignerError(
                f"signing key {key_id[:20]!r} belongs to no organisation in this node's directory"
            )
        return entry, view.check_key(entry, key_id, at).key

    async def sender_keys(self) -> DirectoryView:
        """A :class:`transfer.package.layout.SenderKeys` over a snapshot of the view."""
        return await self.view()

    async def listing(self) -> list[ListedEntry]:
        """Every entry with its source, including those hidden by a higher-precedence one."""
        view = await self.view()
        authority, hand, _ = self._db_entries
        own, _ = self._own
        out: list[ListedEntry] = []
        groups: tuple[tuple[Source, list[DirectoryEntry]], ...] = (
            ("own", own),
            ("authority", authority),
            ("local", hand),
        )
        for source, group in groups:
            for e in group:
                shown = view.entry(e.org_id)
                out.append(ListedEntry(entry=e, source=source, shadowed=shown is not e))
        out.sort(key=lambda le: (le.entry.org_id, le.shadowed))
        return out

    async def revocations(self) -> list[Revocation]:
        return (await self.view()).revocations()
