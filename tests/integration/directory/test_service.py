"""The node's directory on a real database (SQLite and PostgreSQL): pin, import, local entries,
the node's own organisations, rotation and revocation, and the audit of every refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from keys import minisign
from keys.keyfiles import KeyFiles
from keys.keyset import KeyRetiredError, KeyRevokedError
from keys.sealing import KekProtection
from schemas.auditing import AuditEvent, MemoryAudit
from schemas.directory import DirectoryEntry, Revocation
from tests.integration.directory.support import REPO, T0, document, entry, keyset
from tests.integration.store.conftest import FakeClock
from transfer.directory.document import (
    DirectoryExpiredError,
    DirectoryRollbackError,
    DirectorySignatureError,
    DirectoryView,
    WrongAuthorityError,
    authority_fingerprint,
)
from transfer.directory.service import (
    Directory,
    FingerprintMismatchError,
    NoAuthorityError,
    UnknownOrganisationError,
    UnknownSignerError,
)
from transfer.errors import AuthenticationError, ConflictError, InputError
from transfer.store.service import Store

KEK = bytes(range(32))
BASE_URL = "https://node.example:8443"


@dataclass
class Env:
    store: Store
    keys: KeyFiles
    directory: Directory
    audit: MemoryAudit
    clock: FakeClock
    authority: minisign.SecretKey

    def events(self, action: str) -> list[AuditEvent]:
        return [e for e in self.audit.events if e.action == action]

    async def pin(self) -> None:
        pub = self.authority.public_key
        await self.directory.pin_authority(
            pub, fingerprint=authority_fingerprint(pub), actor="cli:test"
        )


@pytest.fixture
async def env(db_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    audit = MemoryAudit()
    clock = FakeClock(T0 + timedelta(days=1))
    store = await Store.open(db_url, KEK, audit, data_dir=tmp_path / "data", clock=clock)
    keys = KeyFiles(tmp_path / "data" / "keys", KekProtection(KEK), audit=audit, clock=clock)
    directory = Directory(store, keys=keys, base_url=BASE_URL + "/")
    try:
        yield Env(store, keys, directory, audit, clock, minisign.SecretKey.generate())
    finally:
        await store.close()


async def test_two_schools_on_one_node_find_each_other(env: Env) -> None:
    for urn, laestab, name in (("100001", "8010001", "Hillside"), ("100002", "8010002", "Oak")):
        await env.store.create_school(name=name, urn=urn, laestab=laestab)
        await env.keys.create(urn)
    hill = await env.directory.entry("100001")
    oak_keys = env.keys.load("100002")
    assert hill.name == "Hillside" and hill.endpoint == BASE_URL and hill.kind == "school"
    assert hill.fingerprint == env.keys.load("100001").fingerprint and hill.laestab == "8010001"
    assert (await env.directory.entry_for_key(oak_keys.key_id_hex.lower())).org_id == "100002"
    key = await env.directory.signing_public_key(oak_keys.key_id_hex, env.clock.now)
    assert key == oak_keys.signing.public_key
    assert [e.org_id for e in await env.directory.entries()] == ["100001", "100002"]
    with pytest.raises(UnknownOrganisationError):
        await env.directory.entry("100003")
    with pytest.raises(UnknownSignerError) as err:
        await env.directory.entry_for_key("0123456789ABCDEF")
    assert isinstance(err.value, AuthenticationError)
    with pytest.raises(UnknownSignerError):
        await env.directory.signing_public_key("not hex", env.clock.now)


async def test_own_rotation_and_revocation_flow_through(env: Env) -> None:
    await env.store.create_school(name="Hillside", urn="100001", laestab="8010001")
    first = await env.keys.create("100001")
    signed_before = env.clock.now + timedelta(minutes=1)
    env.clock.advance(hours=2)
    rotated = await env.keys.rotate("100001")
    e = await env.directory.own_entry("100001", email="dsl@hillside.example")
    assert e.key_id == rotated.key_id_hex and e.email == "dsl@hillside.example"
    assert [p.key_id for p in e.previous_keys] == [first.key_id_hex]
    old = first.key_id_hex
    assert await env.directory.signing_public_key(old, signed_before) == first.signing.public_key
    with pytest.raises(KeyRetiredError):
        await env.directory.signing_public_key(old, env.clock.now + timedelta(seconds=1))
    # keys revoke (on this node) is honoured from its time on, not before.
    await env.keys.revoke("100001", key_id=old, at=signed_before + timedelta(seconds=30))
    assert await env.directory.signing_public_key(old, signed_before) == first.signing.public_key
    with pytest.raises(KeyRevokedError, match=f"signing key {old} of Hillside"):
        await env.directory.signing_public_key(old, signed_before + timedelta(seconds=30))
    snapshot = await env.directory.sender_keys()
    with pytest.raises(KeyRevokedError):
        snapshot.signing_key("100001", old, signed_before + timedelta(minutes=1))
    with pytest.raises(UnknownOrganisationError):
        await env.directory.own_entry("100009")


async def test_import_and_each_refusal_is_audited_and_leaves_data_intact(env: Env) -> None:
    b = keyset("100002")
    _, data1, sig1 = document(env.authority, [entry(b)], serial=0)
    # Nothing pinned yet.
    with pytest.raises(NoAuthorityError, match="pin"):
        await env.directory.import_document(data1, sig1, source="/tmp/d.json", actor="cli:t")
    # Pinning checks the fingerprint the operator confirmed.
    pub = env.authority.public_key
    with pytest.raises(FingerprintMismatchError):
        await env.directory.pin_authority(pub, fingerprint="0000-0000-0000-0000", actor="cli:t")
    with pytest.raises(InputError):
        await env.directory.pin_authority(pub, fingerprint="nonsense", actor="cli:t")
    assert await env.directory.authority() is None
    await env.pin()
    other = minisign.SecretKey.generate().public_key
    with pytest.raises(ConflictError, match="--replace"):
        await env.directory.pin_authority(
            other, fingerprint=authority_fingerprint(other), actor="cli:t"
        )
    pins = env.events("directory.pin")
    assert [e.outcome for e in pins] == ["refused", "refused", "ok", "refused"]
    assert pins[0].detail["reason"] == "fingerprint mismatch"

    result = await env.directory.import_document(
        data1,
        sig1,
        source="https://user:pw@la.example/d/directory.json?token=s3cret",
        actor="cli:t",
    )
    assert (result.serial, result.organisations, result.unchanged) == (1, 1, False)
    assert (await env.directory.entry("100002")).fingerprint == b.fingerprint
    assert (await env.directory.authority()).name == "Testshire County Council"  # type: ignore[union-attr]
    again = await env.directory.import_document(data1, sig1, source="x", actor="cli:t")
    assert again.unchanged

    c = keyset("100003")
    _, data2, sig2 = document(env.authority, [entry(b), entry(c)], serial=1)
    assert (await env.directory.import_document(data2, sig2, source="x", actor="t")).serial == 2

    refusals = [
        (data1, sig1, DirectoryRollbackError, "rollback"),
        (data2.replace(b"Riverside", b"Rivershed"), sig2, DirectorySignatureError, "bad-signature"),
        (
            *document(minisign.SecretKey.generate(), [], serial=5)[1:],
            WrongAuthorityError,
            "wrong-authority",
        ),
    ]
    for data, sig, error, reason in refusals:
        with pytest.raises(error):
            await env.directory.import_document(data, sig, source="x", actor="cli:t")
        assert env.events("directory.import")[-1].detail["reason"] == reason
    # Expired: the clock passes next_update plus the grace period.
    _, data3, sig3 = document(env.authority, [entry(b)], serial=2)
    env.clock.advance(days=40)
    with pytest.raises(DirectoryExpiredError, match="expired"):
        await env.directory.import_document(data3, sig3, source="x", actor="cli:t")
    # Every refusal left serial 2 in force.
    held = await env.directory.held()
    assert held is not None and held.serial == 2 and held.organisations == 2
    assert {e.org_id for e in await env.directory.entries()} == {"100002", "100003"}
    imports = env.events("directory.import")
    assert [e.outcome for e in imports] == ["refused", "ok", "ok", "ok"] + ["refused"] * 4
    assert imports[0].detail["reason"] == "no-authority"
    # The URL's credentials and query never reach the audit log.
    assert imports[1].detail["source"] == "https://la.example/d/directory.json"
    assert all("s3cret" not in str(e.detail) and "pw" not in str(e.detail) for e in imports)


async def test_revocations_are_sticky_and_honour_the_signature_time(env: Env) -> None:
    await env.pin()
    b = keyset("100002")
    revoked_at = T0 + timedelta(hours=6)
    r = Revocation(org_id="100002", key_id=b.key_id_hex, revoked_at=revoked_at, reason="stolen")
    _, data, sig = document(env.authority, [entry(b)], revocations=[r], serial=0)
    await env.directory.import_document(data, sig, source="x", actor="t")
    before = revoked_at - timedelta(seconds=1)
    assert await env.directory.signing_public_key(b.key_id_hex, before) == b.signing.public_key
    with pytest.raises(KeyRevokedError, match="revoked at 2026-09-01T14:00:00Z"):
        await env.directory.signing_public_key(b.key_id_hex, revoked_at)
    # A later directory that forgets the revocation does not lift it.
    _, data2, sig2 = document(env.authority, [entry(b)], serial=1)
    await env.directory.import_document(data2, sig2, source="x", actor="t")
    with pytest.raises(KeyRevokedError):
        await env.directory.signing_public_key(b.key_id_hex, revoked_at + timedelta(days=1))
    assert [x.key_id for x in await env.directory.revocations()] == [b.key_id_hex]


async def test_local_entries_need_the_right_fingerprint(env: Env, tmp_path: Path) -> None:
    await env.store.create_school(name="Hillside", urn="100001", laestab="8010001")
    await env.keys.create("100001")
    c = keyset("lado-testshire")
    e = entry(c, "Testshire LADO", "lado")
    with pytest.raises(FingerprintMismatchError, match="does not match"):
        await env.directory.add_local(e, fingerprint="0000-0000-0000-0000", actor="cli:t")
    with pytest.raises(UnknownOrganisationError):
        await env.directory.entry("lado-testshire")
    await env.directory.add_local(e, fingerprint=c.fingerprint.lower(), actor="cli:t")
    assert (await env.directory.entry("lado-testshire")).kind == "lado"
    # The node's own organisation needs no local entry.
    own = await env.directory.own_entry("100001")
    with pytest.raises(ConflictError, match="hosted on this node"):
        await env.directory.add_local(own, fingerprint=own.fingerprint, actor="cli:t")
    # An entry claiming another organisation's key is refused.
    twin = e.model_copy(update={"org_id": "lado-other"})
    with pytest.raises(ConflictError, match="already listed for lado-testshire"):
        await env.directory.add_local(twin, fingerprint=e.fingerprint, actor="cli:t")
    events = env.events("directory.add_local")
    assert [(x.outcome, x.detail.get("reason")) for x in events] == [
        ("refused", "fingerprint mismatch"),
        ("ok", None),
        ("refused", "conflict"),
        ("refused", "conflict"),
    ]
    # The authority's entry for the same organisation takes precedence; the local one stays.
    await env.pin()
    c2 = c.rotate(now=T0 + timedelta(hours=1))
    _, data, sig = document(env.authority, [entry(c2, "Testshire LADO", "lado")])
    await env.directory.import_document(data, sig, source="x", actor="t")
    assert (await env.directory.entry("lado-testshire")).key_id == c2.key_id_hex
    listing = await env.directory.listing()
    lado = [(le.source, le.shadowed) for le in listing if le.entry.org_id == "lado-testshire"]
    assert lado == [("authority", False), ("local", True)]


async def test_a_directory_signed_before_towns_imports(db_url: str, tmp_path: Path) -> None:
    """The signed fixture made by the code of before ``town`` existed imports as it is."""
    fixture = REPO / "tests" / "assets" / "directory-before-towns"
    audit = MemoryAudit()
    store = await Store.open(
        db_url, KEK, audit, data_dir=tmp_path / "data", clock=FakeClock(T0 + timedelta(days=1))
    )
    try:
        directory = Directory(store, base_url=BASE_URL)
        pub = minisign.PublicKey.from_text((fixture / "authority.pub").read_bytes())
        await directory.pin_authority(pub, fingerprint=authority_fingerprint(pub), actor="t")
        result = await directory.import_document(
            (fixture / "directory.json").read_bytes(),
            (fixture / "directory.json.minisig").read_bytes(),
            source="fixture",
            actor="cli:t",
        )
        assert result.serial == 1 and result.organisations == 2
        entries = await directory.entries()
        assert sorted((e.org_id, e.town) for e in entries) == [("100001", None), ("100002", None)]
    finally:
        await store.close()


async def test_the_view_is_built_once_while_nothing_stored_changes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await env.store.create_school(name="Hillside", urn="100001", laestab="8010001")
    await env.keys.create("100001")
    await env.pin()
    b = keyset("100002")
    _, data, sig = document(env.authority, [entry(b)], serial=0)
    await env.directory.import_document(data, sig, source="x", actor="t")
    # The view is built in the directory's core part (issue 12 split the service).
    import transfer.directory.service.core as service

    built: list[object] = []
    parsed: list[object] = []
    real_view, real_parse = DirectoryView, DirectoryEntry.model_validate_json

    def counting_view(*args: object, **kwargs: object) -> object:
        built.append(args)
        return real_view(*args, **kwargs)  # type: ignore[arg-type]

    def counting_parse(text: str) -> object:
        parsed.append(text)
        return real_parse(text)

    monkeypatch.setattr(service, "DirectoryView", counting_view)
    monkeypatch.setattr(DirectoryEntry, "model_validate_json", counting_parse)
    views = [await env.directory.view() for _ in range(20)]
    # Issue 16: each package used to rebuild the whole view; now one view serves them all.
    assert len(built) == 1 and all(v is views[0] for v in views)
    assert len(parsed) == 1  # the one stored entry, parsed once for the 20 views
    assert await env.directory.signing_public_key(b.key_id_hex, T0) == b.signing.public_key
    assert len(built) == 1


async def test_a_revocation_applies_to_the_very_next_use_of_a_cached_view(
    env: Env, db_url: str, tmp_path: Path
) -> None:
    """Whoever writes it (this node's directory, another process on the same database, or
    ``handover keys revoke`` on the key files), a revocation applies to the next look-up."""
    await env.pin()
    b = keyset("100002")
    signed = T0 + timedelta(hours=1)
    _, data, sig = document(env.authority, [entry(b)], serial=0)
    await env.directory.import_document(data, sig, source="x", actor="t")
    for _ in range(3):  # the view is cached now
        assert await env.directory.signing_public_key(b.key_id_hex, signed) == b.signing.public_key
    # A new document with the revocation, imported by another process (its own Store and
    # Directory on the same database: nothing in this process is told).
    other_store = await Store.open(
        db_url, KEK, MemoryAudit(), data_dir=tmp_path / "other", clock=env.clock
    )
    try:
        r = Revocation(org_id="100002", key_id=b.key_id_hex, revoked_at=T0, reason="stolen")
        _, data2, sig2 = document(env.authority, [entry(b)], revocations=[r], serial=1)
        await Directory(other_store).import_document(data2, sig2, source="y", actor="t")
    finally:
        await other_store.close()
    with pytest.raises(KeyRevokedError):
        await env.directory.signing_public_key(b.key_id_hex, signed)
    # The node's own key revoked in its key file (as 'handover keys revoke' does).
    await env.store.create_school(name="Hillside", urn="100001", laestab="8010001")
    own = await env.keys.create("100001")
    assert await env.directory.signing_public_key(own.key_id_hex, env.clock.now)
    await env.keys.revoke("100001", key_id=own.key_id_hex, at=env.clock.now)
    with pytest.raises(KeyRevokedError):
        await env.directory.signing_public_key(own.key_id_hex, env.clock.now)
    # A hand-added entry, by this node's own directory, shows at once.
    c = keyset("100003")
    await env.directory.add_local(entry(c, name="Oak"), fingerprint=c.fingerprint, actor="t")
    assert (await env.directory.entry("100003")).name == "Oak"


async def test_the_own_organisations_rows_show_in_the_next_view(
    env: Env, db_url: str, tmp_path: Path
) -> None:
    """The view's one change check also reads the node's organisations: a school renamed or
    added by another process on the same database shows in the very next look-up."""
    from sqlalchemy import update

    from transfer.store.tables import Organisation

    await env.store.create_school(name="Hillside", urn="100001", laestab="8010001")
    await env.keys.create("100001")
    assert (await env.directory.entry("100001")).name == "Hillside"
    assert (await env.directory.entry("100001")).kind == "school"
    other = await Store.open(
        db_url, KEK, MemoryAudit(), data_dir=tmp_path / "other", clock=env.clock
    )
    try:
        async with other.sessions() as s, s.begin():
            await s.execute(
                update(Organisation)
                .where(Organisation.id == "100001")
                .values(name="Hillside Primary")
            )
        await other.create_school(name="Oakfield", urn="100004", laestab="8010004")
    finally:
        await other.close()
    assert (await env.directory.entry("100001")).name == "Hillside Primary"
    await env.keys.create("100004")
    oak = await env.directory.entry("100004")
    assert (oak.name, oak.urn, oak.laestab) == ("Oakfield", "100004", "8010004")
    assert [e.org_id for e in await env.directory.entries()] == ["100001", "100004"]
