"""A node's own organisations as directory entries and revocations, from their key sets."""

from __future__ import annotations

from pydantic import ValidationError

from keys.keyset import (
    KeySet,
)
from schemas.directory import (
    AuditKey,
    DirectoryEntry,
    OrgKind,
    PreviousSigningKey,
    Revocation,
)
from transfer.directory.document.documents import (
    _first_error,
    check_entry_keys,
)
from transfer.errors import InputError

# ---------------------------------------------------------- a node's own keys


def entry_from_keyset(
    keyset: KeySet,
    *,
    name: str,
    kind: OrgKind,
    town: str | None = None,
    urn: str | None = None,
    laestab: str | None = None,
    endpoint: str | None = None,
    email: str | None = None,
    audit_key: AuditKey | None = None,
) -> DirectoryEntry:
    """The directory entry of one of this node's organisations, from its key set."""
    previous = tuple(
        PreviousSigningKey(
            signing_key=r.minisign_public_key.to_base64(),
            key_id=r.key_id_hex,
            valid_from=r.created_at,
            valid_until=r.retired_at or r.created_at,
        )
        for r in keyset.previous_signing[:100]
    )
    try:
        entry = DirectoryEntry(
            org_id=keyset.org_id,
            name=name,
            town=town,
            kind=kind,
            urn=urn,
            laestab=laestab,
            endpoint=endpoint.rstrip("/") if endpoint else None,
            recipient=keyset.recipient,
            signing_key=keyset.minisign_public_key.to_base64(),
            key_id=keyset.key_id_hex,
            fingerprint=keyset.fingerprint,
            email=email,
            valid_from=keyset.signing.created_at,
            previous_keys=previous,
            audit_key=audit_key,
        )
    except ValidationError as exc:
        raise InputError(f"cannot make the directory entry: {_first_error(exc)}") from None
    return check_entry_keys(entry, "the directory entry")


def revocations_from_keyset(keyset: KeySet) -> list[Revocation]:
    """The revocations recorded in one of this node's key sets."""
    return [
        Revocation(
            org_id=keyset.org_id,
            key_id=r.key_id_hex,
            revoked_at=r.revoked_at,
            reason="revoked on the organisation's own node",
        )
        for r in keyset.signing_keys()
        if r.revoked_at is not None
    ]
