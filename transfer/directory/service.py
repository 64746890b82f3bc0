"""The node's directory: the pinned authority, the imported document, local entries.

:class:`Directory` answers "who is this organisation, where is its node, what
are its keys" and "whose key is this, and does it stand for a signature made
then". Its view merges, in this order of precedence:

1. the node's own organisations, from its key files (endpoint: ``node.base_url``);
2. the entries of the directory document signed by the pinned authority;
3. entries added by hand after their fingerprint was confirmed.

Revocations from the document and from the node's own key sets always apply.
Every import, pin and local addition is audited, refused ones too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from keys import minisign
from keys.fingerprint import fingerprints_match, normalise
from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from schemas.directory import AuditKey, DirectoryEntry, OrgKind, Revocation
from schemas.manifest import canonical_json
from transfer.directory.document import (
    DEFAULT_GRACE,
    DirectoryImportError,
    DirectoryView,
    authority_fingerprint,
    entry_from_keyset,
    merge_revocations,
    revocations_from_keyset,
    verify_document,
)
from transfer.directory.tables import (
    SOURCE_AUTHORITY,
    SOURCE_LOCAL,
    AuthorityRow,
    DocumentRow,
    EntryRow,
    RevocationRow,
)
from transfer.errors import (
    AuthenticationError,
    ConflictError,
    HandoverError,
    InputError,
    NotFoundError,
    PolicyError,
)
from transfer.store.service import Store
from transfer.store.tables import Organisation

__all__ = [
    "Directory",
    "DirectoryImported",
    "FingerprintMismatchError",
    "HeldDocument",
    "ListedEntry",
    "NoAuthorityError",
    "PinnedAuthority",
    "UnknownOrganisationError",
    "UnknownSignerError",
]

Source = Literal["own", "authority", "local"]


class UnknownOrganisationError(NotFoundError):
    """The directory lists no organisation with that id."""


class UnknownSignerError(AuthenticationError):
    """No organisation in the directory has that signing key."""


class NoAuthorityError(PolicyError, DirectoryImportError):
    """No directory authority key is pinned on this node yet."""

    reason = "no-authority"


class FingerprintMismatchError(PolicyError):
    """The fingerprint confirmed by the operator is not the fingerprint of the keys given."""


@dataclass(frozen=True)
class PinnedAuthority:
    public_key: minisign.PublicKey
    fingerprint: str
    name: str | None
    pinned_at: datetime


@dataclass(frozen=True)
class HeldDocument:
    serial: int
    authority_name: str
    issued_at: datetime
    next_update: datetime
    imported_at: datetime
    source: str
    sha256: str
    organisations: int
    revocations: int


@dataclass(frozen=True)
class DirectoryImported:
    serial: int
    organisations: int
    revocations: int
    #: True when the node already held this very document.
    unchanged: bool
    next_update: datetime


@dataclass(frozen=True)
class ListedEntry:
    entry: DirectoryEntry
    source: Source
    #: True when an entry of higher precedence for the same organisation hides it.
    shadowed: bool


class _OrgRow(NamedTuple):
    """An organisation's row, as far as its own directory entry shows it."""

    id: str
    name: str
    kind: str
    urn: str | None
    laestab: str | None


_OWN_KIND: dict[str, OrgKind] = {
    "school": "school",
    "social_care": "social_care",
    "lado": "lado",
    "police": "police",
    "other_agency": "other",
}


def _safe_source(source: str) -> str:
    """A URL without credentials or query (they may hold a secret), or a file path."""
    if "://" not in source:
        return source[:500]
    parts = urlsplit(source)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))[:500]


def _entry_text(entry: DirectoryEntry) -> str:
    return canonical_json(entry.model_dump(mode="json")).decode("utf-8")


