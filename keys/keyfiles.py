"""The node's key files: one sealed key file per organisation, in ``<data dir>/keys/``.

Files are written atomically (a temporary file in the same directory, fsync,
rename, fsync of the directory) with mode 0600, in a directory of mode 0700.
Each read-modify-write holds an exclusive ``flock`` on a per-organisation
lock file, so two processes rotating at once do not lose a change.

Reading (:meth:`KeyFiles.load`, :meth:`KeyFiles.list_orgs`,
:meth:`KeyFiles.export_public`) is synchronous. Every change and every
export of a secret is audited, so those methods are ``async``: the file work
runs in a worker thread, then the event is recorded on the
:class:`schemas.auditing.AuditSink` (or logged, when the store was made
without one). An export of a secret key is recorded *before* the key is
returned; a refused export is recorded too. No key material ever goes into
an audit event, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote

from keys import agekeys
from keys.keyset import KeySet, format_time, parse_key_id, validate_org_id
from keys.sealing import Protection, read_org_id, seal_keyset, unseal_keyset
from schemas.auditing import AuditEvent, AuditSink, Outcome
from transfer.errors import ConflictError, HandoverError, NotFoundError, PolicyError, TransportError

__all__ = [
    "ExportNotConfirmedError",
    "IdentityImport",
    "KeyFiles",
    "KeySetExistsError",
    "KeySetNotFoundError",
    "PublicExport",
]

log = logging.getLogger(__name__)

KEYS_SUBDIR = "keys"
_SUFFIX = ".json"


class KeySetNotFoundError(NotFoundError):
    """No key file for that organisation."""


class KeySetExistsError(ConflictError):
    """The organisation already has keys."""


class ExportNotConfirmedError(PolicyError):
    """A secret key export was asked for without explicit confirmation."""


@dataclass(frozen=True)
class PublicExport:
    """The public forms of an organisation's current keys."""

    org_id: str
    fingerprint: str
    recipient: str
    minisign_key_id: str
    minisign_public_key: str


@dataclass(frozen=True)
class IdentityImport:
    """The result of importing an age identity file."""

    keyset: KeySet
    #: True when the organisation had no keys and a key set was made around the import.
    created: bool
    #: How many X25519 keys were new to the key set.
    added: int


