"""The key files: sealed files on disk, atomic writes, auditing of every change and export."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from keys import aead, agekeys
from keys.keyfiles import (
    ExportNotConfirmedError,
    KeyFiles,
    KeySetExistsError,
    KeySetNotFoundError,
)
from keys.keyset import KeyRevokedError, KeySet
from keys.sealing import KekProtection, KeyFileFormatError, KeyUnsealError, PassphraseProtection
from schemas.auditing import AuditEvent, MemoryAudit
from transfer.errors import InputError, PolicyError

ORG = "urn:school:100000"


@pytest.fixture
def kek() -> bytes:
    return aead.new_key()


@pytest.fixture
def audit() -> MemoryAudit:
    return MemoryAudit()


@pytest.fixture
def store(tmp_path: Path, kek: bytes, audit: MemoryAudit) -> KeyFiles:
    return KeyFiles.for_data_dir(tmp_path, KekProtection(kek), audit=audit)


def _all_secret_forms(ks: KeySet) -> list[str]:
    out: list[str] = []
    secrets = [k.secret for k in ks.decryption_keys()]
    if ks.signing.seed is not None:
        secrets.append(ks.signing.seed)
    for s in secrets:
        out += [s.hex(), base64.b64encode(s).decode(), repr(s)]
    out += [agekeys.encode_identity(k.secret) for k in ks.decryption_keys()]
    return out


def _assert_no_secrets(events: list[AuditEvent], ks: KeySet) -> None:
    text = repr(events)
    for form in _all_secret_forms(ks):
        assert form not in text


async def test_create_load_and_file_modes(
    store: KeyFiles, tmp_path: Path, audit: MemoryAudit
) -> None:
    ks = await store.create(ORG, actor="alice")
    path = store.path_for(ORG)
    assert path.parent == tmp_path / "keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = store.load(ORG)
    assert loaded == ks and loaded.signing.seed == ks.signing.seed
    assert store.list_orgs() == [ORG]
    assert audit.actions() == ["key.generate"]
    ev = audit.events[0]
    assert ev.actor == "alice" and ev.org == ORG and ev.outcome == "ok"
    assert ev.detail["fingerprint"] == ks.fingerprint
    _assert_no_secrets(audit.events, ks)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


async def test_create_twice_and_missing(store: KeyFiles) -> None:
    await store.create(ORG)
    with pytest.raises(KeySetExistsError, match="already has keys"):
        await store.create(ORG)
    with pytest.raises(KeySetNotFoundError, match="handover keys generate urn:school:2"):
        store.load("urn:school:2")
    with pytest.raises(InputError):
        await store.create("../escape")


async def test_wrong_kek(store: KeyFiles, tmp_path: Path) -> None:
    await store.create(ORG)
    other = KeyFiles.for_data_dir(tmp_path, KekProtection(aead.new_key()))
    with pytest.raises(KeyUnsealError, match="key-encryption key"):
        other.load(ORG)


async def test_passphrase_store(tmp_path: Path) -> None:
    prot = PassphraseProtection("a long passphrase", log2_n=10)
    s = KeyFiles(tmp_path / "k", prot)
    ks = await s.create(ORG)
    assert KeyFiles(tmp_path / "k", PassphraseProtection("a long passphrase")).load(ORG) == ks
    with pytest.raises(KeyUnsealError, match="passphrase is wrong"):
        KeyFiles(tmp_path / "k", PassphraseProtection("a long passphrasE")).load(ORG)


async def test_swapped_files_do_not_open(store: KeyFiles) -> None:
    await store.create(ORG)
    await store.create("urn:school:2")
    a, b = store.path_for(ORG), store.path_for("urn:school:2")
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(KeyFileFormatError, match="another organisation"):
        store.load(ORG)


async def test_rotate_replaces_file_atomically(store: KeyFiles, audit: MemoryAudit) -> None:
    first = await store.create(ORG)
    inode = store.path_for(ORG).stat().st_ino
    rotated = await store.rotate(ORG, actor="bob")
    assert store.path_for(ORG).stat().st_ino != inode  # a new file renamed over the old
    loaded = store.load(ORG)
    assert loaded.recipient == rotated.recipient != first.recipient
    assert loaded.decryption_key_for(first.recipient).secret == first.encryption.secret
    assert audit.actions() == ["key.generate", "key.rotate"]
    assert audit.events[1].detail["previous_key_id"] == first.key_id_hex
    _assert_no_secrets(audit.events, loaded)


async def test_concurrent_rotations_lose_nothing(store: KeyFiles) -> None:
    await store.create(ORG)
    await asyncio.gather(*(store.rotate(ORG) for _ in range(4)))
    assert len(store.load(ORG).previous_encryption) == 4


async def test_revoke_persists(store: KeyFiles, audit: MemoryAudit) -> None:
    t0 = datetime(2026, 9, 1, tzinfo=UTC)
    now = [t0]
    clock_store = KeyFiles(
        store.directory, KekProtection(aead.new_key()), audit=audit, clock=lambda: now[0]
    )
    first = await clock_store.create(ORG)
    # the compromise is found a day later; signatures from the hour after creation are refused
    now[0] = t0 + timedelta(days=1)
    at = t0 + timedelta(hours=1)
    after = await clock_store.revoke(ORG, at=at, actor="dsl")
    assert after.key_id_hex != first.key_id_hex
    loaded = clock_store.load(ORG)
    loaded.check_signing_key_valid(first.key_id_hex, at - timedelta(seconds=1))
    with pytest.raises(KeyRevokedError, match="revoked at 2026-09-01T01:00:00Z"):
        loaded.check_signing_key_valid(first.key_id_hex, at)
    ev = audit.events[-1]
    assert ev.action == "key.revoke" and ev.detail["key_id"] == first.key_id_hex
    assert ev.detail["revoked_at"] == "2026-09-01T01:00:00Z"


async def test_export_identity_needs_confirmation_and_is_audited(
    store: KeyFiles, audit: MemoryAudit
) -> None:
    ks = await store.create(ORG)
    with pytest.raises(ExportNotConfirmedError, match="confirmation") as info:
        await store.export_identity(ORG, confirm=False, actor="eve")
    assert isinstance(info.value, PolicyError)
    refused = audit.events[-1]
    assert (refused.action, refused.outcome, refused.actor) == ("key.export", "refused", "eve")
    text = await store.export_identity(ORG, confirm=True, actor="alice")
    assert agekeys.parse_identity_file(text) == [ks.encryption.secret]
    ok = audit.events[-1]
    assert (ok.action, ok.outcome, ok.actor) == ("key.export", "ok", "alice")
    _assert_no_secrets(audit.events, ks)


async def test_export_not_returned_when_audit_fails(tmp_path: Path, kek: bytes) -> None:
    class BrokenAudit:
        def __init__(self) -> None:
            self.calls = 0

        async def record(self, event: AuditEvent) -> None:
            self.calls += 1
            if event.action == "key.export":
                raise OSError("audit log unavailable")

    broken = BrokenAudit()
    s = KeyFiles(tmp_path / "keys", KekProtection(kek), audit=broken)
    await s.create(ORG)
    with pytest.raises(OSError, match="audit log unavailable"):
        await s.export_identity(ORG, confirm=True, actor="x")
    assert broken.calls == 2


async def test_export_after_rotation_holds_every_key(store: KeyFiles) -> None:
    first = await store.create(ORG)
    second = await store.rotate(ORG)
    text = await store.export_identity(ORG, confirm=True, actor="a")
    assert agekeys.parse_identity_file(text) == [
        second.encryption.secret,
        first.encryption.secret,
    ]
    only = await store.export_identity(ORG, confirm=True, actor="a", include_previous=False)
    assert agekeys.parse_identity_file(only) == [second.encryption.secret]


async def test_import_identity(store: KeyFiles, audit: MemoryAudit) -> None:
    secret = X25519PrivateKey.generate().private_bytes_raw()
    identity = agekeys.encode_identity(secret)
    created = await store.import_identity("urn:school:7", f"# comment\n{identity}\n", actor="a")
    assert created.created and created.added == 1
    assert store.load("urn:school:7").encryption.secret == secret
    existing = await store.create(ORG)
    result = await store.import_identity(ORG, identity + "\n", actor="a")
    assert not result.created and result.added == 1
    loaded = store.load(ORG)
    assert loaded.recipient == existing.recipient
    assert loaded.decryption_key_for(agekeys.encode_recipient(_pub(secret))).secret == secret
    again = await store.import_identity(ORG, identity, actor="a")
    assert again.added == 0
    assert audit.actions().count("key.import") == 3
    _assert_no_secrets(audit.events, loaded)
    with pytest.raises(agekeys.AgeKeyError):
        await store.import_identity(ORG, "AGE-SECRET-KEY-1BROKEN", actor="a")


def _pub(secret: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


async def test_export_public(store: KeyFiles) -> None:
    ks = await store.create(ORG)
    pub = store.export_public(ORG)
    assert pub.fingerprint == ks.fingerprint
    assert pub.recipient == ks.recipient
    assert pub.minisign_key_id == ks.key_id_hex
    assert pub.minisign_public_key == ks.minisign_public_key_text()


async def test_list_ignores_other_files(store: KeyFiles) -> None:
    await store.create("urn:school:2")
    await store.create("agency-1")
    (store.directory / "README.txt").write_text("x")
    (store.directory / "not%2Fvalid.json").write_text("{}")
    assert store.list_orgs() == ["agency-1", "urn:school:2"]
    assert os.listdir(store.directory)
