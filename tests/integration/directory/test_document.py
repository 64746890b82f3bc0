"""The directory document (pure): signing, every import refusal, entries, the key view."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import timedelta

import pytest

from keys import minisign
from keys.keyset import KeyNotYetValidError, KeyRetiredError, KeyRevokedError
from schemas.directory import DirectoryEntry, Revocation
from tests.integration.directory.support import REPO, T0, document, entry, keyset
from tests.unit.package.support import Parties, make_manifest, sample_entries
from transfer.directory.document import (
    DirectoryExpiredError,
    DirectoryFormatError,
    DirectoryRollbackError,
    DirectorySignatureError,
    DirectoryView,
    SerialConflictError,
    WrongAuthorityError,
    add_organisation,
    add_revocation,
    authority_fingerprint,
    authority_secret_key_text,
    document_bytes,
    entry_from_keyset,
    parse_authority_secret_key,
    parse_document,
    parse_entry,
    revocations_from_keyset,
    trusted_comment,
    verify_document,
)
from transfer.errors import ConflictError, InputError, PolicyError
from transfer.package.errors import UnknownSenderError
from transfer.package.layout import read_package_tar, sign_manifest, write_package_tar

AUTHORITY = minisign.SecretKey.generate()


def test_signed_document_verifies_and_is_canonical() -> None:
    a, b = keyset("100001"), keyset("100002")
    doc, data, sig = document(AUTHORITY, [entry(b), entry(a, "Hillside Primary")])
    assert doc.serial == 1 and doc.authority.key_id == AUTHORITY.key_id_hex
    assert [e.org_id for e in doc.organisations] == ["100001", "100002"]  # sorted
    assert data == document_bytes(doc) and not data.endswith(b"\n")
    assert minisign.Signature.from_text(sig).trusted_comment == trusted_comment(1)
    got = verify_document(data, sig, authority=AUTHORITY.public_key, now=T0)
    assert got.document == doc and not got.unchanged
    # Same document again: accepted as "unchanged".
    again = verify_document(
        data, sig, authority=AUTHORITY.public_key, now=T0, held_serial=1, held_bytes=data
    )
    assert again.unchanged


def test_altered_document_is_refused() -> None:
    _, data, sig = document(AUTHORITY, [entry(keyset("100001"))])
    altered = data.replace(b"Riverside", b"Rivershed")
    with pytest.raises(DirectorySignatureError, match="does not match its signature"):
        verify_document(altered, sig, authority=AUTHORITY.public_key, now=T0)


def test_other_authority_is_refused_naming_both_keys() -> None:
    other = minisign.SecretKey.generate()
    _, data, sig = document(other, [entry(keyset("100001"))])
    with pytest.raises(WrongAuthorityError) as err:
        verify_document(data, sig, authority=AUTHORITY.public_key, now=T0)
    assert other.key_id_hex in str(err.value) and AUTHORITY.key_id_hex in str(err.value)
    assert authority_fingerprint(AUTHORITY.public_key) in str(err.value)


def test_a_signature_for_another_purpose_is_refused() -> None:
    _, data, _ = document(AUTHORITY, [])
    receipt_sig = minisign.sign(AUTHORITY, data, trusted_comment="handover-receipt-v1 x")
    with pytest.raises(DirectorySignatureError, match="not made for a directory"):
        verify_document(data, receipt_sig, authority=AUTHORITY.public_key, now=T0)
    wrong_serial = minisign.sign(AUTHORITY, data, trusted_comment=trusted_comment(7))
    with pytest.raises(DirectorySignatureError, match="serial 7"):
        verify_document(data, wrong_serial, authority=AUTHORITY.public_key, now=T0)


def test_rollback_and_serial_conflict_are_refused() -> None:
    _, old, old_sig = document(AUTHORITY, [], serial=0)
    _, new, new_sig = document(AUTHORITY, [entry(keyset("100001"))], serial=1)
    verify_document(
        new, new_sig, authority=AUTHORITY.public_key, now=T0, held_serial=1, held_bytes=old
    )  # 2 > 1: fine
    with pytest.raises(DirectoryRollbackError, match="serial 1, older than serial 2"):
        verify_document(
            old, old_sig, authority=AUTHORITY.public_key, now=T0, held_serial=2, held_bytes=new
        )
    _, other, other_sig = document(AUTHORITY, [entry(keyset("100009"))], serial=1)
    with pytest.raises(SerialConflictError):
        verify_document(
            other, other_sig, authority=AUTHORITY.public_key, now=T0, held_serial=2, held_bytes=new
        )


def test_expired_document_is_refused_after_the_grace_period() -> None:
    doc, data, sig = document(AUTHORITY, [], days=30)
    late = doc.next_update + timedelta(days=6)
    verify_document(data, sig, authority=AUTHORITY.public_key, now=late)  # within grace
    with pytest.raises(DirectoryExpiredError, match="expired"):
        verify_document(data, sig, authority=AUTHORITY.public_key, now=late + timedelta(days=2))


def test_malformed_documents_are_refused() -> None:
    _, data, _sig = document(AUTHORITY, [])
    with pytest.raises(DirectoryFormatError, match="malformed"):
        verify_document(data, "not a signature", authority=AUTHORITY.public_key, now=T0)
    pretty = json.dumps(json.loads(data), indent=2).encode()
    pretty_sig = minisign.sign(AUTHORITY, pretty, trusted_comment=trusted_comment(1))
    with pytest.raises(DirectoryFormatError, match="canonical"):
        verify_document(pretty, pretty_sig, authority=AUTHORITY.public_key, now=T0)
    with pytest.raises(DirectoryFormatError, match="not a directory"):
        parse_document(b'{"type":"handover.receipt"}')
    with pytest.raises(DirectoryFormatError, match="twice"):
        parse_document(b'{"type":"handover.directory","type":"handover.directory"}')
    e = entry(keyset("100001"))
    doc = parse_document(data)
    dup = doc.model_copy(update={"organisations": (e, e)})
    with pytest.raises(DirectoryFormatError, match="listed twice"):
        parse_document(document_bytes(dup))


def test_entries_check_their_own_fingerprint_and_key_id() -> None:
    a, b = keyset("100001"), keyset("100002")
    good = entry(a).model_dump(mode="json")
    assert parse_entry(json.dumps(good).encode()) == entry(a)
    swapped = {**good, "recipient": b.recipient}  # fingerprint no longer matches the keys
    with pytest.raises(DirectoryFormatError, match="fingerprint"):
        parse_entry(json.dumps(swapped).encode())
    other_key = {**good, "signing_key": b.minisign_public_key.to_base64()}
    with pytest.raises(DirectoryFormatError, match="key_id"):
        parse_entry(json.dumps(other_key).encode())
    with pytest.raises(DirectoryFormatError, match="kind"):
        parse_entry(json.dumps({**good, "kind": "bakery"}).encode())


def test_add_organisation_and_revocation_rules() -> None:
    a = keyset("100001")
    doc, _, _ = document(AUTHORITY, [entry(a)])
    with pytest.raises(ConflictError, match="--replace"):
        add_organisation(doc, entry(a))
    rotated = a.rotate(now=T0 + timedelta(days=1))
    replaced = add_organisation(doc, entry(rotated), replace=True)
    assert replaced.organisations[0].key_id == rotated.key_id_hex
    assert replaced.organisations[0].previous_keys[0].key_id == a.key_id_hex
    r = Revocation(
        org_id="100001",
        key_id=a.key_id_hex,
        revoked_at=T0 + timedelta(hours=5),
        reason="laptop stolen",
    )
    revoked = add_revocation(replaced, r)
    earlier = add_revocation(revoked, r.model_copy(update={"revoked_at": T0}))
    assert earlier.revocations[0].revoked_at == T0
    with pytest.raises(PolicyError, match="earlier, not later"):
        add_revocation(earlier, r)
    with pytest.raises(InputError, match="not one of 100001's signing keys"):
        add_revocation(doc, r.model_copy(update={"key_id": "0123456789ABCDEF"}))
    with pytest.raises(InputError, match="not in the directory"):
        add_revocation(doc, r.model_copy(update={"org_id": "100002"}))


def test_authority_secret_key_file_round_trips_and_refuses_passphrase_keys() -> None:
    text = authority_secret_key_text(AUTHORITY)
    back = parse_authority_secret_key(text)
    assert back.key_id == AUTHORITY.key_id and back.public_key.matches(AUTHORITY.public_key)
    lines = text.splitlines()
    import base64

    raw = bytearray(base64.b64decode(lines[1]))
    raw[2:4] = b"Sc"
    with pytest.raises(InputError, match="passphrase"):
        parse_authority_secret_key(lines[0] + "\n" + base64.b64encode(bytes(raw)).decode())
    raw[2:4] = b"\x00\x00"
    raw[70] ^= 1  # a bit of the seed: no longer matches the public half
    with pytest.raises(InputError, match="damaged"):
        parse_authority_secret_key(lines[0] + "\n" + base64.b64encode(bytes(raw)).decode())
    with pytest.raises(InputError, match="not a minisign secret key"):
        parse_authority_secret_key("hello\nworld\n")


# ------------------------------------------------------------------ the key view


def test_view_honours_revocation_time_rotation_and_validity() -> None:
    a = keyset("100001")
    rotated_at = T0 + timedelta(days=10)
    a2 = a.rotate(now=rotated_at)
    e = entry(a2)
    old, new = a.key_id_hex, a2.key_id_hex
    revoked_at = T0 + timedelta(days=5)
    view = DirectoryView(
        [e], [Revocation(org_id="100001", key_id=old, revoked_at=revoked_at, reason="stolen")]
    )
    # Before the revocation: the old key stands.
    key = view.signing_key("100001", old, revoked_at - timedelta(seconds=1))
    assert key.key == a.signing.public_key
    # At and after it: refused, and the message names the organisation, key and time.
    with pytest.raises(KeyRevokedError) as err:
        view.signing_key("100001", old, revoked_at)
    msg = str(err.value)
    assert "revoked" in msg and old in msg and "Riverside Academy (100001)" in msg
    assert "2026-09-06T08:00:00Z" in msg and "stolen" in msg
    # The new key: valid from the rotation on, not before.
    assert view.signing_key(None, new.lower(), rotated_at).key == a2.signing.public_key
    with pytest.raises(KeyNotYetValidError):
        view.signing_key("100001", new, rotated_at - timedelta(seconds=1))
    # An old key after it was replaced (not revoked): refused too.
    view2 = DirectoryView([e])
    with pytest.raises(KeyRetiredError):
        view2.signing_key("100001", old, rotated_at + timedelta(seconds=1))
    # Another organisation's key, or a key nobody has: unknown sender.
    with pytest.raises(UnknownSenderError):
        view.signing_key("100002", new, rotated_at)
    with pytest.raises(UnknownSenderError):
        view.signing_key(None, "0123456789ABCDEF", rotated_at)


def test_keyset_revocations_carry_into_the_view() -> None:
    a = keyset("100001")
    revoked = a.revoke(at=T0 + timedelta(days=2), now=T0 + timedelta(days=3))
    view = DirectoryView([entry(revoked)], revocations_from_keyset(revoked))
    with pytest.raises(KeyRevokedError):
        view.signing_key("100001", a.key_id_hex, T0 + timedelta(days=2))
    view.signing_key("100001", a.key_id_hex, T0 + timedelta(days=1))


def test_view_is_the_sender_keys_of_a_real_package() -> None:
    a, b = keyset("100001"), keyset("100002")
    p = Parties(sender=a, recipient=b)
    manifest = make_manifest(p, sample_entries())  # created 2026-11-20T09:30Z
    data, sig = sign_manifest(manifest, a.minisign_secret_key())
    plain = io.BytesIO()
    write_package_tar(plain, manifest, data, sig, sample_entries())
    ok = DirectoryView([entry(a), entry(b)])
    plain.seek(0)
    assert read_package_tar(plain, sender_keys=ok, addressee=None).manifest == manifest
    # Revoked before the manifest was signed: the package is refused, saying why.
    revoked = DirectoryView(
        [entry(a), entry(b)],
        [
            Revocation(
                org_id="100001",
                key_id=a.key_id_hex,
                revoked_at=manifest.created_at,
                reason="key compromised",
            )
        ],
    )
    plain.seek(0)
    with pytest.raises(KeyRevokedError, match="revoked at 2026-11-20T09:30:00Z"):
        read_package_tar(plain, sender_keys=revoked, addressee=None)


def test_entry_validation_refuses_a_key_claimed_by_two_organisations() -> None:
    a = keyset("100001")
    e = entry(a)
    twin = DirectoryEntry.model_validate({**e.model_dump(), "org_id": "100002"})
    doc, _, _ = document(AUTHORITY, [e])
    bad = doc.model_copy(update={"organisations": (e, twin)})
    with pytest.raises(DirectoryFormatError, match="listed for both"):
        parse_document(document_bytes(bad))


def test_document_module_is_pure() -> None:
    code = (
        "import sys\n"
        "import schemas.directory, transfer.directory, transfer.directory.document\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'sqlalchemy'}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO)},
        check=True,
        timeout=60,
    )
    assert res.stdout.strip() == "[]"


# ------------------------------------------------------------------ towns

BEFORE_TOWNS = REPO / "tests" / "assets" / "directory-before-towns"


def test_a_directory_signed_before_towns_still_verifies_and_keeps_its_bytes() -> None:
    """A directory signed by the code of before ``town`` existed (made by the script beside
    it): it verifies, its entries have no town, and its canonical bytes are unchanged."""
    data = (BEFORE_TOWNS / "directory.json").read_bytes()
    sig = (BEFORE_TOWNS / "directory.json.minisig").read_bytes()
    pub = minisign.PublicKey.from_text((BEFORE_TOWNS / "authority.pub").read_bytes())
    assert b"town" not in data
    got = verify_document(data, sig, authority=pub, now=T0)
    assert [(e.name, e.town) for e in got.document.organisations] == [
        ("Hillside Primary", None),
        ("Riverside Academy", None),
    ]
    assert document_bytes(got.document) == data


def test_a_town_is_covered_by_the_authoritys_signature() -> None:
    ks = keyset("100001")
    with_town = entry_from_keyset(ks, name="Riverside Academy", kind="school", town="Yate")
    doc, data, sig = document(AUTHORITY, [with_town])
    assert b'"town":"Yate"' in data and doc.organisations[0].town == "Yate"
    assert verify_document(data, sig, authority=AUTHORITY.public_key, now=T0).document == doc
    altered = data.replace(b'"town":"Yate"', b'"town":"Bath"')
    with pytest.raises(DirectorySignatureError, match="does not match its signature"):
        verify_document(altered, sig, authority=AUTHORITY.public_key, now=T0)
    # Taking the town out is an alteration too.
    removed = data.replace(b',"town":"Yate"', b"")
    assert removed != data
    with pytest.raises(DirectorySignatureError, match="does not match its signature"):
        verify_document(removed, sig, authority=AUTHORITY.public_key, now=T0)


@pytest.mark.parametrize(
    ("town", "problem"),
    [
        ("Yate\u202eetaY", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("Yate\nBath", "U+000A"),
        ("Y" * 101, "at most 100"),
        ("", "at least 1"),
    ],
)
def test_a_town_is_checked_like_the_other_text_fields(town: str, problem: str) -> None:
    with pytest.raises(InputError, match=re.escape(problem)) as caught:
        entry_from_keyset(keyset("100001"), name="Riverside Academy", kind="school", town=town)
    assert "town" in caught.value.message
    raw = json.loads(entry(keyset("100002")).model_dump_json())
    raw["town"] = town
    with pytest.raises(DirectoryFormatError, match="town"):
        parse_entry(json.dumps(raw).encode())