def _identity_note(org_id: str, retired_at: datetime | None) -> str:
    if retired_at is None:
        return f"{org_id}: current key"
    return f"{org_id}: earlier key, replaced {format_time(retired_at)}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class KeyFiles:
    """Sealed key sets of the organisations hosted on this node."""

    def __init__(
        self,
        directory: Path,
        protection: Protection,
        *,
        audit: AuditSink | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.directory = Path(directory)
        self._protection = protection
        self._audit = audit
        self._clock = clock

    @classmethod
    def for_data_dir(
        cls, data_dir: Path, protection: Protection, *, audit: AuditSink | None = None
    ) -> KeyFiles:
        """The store in a node's data directory (``<data_dir>/keys``)."""
        return cls(Path(data_dir) / KEYS_SUBDIR, protection, audit=audit)

    # ------------------------------------------------------------------ files

    def path_for(self, org_id: str) -> Path:
        return self.directory / (quote(validate_org_id(org_id), safe="._-") + _SUFFIX)

    def exists(self, org_id: str) -> bool:
        return self.path_for(org_id).is_file()

    def list_orgs(self) -> list[str]:
        """The organisations that have a key file here, sorted."""
        if not self.directory.is_dir():
            return []
        orgs: list[str] = []
        for path in self.directory.iterdir():
            if path.name.startswith(".") or not path.name.endswith(_SUFFIX):
                continue
            org_id = unquote(path.name[: -len(_SUFFIX)])
            with contextlib.suppress(HandoverError):
                if self.path_for(org_id) == path:
                    orgs.append(org_id)
        return sorted(orgs)

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(
                f"cannot create the key directory {self.directory}: {exc.strerror}"
            ) from None

    @contextlib.contextmanager
    def _locked(self, org_id: str) -> Iterator[None]:
        self._ensure_dir()
        lock_path = self.directory / ("." + self.path_for(org_id).name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TransportError(f"cannot lock the key file of {org_id}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, org_id: str) -> bytes:
        path = self.path_for(org_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeySetNotFoundError(
                f"organisation {org_id} has no keys on this node "
                f"(create them with: handover keys generate {org_id})"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot read the key file of {org_id}: {exc.strerror}") from None

    def _write(self, keyset: KeySet) -> None:
        self._ensure_dir()
        path = self.path_for(keyset.org_id)
        data = seal_keyset(keyset, self._protection)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix="." + path.name, suffix=".tmp")
        except OSError as exc:
            raise TransportError(
                f"cannot write the key file of {keyset.org_id}: {exc.strerror}"
            ) from None
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise TransportError(
                f"cannot write the key file of {keyset.org_id}: {exc.strerror}"
            ) from None

    # ---------------------------------------------------------------- reading

    def load(self, org_id: str) -> KeySet:
        """The organisation's unsealed key set."""
        data = self._read(org_id)
        return unseal_keyset(data, self._protection, expected_org_id=org_id)

    def claimed_org_id(self, path: Path) -> str:
        """The organisation a key file names (before it is unsealed)."""
        return read_org_id(path.read_bytes())

    def export_public(self, org_id: str) -> PublicExport:
        """The current public keys: fingerprint, ``age1…`` recipient, minisign key."""
        keyset = self.load(org_id)
        return PublicExport(
            org_id=org_id,
            fingerprint=keyset.fingerprint,
            recipient=keyset.recipient,
            minisign_key_id=keyset.key_id_hex,
            minisign_public_key=keyset.minisign_public_key_text(),
        )

    # ----------------------------------------------------------- audited work

    async def _record(
        self,
        action: str,
        org_id: str,
        actor: str | None,
        *,
        outcome: Outcome = "ok",
        detail: dict[str, str | int | bool | None] | None = None,
    ) -> None:
        event = AuditEvent(
            action=action,
            actor=actor,
            org=org_id,
            targets={"org": org_id},
            outcome=outcome,
            detail=dict(detail or {}),
        )
        if self._audit is not None:
            await self._audit.record(event)
        else:
            log.info("audit %s org=%s actor=%s outcome=%s", action, org_id, actor, outcome)

    def _create_sync(self, org_id: str) -> KeySet:
        with self._locked(org_id):
            if self.exists(org_id):
                raise KeySetExistsError(
                    f"organisation {org_id} already has keys; use 'handover keys rotate' "
                    "to replace them"
                )
            keyset = KeySet.generate(org_id, now=self._clock())
            self._write(keyset)
            return keyset

    async def create(self, org_id: str, *, actor: str | None = None) -> KeySet:
        """Generate and store a new key set; refuse if the organisation has one."""
        validate_org_id(org_id)
        keyset = await asyncio.to_thread(self._create_sync, org_id)
        await self._record(
            "key.generate",
            org_id,
            actor,
            detail={
                "fingerprint": keyset.fingerprint,
                "key_id": keyset.key_id_hex,
                "recipient": keyset.recipient,
            },
        )
        return keyset

    def _rotate_sync(self, org_id: str) -> KeySet:
        with self._locked(org_id):
            keyset = self.load(org_id).rotate(now=self._clock())
            self._write(keyset)
            return keyset

    async def rotate(self, org_id: str, *, actor: str | None = None) -> KeySet:
        """Make new current keys, keeping the earlier decryption key."""
        validate_org_id(org_id)
        keyset = await asyncio.to_thread(self._rotate_sync, org_id)
        await self._record(
            "key.rotate",
            org_id,
            actor,
            detail={
                "fingerprint": keyset.fingerprint,
                "key_id": keyset.key_id_hex,
                "recipient": keyset.recipient,
                "previous_key_id": keyset.previous_signing[0].key_id_hex,
            },
        )
        return keyset

    def _revoke_sync(self, org_id: str, key_id: bytes | None, at: datetime) -> KeySet:
        with self._locked(org_id):
            keyset = self.load(org_id).revoke(key_id, at=at, now=self._clock())
            self._write(keyset)
            return keyset

    async def revoke(
        self,
        org_id: str,
        *,
        at: datetime,
        key_id: bytes | str | None = None,
        actor: str | None = None,
    ) -> KeySet:
        """Revoke a signing key (the current one by default, which also rotates) from ``at``."""
        validate_org_id(org_id)
        raw_id = None if key_id is None else parse_key_id(key_id)
        keyset = await asyncio.to_thread(self._revoke_sync, org_id, raw_id, at)
        revoked = keyset.previous_signing[0] if raw_id is None else keyset.find_signing_key(raw_id)
        await self._record(
            "key.revoke",
            org_id,
            actor,
            detail={
                "key_id": revoked.key_id_hex,
                "revoked_at": format_time(at),
                "current_key_id": keyset.key_id_hex,
                "fingerprint": keyset.fingerprint,
            },
        )
        return keyset

    async def export_identity(
        self,
        org_id: str,
        *,
        confirm: bool,
        actor: str | None,
        include_previous: bool = True,
    ) -> str:
        """The organisation's X25519 keys as an age identity file (current key first).

        A secret leaves the node: refused unless ``confirm`` is True, and
        recorded in the audit log before the key is returned.
        """
        validate_org_id(org_id)
        if confirm is not True:
            await self._record(
                "key.export",
                org_id,
                actor,
                outcome="refused",
                detail={"kind": "age-identity", "reason": "not confirmed"},
            )
            raise ExportNotConfirmedError(
                "exporting a secret key needs explicit confirmation "
                "(--yes-i-understand): whoever holds the file can read every package sent "
                f"to {org_id}"
            )
        keyset = await asyncio.to_thread(self.load, org_id)
        keys = keyset.decryption_keys() if include_previous else (keyset.encryption,)
        text = agekeys.format_identity_file(
            (
                k.secret,
                k.public_key,
                k.created_at,
                _identity_note(org_id, k.retired_at),
            )
            for k in keys
        )
        await self._record(
            "key.export",
            org_id,
            actor,
            detail={"kind": "age-identity", "keys": len(keys), "recipient": keyset.recipient},
        )
        return text

    def _import_sync(self, org_id: str, secrets: list[bytes]) -> IdentityImport:
        with self._locked(org_id):
            now = self._clock()
            if not self.exists(org_id):
                keyset = KeySet.from_identity(org_id, secrets[0], now=now)
                keyset, added = keyset.with_imported_identities(secrets[1:], now=now)
                self._write(keyset)
                return IdentityImport(keyset=keyset, created=True, added=added + 1)
            keyset, added = self.load(org_id).with_imported_identities(secrets, now=now)
            if added:
                self._write(keyset)
            return IdentityImport(keyset=keyset, created=False, added=added)

    async def import_identity(
        self, org_id: str, identity_text: str, *, actor: str | None = None
    ) -> IdentityImport:
        """Import an age identity file (disaster recovery).

        For an organisation with no keys, the first identity becomes the
        current encryption key (with a fresh signing key) and the rest are
        kept as earlier keys. For one with keys, the identities are kept as
        earlier decryption keys; the current keys do not change.
        """
        validate_org_id(org_id)
        secrets = agekeys.parse_identity_file(identity_text)
        result = await asyncio.to_thread(self._import_sync, org_id, secrets)
        await self._record(
            "key.import",
            org_id,
            actor,
            detail={
                "kind": "age-identity",
                "keys": len(secrets),
                "added": result.added,
                "created": result.created,
                "fingerprint": result.keyset.fingerprint,
            },
        )
        return result
