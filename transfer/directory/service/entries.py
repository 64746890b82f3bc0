"""The entries the node makes itself: its own organisations' and those added by hand."""

from __future__ import annotations

from keys.fingerprint import fingerprints_match, normalise
from schemas.directory import AuditKey, DirectoryEntry
from transfer.directory.document import (
    entry_from_keyset,
)
from transfer.directory.service.core import DirectoryCore
from transfer.directory.service.records import (
    _OWN_KIND,
    FingerprintMismatchError,
    UnknownOrganisationError,
    _entry_text,
)
from transfer.directory.tables import (
    SOURCE_LOCAL,
    EntryRow,
)
from transfer.errors import (
    ConflictError,
    InputError,
    NotFoundError,
)


class DirectoryEntries(DirectoryCore):
    """The node's own entries and the local (hand-added) ones."""

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
