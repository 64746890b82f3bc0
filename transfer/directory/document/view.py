"""The key view: entries and revocations, answering "which key is this, and does it stand
for a signature dated then?"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from keys import minisign
from keys.keyset import (
    KeyNotYetValidError,
    KeyRetiredError,
    KeyRevokedError,
    format_time,
    parse_key_id,
)
from schemas.directory import (
    DirectoryEntry,
    Revocation,
)
from transfer.directory.document.documents import (
    merge_revocations,
)
from transfer.errors import InputError
from transfer.package.errors import UnknownSenderError

# ------------------------------------------------------------------ key view


class DirectoryView:
    """Entries and revocations, indexed by organisation and by signing key id.

    Implements :class:`transfer.package.layout.SenderKeys`.
    """

    def __init__(
        self, entries: Iterable[DirectoryEntry], revocations: Iterable[Revocation] = ()
    ) -> None:
        self._entries: dict[str, DirectoryEntry] = {}
        for e in entries:
            self._entries.setdefault(e.org_id, e)
        self._by_key: dict[str, str] = {}
        for e in self._entries.values():
            for key_id in e.key_ids():
                self._by_key.setdefault(key_id, e.org_id)
        self._revoked: Mapping[tuple[str, str], Revocation] = {
            (r.org_id, r.key_id): r for r in merge_revocations(revocations)
        }

    def entries(self) -> list[DirectoryEntry]:
        return sorted(self._entries.values(), key=lambda e: e.org_id)

    def revocations(self) -> list[Revocation]:
        return list(self._revoked.values())

    def entry(self, org_id: str) -> DirectoryEntry | None:
        return self._entries.get(org_id)

    def entry_for_key(self, key_id: str) -> DirectoryEntry | None:
        wanted = _canonical_key_id(key_id)
        org = self._by_key.get(wanted)
        return None if org is None else self._entries[org]

    def revocation(self, org_id: str, key_id: str) -> Revocation | None:
        return self._revoked.get((org_id, _canonical_key_id(key_id)))

    def check_key(self, entry: DirectoryEntry, key_id: str, at: datetime) -> minisign.PublicKey:
        """The public key ``key_id`` of ``entry`` if it stands for a signature dated ``at``.

        Raises :class:`KeyRevokedError` (dated at or after a revocation),
        :class:`KeyRetiredError` (after the key was replaced or the entry's
        validity ended) or :class:`KeyNotYetValidError` (before the key's validity).
        """
        if at.tzinfo is None:
            raise InputError("a signature time must include a time zone")
        when = at.astimezone(UTC)
        wanted = _canonical_key_id(key_id)
        who = f"{entry.name} ({entry.org_id})"
        if wanted == entry.key_id:
            text, valid_from, valid_until = entry.signing_key, entry.valid_from, entry.valid_until
        else:
            prev = next((p for p in entry.previous_keys if p.key_id == wanted), None)
            if prev is None:
                raise InputError(f"key {wanted} is not a signing key of {who}")
            text, valid_from, valid_until = prev.signing_key, prev.valid_from, prev.valid_until
        revoked = self._revoked.get((entry.org_id, wanted))
        if revoked is not None and when >= revoked.revoked_at:
            raise KeyRevokedError(
                f"signing key {wanted} of {who} was revoked at {format_time(revoked.revoked_at)} "
                f"({revoked.reason}); a signature dated {format_time(when)} is refused"
            )
        if valid_until is not None and when > valid_until:
            raise KeyRetiredError(
                f"signing key {wanted} of {who} stopped being valid at "
                f"{format_time(valid_until)}; a signature dated {format_time(when)} is refused"
            )
        if when < valid_from:
            raise KeyNotYetValidError(
                f"signing key {wanted} of {who} is valid from {format_time(valid_from)}; a "
                f"signature dated {format_time(when)}, before then, is refused"
            )
        return minisign.PublicKey.from_base64(text)

    def signing_key(self, org_id: str | None, key_id: str, at: datetime) -> minisign.PublicKey:
        """:class:`~transfer.package.layout.SenderKeys`: the sender's key valid at ``at``."""
        wanted = _canonical_key_id(key_id)
        entry = self.entry_for_key(wanted)
        if entry is None or (org_id is not None and entry.org_id != org_id):
            who = f"the sender {org_id}" if org_id else "its sender"
            raise UnknownSenderError(
                f"the package is signed with key {wanted}, which the directory does not list "
                f"for {who}; import a current directory or add the sender's entry by hand "
                "after checking its fingerprint"
            )
        return self.check_key(entry, wanted, at)


def _canonical_key_id(key_id: str) -> str:
    """A key id as minisign prints it (accepts lower case, as RFC 9421 keyids are written)."""
    return parse_key_id(key_id)[::-1].hex().upper()
