"""An organisation's keys and the node's directory, for its administrator.

The key files (:mod:`keys.keyfiles`) and the directory (:class:`Directory`) are the
operator's on the command line, where whoever holds the KEK may do anything. A
signed-in person reaches them only through here, which checks ``keys.manage``
(the administrator's) for every read and change and audits refusals, so the
web app never decides who may rotate a key:

- the organisation's current keys, their fingerprint (to read out by phone when a
  partner checks it), and the earlier keys with when they were replaced or revoked;
- rotating the keys (the earlier decryption key kept for packages on their way);
- the signed directory the node holds (its serial, dates, authority and who is in
  it), and importing a new one, checked against the pinned authority's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from transfer.directory.service import Directory, DirectoryImported, HeldDocument, ListedEntry
from transfer.store.permissions import Actor, Permission, PermissionDenied, require
from transfer.store.service import Store


@dataclass(frozen=True)
class SigningKeyLine:
    key_id: str
    created_at: datetime
    retired_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class DecryptionKeyLine:
    recipient: str
    created_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True)
class OrganisationKeys:
    """An organisation's public key facts (no secret), current first."""

    org_id: str
    fingerprint: str
    recipient: str
    key_id: str
    signing: tuple[SigningKeyLine, ...]
    decryption: tuple[DecryptionKeyLine, ...]


def _facts(keyset: KeySet) -> OrganisationKeys:
    return OrganisationKeys(
        org_id=keyset.org_id,
        fingerprint=keyset.fingerprint,
        recipient=keyset.recipient,
        key_id=keyset.key_id_hex,
        signing=tuple(
            SigningKeyLine(r.key_id_hex, r.created_at, r.retired_at, r.revoked_at)
            for r in keyset.signing_keys()
        ),
        decryption=tuple(
            DecryptionKeyLine(k.recipient, k.created_at, k.retired_at)
            for k in keyset.decryption_keys()
        ),
    )


class KeyAdministration:
    """Keys and the directory, behind ``keys.manage``."""

    def __init__(self, store: Store, keys: KeyFiles, directory: Directory) -> None:
        self._store = store
        self._keys = keys
        self._directory = directory

    async def _require(self, actor: Actor, action: str) -> None:
        try:
            require(actor, Permission.MANAGE_KEYS)
        except PermissionDenied:
            await self._store.record_event(action, actor, actor.org_id, {}, "refused")
            raise

    async def keys(self, actor: Actor) -> OrganisationKeys:
        """The actor's organisation's keys (``keys.manage``)."""
        await self._require(actor, "key.read")
        facts = _facts(self._keys.load(actor.org_id))
        await self._store.record_event("key.read", actor, actor.org_id, {})
        return facts

    async def rotate(self, actor: Actor) -> OrganisationKeys:
        """New keys for the actor's organisation; the key files audit the rotation."""
        await self._require(actor, "key.rotate")
        keyset = await self._keys.rotate(actor.org_id, actor=actor.staff_id)
        return _facts(keyset)

    async def directory(self, actor: Actor) -> tuple[HeldDocument | None, list[ListedEntry]]:
        """The directory held, and everyone in the node's view of it (``keys.manage``)."""
        await self._require(actor, "directory.read")
        held = await self._directory.held()
        listing = [e for e in await self._directory.listing() if not e.shadowed]
        await self._store.record_event("directory.read", actor, actor.org_id, {})
        return held, listing

    async def import_directory(
        self, actor: Actor, data: bytes, signature: bytes
    ) -> DirectoryImported:
        """Import a signed directory document (checked against the pinned authority)."""
        await self._require(actor, "directory.import")
        return await self._directory.import_document(
            data, signature, source="uploaded in the web app", actor=actor.staff_id
        )


__all__ = ["DecryptionKeyLine", "KeyAdministration", "OrganisationKeys", "SigningKeyLine"]
