"""The pickup portal's service on each engine: pickups, sign-in, lock-out, receipts, secrets."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keys.keyset import KeySet
from receivers.portal import tokens
from receivers.portal.service import (
    LinkExpired,
    LinkLocked,
    LinkNotValid,
    LinkRevoked,
    PortalSessionEnded,
    WrongPortalCode,
)
from receivers.portal.tables import PortalPickup, PortalSession
from tests.support.portal import (
    AGENCY_EMAIL,
    CONCERN_TEXT,
    DOCUMENT,
    PortalWorld,
    free_port,
    no_plaintext_under,
    portal_world,
    smtp_server,
)
from tests.unit.auth.support import KEK
from tests.unit.package.support import (
    Parties,
    RawMember,
    make_manifest,
    raw_tar,
    source_members,
)
from transfer.age import AgeNoMatchError, X25519Identity
from transfer.age import decrypt as age_decrypt
from transfer.age import encrypt as age_encrypt
from transfer.config import SmtpSection
from transfer.errors import ConflictError, InputError, IntegrityError, NotFoundError, PolicyError
from transfer.mail import Mailer
from transfer.package.layout import EntrySource, sign_manifest
from transfer.store.permissions import Role


def _token(link: str) -> str:
    return link.split("?t=", 1)[1]


async def _issue(world: PortalWorld, **kw: object) -> tuple[str, str, str]:
    path, _ = world.package()
    issued = await world.portal.create_pickup(
        world.dsl,
        package=path,
        referral_id="ref-1",
        email=AGENCY_EMAIL,
        agency_name="Bristol MASH",
        **kw,  # type: ignore[arg-type]
    )
    assert issued.link is not None and not issued.emailed
    return issued.pickup.id, _token(issued.link), issued.passcode


async def test_full_pickup_records_every_step(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path) as world:
        pickup_id, token, passcode = await _issue(world)
        info = await world.portal.link_info(token)
        assert info.sender_name == "Harbourside Primary" and not info.totp_available
        secret = await world.portal.sign_in(token, passcode=passcode, ip="192.0.2.7")
        visit = await world.portal.visit(secret)
        view = await world.portal.referral(visit, ip="192.0.2.7")
        assert view.form is not None and view.form.value["child"]["forename"] == "Ellie"
        assert [r.title for r in view.records] == [
            "Chronology",
            "People",
            "Concerns — c1",
            "Documents — d1",
        ]
        assert [(d.filename, d.size) for d in view.documents] == [("body-map.pdf", len(DOCUMENT))]
        doc, chunks = await world.portal.download(visit, 0, ip="192.0.2.7")
        pieces = [c async for c in chunks]
        assert b"".join(pieces) == DOCUMENT and len(pieces) > 1
        assert max(len(p) for p in pieces) <= 64 * 1024
        await world.portal.acknowledge(
            visit, name="Sam Jones", agency_reference="MASH-77", ip="192.0.2.7"
        )
        with pytest.raises(ConflictError, match="already acknowledged by Sam Jones"):
            await world.portal.acknowledge(visit, name="X", agency_reference="Y")
        assert world.acks.calls == [
            {
                "referral_id": "ref-1",
                "name": "Sam Jones",
                "reference": "MASH-77",
                "at": world.node.clock.now,
                "via": "portal",
            }
        ]
        shown = await world.portal.get_pickup(world.dsl, pickup_id)
        assert shown.state == "acknowledged" and shown.agency_reference == "MASH-77"
        kinds = [(e.kind, e.ip) for e in shown.events]
        assert kinds == [
            ("created", None),
            ("opened", "192.0.2.7"),
            ("download", "192.0.2.7"),
            ("acknowledged", "192.0.2.7"),
        ]
        assert shown.events[2].what == f"{doc.path} sha256={doc.sha256}"
        assert shown.events[3].who == "Sam Jones"
        actions = world.node.audit.actions()
        for action in ("portal.created", "portal.opened", "portal.download", "portal.acknowledged"):
            assert action in actions
        # Audit details carry ids and addresses, never the referral's content.
        for event in world.node.audit.events:
            if event.action.startswith("portal."):
                assert "Ellie" not in repr(event) and "MASH-77" not in repr(event)


async def test_nothing_readable_is_stored(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path) as world:
        pickup_id, token, passcode = await _issue(world)
        stored = world.portal.directory / f"{pickup_id}.age"
        assert stored.exists() and stored.stat().st_mode & 0o777 == 0o600
        needles = (
            DOCUMENT[:64],
            b"Ellie Marsh",
            CONCERN_TEXT.encode(),
            token.encode(),
            passcode.encode(),
            passcode.replace("-", "").encode(),
        )
        assert no_plaintext_under(tmp_path / "data", *needles) == []
        async with world.node.store.sessions() as s:
            row = await s.get(PortalPickup, pickup_id)
            assert row is not None and row.token_hash != token
            assert row.passcode_hash.startswith("$argon2id$")
        # The stored copy is not the uploaded file: it is re-encrypted to the pickup's own key.
        original = world.packages[0].read_bytes()
        assert (
            hashlib.sha256(original).hexdigest() != hashlib.sha256(stored.read_bytes()).hexdigest()
        )
        # The school's own key does not open it; the link token (with the KEK) does.
        own = [X25519Identity.from_private_bytes(k.secret) for k in world.keyset.decryption_keys()]
        with pytest.raises(AgeNoMatchError):
            age_decrypt(stored.read_bytes(), own)
        assert age_decrypt(original, own)
        secret = await world.portal.sign_in(token, passcode=passcode)
        visit = await world.portal.visit(secret)
        assert (await world.portal.referral(visit)).package_id


async def test_wrong_codes_lock_the_link(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path) as world:
        pickup_id, token, passcode = await _issue(world)
        secret = await world.portal.sign_in(token, passcode=passcode)
        for left in (4, 3, 2, 1):
            with pytest.raises(WrongPortalCode, match=f"{left} more tr"):
                await world.portal.sign_in(token, passcode="000-000-000-000", ip="198.51.100.9")
        # A right code clears the count.
        await world.portal.sign_in(token, passcode=passcode)
        for _ in range(4):
            with pytest.raises(WrongPortalCode):
                await world.portal.sign_in(token, passcode="not a passcode")
        with pytest.raises(LinkLocked):
            await world.portal.sign_in(token, passcode="111-111-111-111")
        with pytest.raises(LinkLocked):
            await world.portal.sign_in(token, passcode=passcode)
        with pytest.raises(LinkLocked):
            await world.portal.link_info(token)
        with pytest.raises(PortalSessionEnded):  # the open session ended too
            await world.portal.visit(secret)
        info = await world.portal.get_pickup(world.dsl, pickup_id)
        assert info.state == "locked"
        assert [e.kind for e in info.events].count("passcode_failed") == 9
        assert world.node.audit.actions().count("portal.locked") == 1
        assert world.node.audit.actions().count("portal.passcode_failed") == 9


async def test_unknown_and_altered_links_are_refused_alike(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path) as world:
        _, token, passcode = await _issue(world)
        altered = token[:-1] + ("A" if token[-1] != "A" else "B")
        errors = []
        for bad in (altered, "x" * 43, "", "ü" * 43, token + "A"):
            with pytest.raises(LinkNotValid) as caught:
                await world.portal.sign_in(bad, passcode=passcode)
            errors.append((caught.value.message, caught.value.http_status))
        assert len(set(errors)) == 1


async def test_expiry_revocation_and_sweep(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path) as world:
        first, token1, code1 = await _issue(world)
        second, token2, code2 = await _issue(world, expires_in_days=2)
        secret = await world.portal.sign_in(token1, passcode=code1)
        revoked = await world.portal.revoke(world.dsl, first)
        assert revoked.state == "revoked" and revoked.events[-1].kind == "revoked"
        assert not (world.portal.directory / f"{first}.age").exists()
        with pytest.raises(LinkRevoked):
            await world.portal.sign_in(token1, passcode=code1)
        with pytest.raises(PortalSessionEnded):
            await world.portal.visit(secret)
        with pytest.raises(ConflictError):
            await world.portal.revoke(world.dsl, first)
        world.node.clock.advance(days=2, seconds=1)
        with pytest.raises(LinkExpired):
            await world.portal.sign_in(token2, passcode=code2)
        assert await world.portal.sweep_expired() == 1
        assert await world.portal.sweep_expired() == 0
        assert not (world.portal.directory / f"{second}.age").exists()
        states = {p.id: p.state for p in await world.portal.list_pickups(world.dsl)}
        assert states == {first: "revoked", second: "expired"}
        assert "portal.revoked" in world.node.audit.actions()


async def test_sessions_end_when_idle(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path) as world:
        _, token, passcode = await _issue(world)
        secret = await world.portal.sign_in(token, passcode=passcode)
        world.node.clock.advance(minutes=29)
        await world.portal.visit(secret)
        world.node.clock.advance(minutes=31)
        with pytest.raises(PortalSessionEnded):
            await world.portal.visit(secret)
        with pytest.raises(PortalSessionEnded):
            await world.portal.visit(secret[:-2] + "zz")
        async with world.node.store.sessions() as s:
            rows = (await s.scalars(PortalSession.__table__.select())).all()
            assert rows and all(secret not in repr(r) for r in rows)


async def test_bad_requests_are_refused_and_nothing_is_kept(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path) as world:
        path, _ = world.package()
        create = world.portal.create_pickup
        cases: list[tuple[dict[str, object], type[Exception], str]] = [
            ({"email": "not an address"}, InputError, "not an e-mail address"),
            ({"email": AGENCY_EMAIL, "expires_in_days": 31}, InputError, "1 to 30 days"),
            ({"email": AGENCY_EMAIL, "referral_id": " "}, InputError, "referral id is required"),
            (
                {"email": AGENCY_EMAIL, "package": tmp_path / "missing.age"},
                InputError,
                "does not exist",
            ),
        ]
        for overrides, error, message in cases:
            args: dict[str, object] = {"package": path, "referral_id": "r", **overrides}
            with pytest.raises(error, match=message):
                await create(world.dsl, **args)  # type: ignore[arg-type]
        other, _ = world.package(to_self=False)
        with pytest.raises(InputError, match="not encrypted to your organisation's key"):
            await create(world.dsl, package=other, referral_id="r", email=AGENCY_EMAIL)
        leaver, _ = world.package(kind="leaver_file")
        with pytest.raises(InputError, match="only a referral package"):
            await create(world.dsl, package=leaver, referral_id="r", email=AGENCY_EMAIL)
        damaged = tmp_path / "damaged.age"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        damaged.write_bytes(bytes(data))
        with pytest.raises(IntegrityError):
            await create(world.dsl, package=damaged, referral_id="r", email=AGENCY_EMAIL)
        staff = await world.node.person("teacher", [Role.STAFF])
        teacher = await world.node.store.actor_for(staff.staff.id)
        with pytest.raises(PolicyError):
            await create(teacher, package=path, referral_id="r", email=AGENCY_EMAIL)
        assert world.node.events("portal.created")[-1].outcome == "refused"
        with pytest.raises(PolicyError):
            await world.portal.list_pickups(teacher)
        assert await world.portal.list_pickups(world.dsl) == []
        assert [p.name for p in world.portal.directory.iterdir()] == []
        with pytest.raises(NotFoundError):
            await world.portal.revoke(world.dsl, "no-such-pickup")


async def test_an_altered_document_never_arrives_whole(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path) as world:
        pickup_id, token, passcode = await _issue(world)
        visit = await world.portal.visit(await world.portal.sign_in(token, passcode=passcode))
        doc, chunks = await world.portal.download(visit, 0)
        assert b"".join([c async for c in chunks]) == DOCUMENT
        with pytest.raises(NotFoundError):
            await world.portal.download(visit, 1)
        # Replace the stored package with one, signed by the school, whose document's
        # last byte differs from the SHA-256 in the manifest.
        agency = KeySet.generate("mash-bristol", now=datetime(2026, 1, 1, tzinfo=UTC))
        entries = [
            EntrySource.from_json("records/referral.json", {"a": 1}),
            EntrySource.from_bytes(doc.path, DOCUMENT),
        ]
        manifest = make_manifest(Parties(world.keyset, agency), entries).model_copy(
            update={"created_at": datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)}
        )
        data, sig = sign_manifest(manifest, world.keyset.minisign_secret_key())
        head = [RawMember("manifest.json", data), RawMember("manifest.json.minisig", sig.encode())]
        members = head + source_members(entries)
        members[-1] = RawMember(doc.path, DOCUMENT[:-1] + bytes([DOCUMENT[-1] ^ 1]))
        async with world.node.store.sessions() as s:
            row = await s.get(PortalPickup, pickup_id)
            assert row is not None and row.identity_sealed is not None
        identity = X25519Identity.from_private_bytes(
            tokens.unseal_identity(
                KEK, token, purpose="pickup", record_id=pickup_id, sealed=row.identity_sealed
            )
        )
        stored = world.portal.directory / f"{pickup_id}.age"
        stored.write_bytes(age_encrypt(raw_tar(members), [identity.recipient]))
        _, chunks = await world.portal.download(visit, 0)
        received = b""
        with pytest.raises(IntegrityError, match="does not match its SHA-256"):
            async for piece in chunks:
                received += piece
        assert 0 < len(received) < len(DOCUMENT)
        assert world.node.audit.actions().count("portal.download") == 1


async def test_link_is_emailed_through_a_real_smtp_server(db_url: str, tmp_path: Path) -> None:
    with smtp_server() as (inbox, port):
        async with portal_world(db_url, tmp_path, smtp_port=port, inbox=inbox) as world:
            path, _ = world.package()
            issued = await world.portal.create_pickup(
                world.dsl, package=path, referral_id="ref-9", email=AGENCY_EMAIL
            )
            assert issued.emailed and issued.link is None and issued.mail_problem is None
            assert len(inbox.messages) == 1
            message = inbox.messages[0]
            assert message["To"] == AGENCY_EMAIL
            assert message["Subject"] == "Referral from Harbourside Primary"
            body = str(message.get_payload(decode=True))
            assert issued.passcode not in body and issued.passcode.replace("-", "") not in body
            token = _token(inbox.link())
            assert inbox.link().startswith("https://node.example.org/portal/open?t=")
            assert await world.portal.sign_in(token, passcode=issued.passcode)
            assert [e.kind for e in issued.pickup.events] == ["created", "emailed"]
            # With no SMTP server listening, the DSL is shown the link and why.
            world.portal.mailer = Mailer(
                SmtpSection(host="127.0.0.1", port=free_port(), starttls=False, timeout_seconds=2)
            )
            issued = await world.portal.create_pickup(
                world.dsl, package=path, referral_id="ref-9", email=AGENCY_EMAIL
            )
            assert not issued.emailed and issued.link and issued.mail_problem
