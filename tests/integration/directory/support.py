"""Shared helpers for the directory tests: organisations' key sets, entries, signed documents."""

from __future__ import annotations

import os
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from keys import minisign
from keys.keyset import KeySet
from schemas.directory import DirectoryDocument, DirectoryEntry, OrgKind, Revocation
from transfer.directory.document import (
    add_organisation,
    add_revocation,
    entry_from_keyset,
    new_document,
    sign_document,
)

REPO = Path(__file__).resolve().parents[3]
HANDOVER = [sys.executable, "-m", "transfer.cli"]
T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


def keyset(org_id: str, at: datetime = T0) -> KeySet:
    return KeySet.generate(org_id, now=at)


def entry(ks: KeySet, name: str = "Riverside Academy", kind: OrgKind = "school") -> DirectoryEntry:
    return entry_from_keyset(ks, name=name, kind=kind, endpoint="https://riverside.example:8443")


def document(
    secret: minisign.SecretKey,
    entries: list[DirectoryEntry],
    *,
    revocations: list[Revocation] | None = None,
    serial: int = 0,
    now: datetime = T0,
    days: int = 30,
) -> tuple[DirectoryDocument, bytes, str]:
    """A signed document of serial ``serial + 1``."""
    doc = new_document("Testshire County Council", now=now, valid_for=timedelta(days=days))
    doc = doc.model_copy(update={"serial": serial})
    for e in entries:
        doc = add_organisation(doc, e)
    for r in revocations or []:
        doc = add_revocation(doc, r)
    return sign_document(doc, secret, now=now, valid_for=timedelta(days=days))


def cli_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env["PYTHONPATH"] = str(REPO)
    env["HANDOVER_KEK"] = secrets.token_hex(32)
    env["HOME"] = str(tmp / "home")
    return env
