"""The directory authority: pin its key, then import the documents it signs."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import delete, func, select

from keys import minisign
from keys.fingerprint import fingerprints_match
from transfer.directory.document import (
    DirectoryImportError,
    authority_fingerprint,
    merge_revocations,
    verify_document,
)
from transfer.directory.service.core import DirectoryCore
from transfer.directory.service.records import (
    DirectoryImported,
    FingerprintMismatchError,
    HeldDocument,
    NoAuthorityError,
    PinnedAuthority,
    _entry_text,
    _safe_source,
)
from transfer.directory.tables import (
    SOURCE_AUTHORITY,
    AuthorityRow,
    DocumentRow,
    EntryRow,
    RevocationRow,
)
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
)


class DirectoryAuthority(DirectoryCore):
    """Pin the authority; hold and import its signed documents."""

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