class Directory:
    """The directory view of one node. Uses the store's engine and audit sink."""

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

    async def _load_db(self, s: AsyncSession) -> None:
        # One statement tells whether anything stored changed: the held document's serial
        # and hash (a new document, with its revocations) and the hand-added entries.
        local = EntryRow.source == SOURCE_LOCAL
        held = (
            await s.execute(
                select(
                    select(DocumentRow.serial).order_by(DocumentRow.id).limit(1).scalar_subquery(),
                    select(DocumentRow.sha256).order_by(DocumentRow.id).limit(1).scalar_subquery(),
                    select(func.count()).where(local).scalar_subquery(),
                    select(func.max(EntryRow.added_at)).where(local).scalar_subquery(),
                )
            )
        ).one()
        token: tuple[object, ...] = (
            None if held[0] is None else (held[0], held[1]),
            held[2],
            held[3],
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

    async def _own_records(self, s: AsyncSession) -> dict[str, _OrgRow]:
        """The node's organisations as the own entries show them (in the view's session)."""
        if self._keys is None:
            return {}
        rows = await s.execute(
            select(
                Organisation.id,
                Organisation.name,
                Organisation.kind,
                Organisation.urn,
                Organisation.laestab,
            ).order_by(Organisation.id)
        )
        return {r[0]: _OrgRow(*r) for r in rows}

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
            await self._load_db(s)
            records = await self._own_records(s)
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
        view = await self.view()
        try:
            entry = view.entry_for_key(key_id)
        except InputError:
            entry = None
        if entry is None:
            raise UnknownSignerError(
                f"signing key {key_id[:20]!r} belongs to no organisation in this node's directory"
            )
        return view.check_key(entry, key_id, at).key

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

    # -------------------------------------------------------- own entries

    async def own_entry(
        self,
        org_id: str,
        *,
        endpoint: str | None = None,
        email: str | None = None,
        audit_key: AuditKey | None = None,
    ) -> DirectoryEntry:
        """The entry of one of this node's organisations, to give to the authority.

        ``audit_key``: the node's audit-log verifier key (``export-entry`` passes it), so
        counterparts can keep the checkpoints this organisation's receipts carry.
        """
        if self._keys is None or not self._keys.exists(org_id):
            raise UnknownOrganisationError(f"organisation {org_id[:64]!r} has no keys on this node")
        keyset = self._keys.load(org_id)
        try:
            rec = await self._store.get_organisation(org_id)
        except NotFoundError:
            raise UnknownOrganisationError(
                f"organisation {org_id[:64]!r} has keys but is not set up on this node"
            ) from None
        return entry_from_keyset(
            keyset,
            name=rec.name,
            kind=_OWN_KIND.get(rec.kind, "other"),
            urn=rec.urn,
            laestab=rec.laestab,
            endpoint=endpoint or self._base_url,
            email=email,
            audit_key=audit_key,
        )

    async def audit_vkey_for(self, org_id: str) -> str | None:
        """The audit-log verifier key (C2SP vkey) the directory gives for ``org_id``'s node.

        None when the organisation is unknown or its entry publishes no key (the node's
        own organisations share its own log, so they carry none either).
        """
        found = (await self.view()).entry(org_id)
        if found is None or found.audit_key is None:
            return None
        return found.audit_key.vkey

    # ---------------------------------------------------------- authority

    async def authority(self) -> PinnedAuthority | None:
        async with self._store.sessions() as s:
            row = await s.get(AuthorityRow, 1)
        if row is None:
            return None
        public = minisign.PublicKey.from_base64(row.public_key)
        return PinnedAuthority(
            public_key=public,
            fingerprint=authority_fingerprint(public),
            name=row.name,
            pinned_at=row.pinned_at,
        )

    async def pin_authority(
        self,
        public: minisign.PublicKey,
        *,
        fingerprint: str,
        actor: str | None,
        replace: bool = False,
    ) -> PinnedAuthority:
        """Pin the authority's key, after the operator confirmed its fingerprint."""
        actual = authority_fingerprint(public)
        key_id = public.key_id_hex
        try:
            matches = fingerprints_match(fingerprint, actual)
        except InputError:
            await self._store.record_event(
                "directory.pin",
                actor,
                None,
                {},
                outcome="refused",
                reason="malformed fingerprint",
                key_id=key_id,
                fingerprint=actual,
            )
            raise
        if not matches:
            await self._store.record_event(
                "directory.pin",
                actor,
                None,
                {},
                outcome="refused",
                reason="fingerprint mismatch",
                key_id=key_id,
                fingerprint=actual,
            )
            raise FingerprintMismatchError(
                f"the fingerprint given does not match the authority key's fingerprint "
                f"({actual}); check it with the authority again, by another channel"
            )
        now = self._clock()
        other_key: str | None = None
        async with self._store.sessions() as s, s.begin():
            row = await s.get(AuthorityRow, 1, with_for_update=True)
            if row is None:
                s.add(
                    AuthorityRow(
                        id=1,
                        public_key=public.to_base64(),
                        key_id=public.key_id_hex,
                        name=None,
                        pinned_at=now,
                        pinned_by=actor,
                    )
                )
            elif not hmac.compare_digest(row.public_key, public.to_base64()):
                if replace:
                    row.public_key = public.to_base64()
                    row.key_id = public.key_id_hex
                    row.name = None
                    row.pinned_at = now
                    row.pinned_by = actor
                else:
                    other_key = row.key_id
        self._changed()
        if other_key is not None:
            await self._store.record_event(
                "directory.pin",
                actor,
                None,
                {},
                outcome="refused",
                reason="another key is pinned",
                key_id=key_id,
                fingerprint=actual,
            )
            raise ConflictError(
                f"another authority key ({other_key}) is pinned; to trust a new authority "
                "key instead, pass --replace"
            )
        await self._store.record_event(
            "directory.pin", actor, None, {}, key_id=key_id, fingerprint=actual
        )
        pinned = await self.authority()
        assert pinned is not None
        return pinned

    # ------------------------------------------------------------- import

    async def held(self) -> HeldDocument | None:
        """The directory document this node holds, if any."""
        async with self._store.sessions() as s:
            row = await s.get(DocumentRow, 1)
            if row is None:
                return None
            counts = (
                await s.execute(select(func.count()).where(EntryRow.source == SOURCE_AUTHORITY))
            ).scalar_one()
            revs = (await s.execute(select(func.count()).select_from(RevocationRow))).scalar_one()
            authority = await s.get(AuthorityRow, 1)
        return HeldDocument(
            serial=row.serial,
            authority_name=(authority.name if authority and authority.name else "?"),
            issued_at=row.issued_at,
            next_update=row.next_update,
            imported_at=row.imported_at,
            source=row.source,
            sha256=row.sha256,
            organisations=int(counts),
            revocations=int(revs),
        )

    async def import_document(
        self, data: bytes, signature: bytes | str, *, source: str, actor: str | None
    ) -> DirectoryImported:
        """Check and import a signed directory; refuse (audited) if it fails any check."""
        where = _safe_source(source)
        digest = hashlib.sha256(data).hexdigest()
        now = self._clock()
        try:
            result = await self._import(data, signature, where, digest, now)
        except HandoverError as exc:
            reason = exc.reason if isinstance(exc, DirectoryImportError) else exc.slug
            await self._store.record_event(
                "directory.import",
                actor,
                None,
                {},
                outcome="refused",
                reason=reason,
                source=where,
                sha256=digest,
            )
            raise
        await self._store.record_event(
            "directory.import",
            actor,
            None,
            {"directory_serial": str(result.serial)},
            source=where,
            sha256=digest,
            serial=result.serial,
            organisations=result.organisations,
            revocations=result.revocations,
            unchanged=result.unchanged,
        )
        return result

    async def _import(
        self, data: bytes, signature: bytes | str, where: str, digest: str, now: datetime
    ) -> DirectoryImported:
        async with self._store.sessions() as s, s.begin():
            authority = await s.get(AuthorityRow, 1, with_for_update=True)
            if authority is None:
                raise NoAuthorityError(
                    "no directory authority is pinned on this node; pin its key first with "
                    "'handover directory pin --authority-key FILE --fingerprint FP'"
                )
            pinned = minisign.PublicKey.from_base64(authority.public_key)
            held = await s.get(DocumentRow, 1, with_for_update=True)
            same_authority = held is not None and held.authority_key_id == pinned.key_id_hex
            verified = verify_document(
                data,
                signature,
                authority=pinned,
                now=now,
                held_serial=held.serial if held is not None and same_authority else None,
                held_bytes=held.body if held is not None and same_authority else None,
                grace=self._grace,
            )
            doc = verified.document
            if verified.unchanged:
                return DirectoryImported(
                    serial=doc.serial,
                    organisations=len(doc.organisations),
                    revocations=len(doc.revocations),
                    unchanged=True,
                    next_update=doc.next_update,
                )
            sig_text = signature.decode("utf-8") if isinstance(signature, bytes) else signature
            if held is None:
                held = DocumentRow(id=1)
                s.add(held)
            held.serial = doc.serial
            held.authority_key_id = pinned.key_id_hex
            held.body = data
            held.signature = sig_text
            held.sha256 = digest
            held.issued_at = doc.issued_at
            held.next_update = doc.next_update
            held.imported_at = now
            held.source = where
            authority.name = doc.authority.name
            await s.execute(delete(EntryRow).where(EntryRow.source == SOURCE_AUTHORITY))
            s.add_all(
                EntryRow(
                    source=SOURCE_AUTHORITY,
                    org_id=e.org_id,
                    entry=_entry_text(e),
                    fingerprint=e.fingerprint,
                    added_at=now,
                    added_by=None,
                )
                for e in doc.organisations
            )
            existing = {
                (r.org_id, r.key_id): r for r in (await s.scalars(select(RevocationRow))).all()
            }
            for r in merge_revocations(doc.revocations):
                old = existing.get((r.org_id, r.key_id))
                if old is None:
                    s.add(
                        RevocationRow(
                            org_id=r.org_id,
                            key_id=r.key_id,
                            revoked_at=r.revoked_at,
                            reason=r.reason,
                            serial=doc.serial,
                        )
                    )
                elif r.revoked_at < old.revoked_at:
                    old.revoked_at = r.revoked_at
                    old.reason = r.reason
                    old.serial = doc.serial
        self._changed()
        return DirectoryImported(
            serial=doc.serial,
            organisations=len(doc.organisations),
            revocations=len(doc.revocations),
            unchanged=False,
            next_update=doc.next_update,
        )

    # -------------------------------------------------------- local entries

    async def add_local(
        self, entry: DirectoryEntry, *, fingerprint: str, actor: str | None
    ) -> DirectoryEntry:
        """Add (or update) an entry by hand, once the operator confirmed its fingerprint.

        ``fingerprint`` is what the other organisation read out by another channel
        (telephone, in person); it is compared in constant time with the
        fingerprint of the keys in ``entry``.
        """
        targets = {"org": entry.org_id}
        key_id, actual = entry.key_id, entry.fingerprint
        try:
            normalise(fingerprint)
            matches = fingerprints_match(fingerprint, entry.fingerprint)
        except InputError:
            await self._store.record_event(
                "directory.add_local",
                actor,
                None,
                targets,
                outcome="refused",
                reason="malformed fingerprint",
                key_id=key_id,
                fingerprint=actual,
            )
            raise
        if not matches:
            await self._store.record_event(
                "directory.add_local",
                actor,
                None,
                targets,
                outcome="refused",
                reason="fingerprint mismatch",
                key_id=key_id,
                fingerprint=actual,
            )
            raise FingerprintMismatchError(
                f"the fingerprint given does not match the keys in the entry for "
                f"{entry.org_id} (their fingerprint is {entry.fingerprint}); the entry may "
                "have been altered: check it with the organisation again, by another channel"
            )
        view = await self.view()
        own_ids = {e.org_id for e in self._own[0]}
        conflict: str | None = None
        if entry.org_id in own_ids:
            conflict = f"organisation {entry.org_id} is hosted on this node; it needs no entry"
        else:
            for key_id in entry.key_ids():
                owner = view.entry_for_key(key_id)
                if owner is not None and owner.org_id != entry.org_id:
                    conflict = (
                        f"signing key {key_id} is already listed for {owner.org_id}; an entry "
                        "cannot claim another organisation's key"
                    )
                    break
        if conflict is not None:
            await self._store.record_event(
                "directory.add_local",
                actor,
                None,
                targets,
                outcome="refused",
                reason="conflict",
                key_id=key_id,
                fingerprint=actual,
            )
            raise ConflictError(conflict)
        now = self._clock()
        async with self._store.sessions() as s, s.begin():
            row = await s.get(EntryRow, (SOURCE_LOCAL, entry.org_id), with_for_update=True)
            replaced = row is not None
            if row is None:
                row = EntryRow(source=SOURCE_LOCAL, org_id=entry.org_id)
                s.add(row)
            row.entry = _entry_text(entry)
            row.fingerprint = entry.fingerprint
            row.added_at = now
            row.added_by = actor
        self._changed()
        await self._store.record_event(
            "directory.add_local",
            actor,
            None,
            targets,
            replaced=replaced,
            key_id=key_id,
            fingerprint=actual,
        )
        return entry
