"""Key sets: fingerprints, age forms, sealing at rest, rotation and revocation."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from keys import aead, agekeys, bech32, fingerprint, minisign
from keys.keyset import (
    KeyNotYetValidError,
    KeyPolicyError,
    KeyRetiredError,
    KeyRevokedError,
    KeySet,
    KeySetFormatError,
    UnknownKeyError,
    derive_key_id,
    parse_key_id,
    validate_org_id,
)
from keys.sealing import (
    KekProtection,
    KeyFileFormatError,
    KeyUnsealError,
    PassphraseProtection,
    WrongPassphraseError,
    seal_keyset,
    unseal_keyset,
)
from transfer.errors import InputError, IntegrityError, PolicyError

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
ORG = "urn:school:100000"
FAST = {"log2_n": 10, "r": 8, "p": 1}


@pytest.fixture
def keyset() -> KeySet:
    return KeySet.generate(ORG, now=T0)


def _secrets_of(ks: KeySet) -> list[bytes]:
    out = [k.secret for k in ks.decryption_keys()]
    if ks.signing.seed is not None:
        out.append(ks.signing.seed)
    return out


# ------------------------------------------------------------- fingerprints

FP_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$")


def test_crockford_known_values() -> None:
    assert fingerprint.crockford_base32(b"\x00" * 5) == "00000000"
    assert fingerprint.crockford_base32(b"\xff" * 5) == "ZZZZZZZZ"
    assert fingerprint.crockford_base32(bytes.fromhex("0842108421")) == "11111111"
    # 0x00443214c7 = 00000 00001 00010 00011 00100 00101 00110 00111
    assert fingerprint.crockford_base32(bytes.fromhex("00443214c7")) == "01234567"


def test_fingerprint_shape_and_definition(keyset: KeySet) -> None:
    fp = keyset.fingerprint
    assert FP_RE.match(fp), fp
    digest = hashlib.sha256(
        b"handover-org-key-fingerprint-v1\x00ed25519\x00"
        + keyset.signing.public_key
        + b"x25519\x00"
        + keyset.encryption.public_key
    ).digest()
    assert fp.replace("-", "") == fingerprint.crockford_base32(digest[:10])


def test_fingerprint_from_published_forms(keyset: KeySet) -> None:
    pub = minisign.PublicKey.from_text(keyset.minisign_public_key_text())
    assert fingerprint.fingerprint_of_public(keyset.recipient, pub) == keyset.fingerprint


def test_fingerprint_depends_on_both_keys(keyset: KeySet) -> None:
    a, b = keyset.signing.public_key, keyset.encryption.public_key
    assert fingerprint.fingerprint(a, b) != fingerprint.fingerprint(b, a)
    other = KeySet.generate(ORG, now=T0)
    assert fingerprint.fingerprint(a, other.encryption.public_key) != keyset.fingerprint
    assert fingerprint.fingerprint(other.signing.public_key, b) != keyset.fingerprint


def test_fingerprint_as_read_back(keyset: KeySet) -> None:
    fp = keyset.fingerprint
    spoken = fp.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert fingerprint.fingerprints_match(fp, spoken)
    assert fingerprint.normalise(spoken) == fp
    different = fp[:-1] + ("0" if fp[-1] != "0" else "1")
    assert not fingerprint.fingerprints_match(fp, different)
    with pytest.raises(InputError, match="16 letters"):
        fingerprint.normalise("ABCD-EFGH")
    with pytest.raises(InputError):
        fingerprint.normalise("ABCD-EFGH-JKMN-PQRU")  # U is not Crockford


# --------------------------------------------------------------- age forms


def test_age_recipient_and_identity(keyset: KeySet) -> None:
    key = keyset.encryption
    recipient = keyset.recipient
    assert recipient.startswith("age1") and recipient == recipient.lower()
    assert bech32.decode(recipient) == ("age", key.public_key)
    identity = agekeys.encode_identity(key.secret)
    assert identity.startswith("AGE-SECRET-KEY-1") and identity == identity.upper()
    assert agekeys.decode_identity(identity) == key.secret
    assert agekeys.decode_recipient(recipient) == key.public_key
    # public key really is X25519(secret), computed independently
    independent = X25519PrivateKey.from_private_bytes(key.secret).public_key().public_bytes_raw()
    assert independent == key.public_key


def test_age_string_errors_do_not_echo_secrets(keyset: KeySet) -> None:
    identity = agekeys.encode_identity(keyset.encryption.secret)
    damaged = identity[:-1] + ("Q" if identity[-1] != "Q" else "P")
    with pytest.raises(agekeys.AgeKeyError) as info:
        agekeys.decode_identity(damaged)
    assert identity[16:40] not in str(info.value)
    with pytest.raises(agekeys.AgeKeyError, match="upper case"):
        agekeys.decode_identity(identity.lower())
    with pytest.raises(agekeys.AgeKeyError, match="AGE-SECRET-KEY-1"):
        agekeys.decode_identity(keyset.recipient.upper())
    with pytest.raises(agekeys.AgeKeyError, match="age1"):
        agekeys.decode_recipient(identity.lower())
    with pytest.raises(agekeys.AgeKeyError, match="lower case"):
        agekeys.decode_recipient(keyset.recipient.upper())


def test_identity_file_round_trip(keyset: KeySet) -> None:
    rotated = keyset.rotate(now=T0 + timedelta(days=1))
    text = agekeys.format_identity_file(
        (k.secret, k.public_key, k.created_at, "note") for k in rotated.decryption_keys()
    )
    assert text.count("AGE-SECRET-KEY-1") == 2
    assert f"# public key: {rotated.recipient}" in text
    assert agekeys.parse_identity_file(text) == [k.secret for k in rotated.decryption_keys()]
    with pytest.raises(agekeys.AgeKeyError, match="line 2"):
        agekeys.parse_identity_file("# c\nAGE-SECRET-KEY-1NOPE\n")
    with pytest.raises(agekeys.AgeKeyError, match="no AGE-SECRET-KEY"):
        agekeys.parse_identity_file("# only a comment\n\n")


# ------------------------------------------------------------------ key ids


def test_key_ids(keyset: KeySet) -> None:
    assert keyset.signing.key_id == derive_key_id(keyset.signing.public_key)
    assert keyset.key_id_hex == keyset.signing.key_id[::-1].hex().upper()
    assert parse_key_id(keyset.key_id_hex) == keyset.signing.key_id
    assert parse_key_id(keyset.key_id_hex.lower()) == keyset.signing.key_id
    with pytest.raises(InputError):
        parse_key_id("XYZ")
    pk = keyset.minisign_public_key
    assert minisign.PublicKey.from_text(keyset.minisign_public_key_text()) == pk


def test_org_id_rules() -> None:
    assert validate_org_id("urn:school:100000") == "urn:school:100000"
    assert validate_org_id("agency.police-42_x") == "agency.police-42_x"
    for bad in ["", "../etc", "a/b", " x", "x" * 65, ":x", "é"]:
        with pytest.raises(InputError):
            validate_org_id(bad)


def test_secrets_not_in_repr(keyset: KeySet) -> None:
    text = repr(keyset)
    for secret in _secrets_of(keyset):
        assert secret.hex() not in text
        assert repr(secret) not in text


def test_naive_times_refused(keyset: KeySet) -> None:
    with pytest.raises(InputError, match="time zone"):
        keyset.check_signing_key_valid(keyset.key_id_hex, datetime(2026, 9, 2))
    with pytest.raises(InputError, match="time zone"):
        keyset.revoke(at=datetime(2026, 9, 2))


# ---------------------------------------------------------------- sealing


def test_kek_seal_round_trip(keyset: KeySet) -> None:
    kek = aead.new_key()
    data = seal_keyset(keyset, KekProtection(kek))
    back = unseal_keyset(data, KekProtection(kek), expected_org_id=ORG)
    assert back == keyset
    assert back.signing.seed == keyset.signing.seed
    assert back.encryption.secret == keyset.encryption.secret
    assert back.fingerprint == keyset.fingerprint


def test_sealed_file_holds_no_key_material(keyset: KeySet) -> None:
    data = seal_keyset(keyset, KekProtection(aead.new_key()))
    for secret in _secrets_of(keyset):
        assert base64.b64encode(secret) not in data
        assert secret.hex().encode() not in data
        assert secret not in data
    assert agekeys.encode_identity(keyset.encryption.secret).encode() not in data


def test_wrong_kek_refused(keyset: KeySet) -> None:
    data = seal_keyset(keyset, KekProtection(aead.new_key()))
    with pytest.raises(KeyUnsealError, match="HANDOVER_KEK") as info:
        unseal_keyset(data, KekProtection(aead.new_key()))
    assert isinstance(info.value, IntegrityError)


def test_tampered_file_refused(keyset: KeySet) -> None:
    kek = aead.new_key()
    doc = json.loads(seal_keyset(keyset, KekProtection(kek)))
    sealed = bytearray(base64.b64decode(doc["sealed"]))
    sealed[40] ^= 1
    doc["sealed"] = base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(KeyUnsealError, match="altered"):
        unseal_keyset(json.dumps(doc).encode(), KekProtection(kek))


def test_file_moved_to_another_org_refused(keyset: KeySet) -> None:
    kek = aead.new_key()
    doc = json.loads(seal_keyset(keyset, KekProtection(kek)))
    with pytest.raises(KeyFileFormatError, match="another organisation"):
        unseal_keyset(json.dumps(doc).encode(), KekProtection(kek), expected_org_id="urn:x:2")
    doc["org_id"] = "urn:x:2"  # relabelled to match: the associated data no longer does
    with pytest.raises(KeyUnsealError):
        unseal_keyset(json.dumps(doc).encode(), KekProtection(kek), expected_org_id="urn:x:2")


def test_not_a_key_file() -> None:
    for junk in [b"", b"{}", b"[1]", b'{"format": "other"}', b"\xff\xfe"]:
        with pytest.raises(KeyFileFormatError):
            unseal_keyset(junk, KekProtection(aead.new_key()))


def test_passphrase_round_trip_and_wrong_passphrase(keyset: KeySet) -> None:
    data = seal_keyset(keyset, PassphraseProtection("correct horse battery", **FAST))
    params = json.loads(data)["protection"]
    assert params["kind"] == "passphrase" and params["kdf"] == "scrypt"
    assert params["log2_n"] == 10 and params["r"] == 8 and params["p"] == 1
    assert len(base64.b64decode(params["salt"])) == 16
    back = unseal_keyset(data, PassphraseProtection("correct horse battery"))
    assert back.encryption.secret == keyset.encryption.secret
    with pytest.raises(WrongPassphraseError, match="passphrase is wrong"):
        unseal_keyset(data, PassphraseProtection("correct horse batterY"))
    with pytest.raises(KeyFileFormatError, match="passphrase"):
        unseal_keyset(data, KekProtection(aead.new_key()))
    kek_data = seal_keyset(keyset, KekProtection(aead.new_key()))
    with pytest.raises(KeyFileFormatError, match="key-encryption key"):
        unseal_keyset(kek_data, PassphraseProtection("correct horse battery"))


def test_passphrase_salt_is_fresh_and_params_bound(keyset: KeySet) -> None:
    prot = PassphraseProtection("pw", **FAST)
    a, b = seal_keyset(keyset, prot), seal_keyset(keyset, prot)
    assert json.loads(a)["protection"]["salt"] != json.loads(b)["protection"]["salt"]
    doc = json.loads(a)
    doc["protection"]["log2_n"] = 11  # a different key would be derived; and the AAD binds it
    with pytest.raises(WrongPassphraseError):
        unseal_keyset(json.dumps(doc).encode(), PassphraseProtection("pw"))
    doc["protection"]["log2_n"] = 40  # hostile: refused before any work
    with pytest.raises(KeyFileFormatError, match="out of the accepted range"):
        unseal_keyset(json.dumps(doc).encode(), PassphraseProtection("pw"))
    with pytest.raises(InputError, match="empty"):
        PassphraseProtection("")


def test_passphrase_unicode_normalised(keyset: KeySet) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    data = seal_keyset(keyset, PassphraseProtection(composed, **FAST))
    assert unseal_keyset(data, PassphraseProtection(decomposed)) == keyset


def test_damaged_payload_refused(keyset: KeySet) -> None:
    good = keyset.to_private_dict()
    bad = dict(good, signing=[dict(good["signing"][0], seed=None)])
    with pytest.raises(KeySetFormatError):
        KeySet.from_private_dict(bad)
    other = KeySet.generate(ORG, now=T0)
    mismatched = dict(good, signing=[dict(good["signing"][0], public_key=_b64pk(other))])
    with pytest.raises(KeySetFormatError, match="does not match"):
        KeySet.from_private_dict(mismatched)
    with pytest.raises(KeySetFormatError):
        KeySet.from_private_dict({"version": 1})
    with pytest.raises(KeySetFormatError, match="version"):
        KeySet.from_private_dict(dict(good, version=2))


def _b64pk(ks: KeySet) -> str:
    return base64.b64encode(ks.signing.public_key).decode()


# ------------------------------------------------------ rotation/revocation


def test_rotation_keeps_old_decryption_key(keyset: KeySet) -> None:
    t1 = T0 + timedelta(days=30)
    rotated = keyset.rotate(now=t1)
    assert rotated.recipient != keyset.recipient
    assert rotated.key_id_hex != keyset.key_id_hex
    assert rotated.fingerprint != keyset.fingerprint
    old = rotated.decryption_key_for(keyset.recipient)
    assert old.secret == keyset.encryption.secret
    assert old.retired_at == t1
    assert rotated.decryption_key_for(rotated.recipient).retired_at is None
    assert [k.public_key for k in rotated.decryption_keys()] == [
        rotated.encryption.public_key,
        keyset.encryption.public_key,
    ]
    # the old signing key's secret is dropped; its public half and dates stay
    old_sign = rotated.find_signing_key(keyset.key_id_hex)
    assert old_sign.seed is None and old_sign.retired_at == t1
    kek = aead.new_key()
    back = unseal_keyset(seal_keyset(rotated, KekProtection(kek)), KekProtection(kek))
    assert back.decryption_key_for(keyset.recipient).secret == keyset.encryption.secret
    assert back.find_signing_key(keyset.key_id_hex).seed is None
    old_seed = keyset.signing.seed
    assert old_seed is not None
    assert base64.b64encode(old_seed).decode() not in json.dumps(rotated.to_private_dict())


def test_decryption_key_for_unknown_recipient(keyset: KeySet) -> None:
    other = KeySet.generate("urn:school:2", now=T0)
    with pytest.raises(UnknownKeyError, match="no key for recipient"):
        keyset.decryption_key_for(other.recipient)


def test_signature_dates_against_key_life(keyset: KeySet) -> None:
    kid = keyset.key_id_hex
    assert keyset.check_signing_key_valid(kid, T0 + timedelta(days=400)).key_id_hex == kid
    with pytest.raises(KeyNotYetValidError, match="before then"):
        keyset.check_signing_key_valid(kid, T0 - timedelta(seconds=1))
    t1 = T0 + timedelta(days=10)
    rotated = keyset.rotate(now=t1)
    rotated.check_signing_key_valid(kid, t1 - timedelta(seconds=1))
    rotated.check_signing_key_valid(kid, t1)
    with pytest.raises(KeyRetiredError, match="replaced"):
        rotated.check_signing_key_valid(kid, t1 + timedelta(seconds=1))
    with pytest.raises(UnknownKeyError):
        rotated.check_signing_key_valid(KeySet.generate(ORG, now=T0).key_id_hex, t1)


def test_revocation_of_current_key(keyset: KeySet) -> None:
    kid = keyset.key_id_hex
    revoked_at = T0 + timedelta(days=5, hours=3)
    now = T0 + timedelta(days=7)
    after = keyset.revoke(at=revoked_at, now=now)
    # revoking the current key also rotates
    assert after.key_id_hex != kid
    assert after.recipient != keyset.recipient
    after.decryption_key_for(keyset.recipient)
    # before the revocation time: still good
    after.check_signing_key_valid(kid, revoked_at - timedelta(microseconds=1))
    # at and after: refused, with a message that says so and when
    for at in (revoked_at, revoked_at + timedelta(hours=1)):
        with pytest.raises(KeyRevokedError) as info:
            after.check_signing_key_valid(kid, at)
        msg = str(info.value)
        assert "revoked" in msg and "2026-09-06T11:00:00Z" in msg and kid in msg
        assert isinstance(info.value, PolicyError)
    # the new key is fine
    after.check_signing_key_valid(after.key_id_hex, now)


def test_revocation_of_earlier_key_and_moving_it(keyset: KeySet) -> None:
    t1 = T0 + timedelta(days=10)
    rotated = keyset.rotate(now=t1)
    old = keyset.key_id_hex
    early = T0 + timedelta(days=2)
    revoked = rotated.revoke(old, at=early, now=t1)
    assert revoked.key_id_hex == rotated.key_id_hex  # no rotation for an earlier key
    revoked.check_signing_key_valid(old, early - timedelta(seconds=1))
    with pytest.raises(KeyRevokedError):
        revoked.check_signing_key_valid(old, early + timedelta(days=1))
    with pytest.raises(KeyPolicyError, match="earlier, not later"):
        revoked.revoke(old, at=early + timedelta(days=1), now=t1)
    earlier = revoked.revoke(old, at=early - timedelta(days=1), now=t1)
    with pytest.raises(KeyRevokedError):
        earlier.check_signing_key_valid(old, early - timedelta(hours=1))
    kek = aead.new_key()
    back = unseal_keyset(seal_keyset(earlier, KekProtection(kek)), KekProtection(kek))
    with pytest.raises(KeyRevokedError):
        back.check_signing_key_valid(old, early - timedelta(hours=1))


def test_keyset_sign_and_verify_across_rotation(keyset: KeySet) -> None:
    sig = keyset.sign(b"manifest", trusted_comment="handover-manifest-v1 n=1")
    t1 = T0 + timedelta(days=10)
    rotated = keyset.rotate(now=t1)
    res = rotated.verify(b"manifest", sig, at=T0 + timedelta(days=1))
    assert res.require_context("handover-manifest-v1") == "n=1"
    with pytest.raises(minisign.SignatureError):
        rotated.verify(b"manifesT", sig, at=T0 + timedelta(days=1))
    revoked = rotated.revoke(keyset.key_id_hex, at=T0 + timedelta(hours=1), now=t1)
    with pytest.raises(KeyRevokedError):
        revoked.verify(b"manifest", sig, at=T0 + timedelta(days=1))
    new_sig = rotated.sign(b"m2", trusted_comment="c")
    assert minisign.verify(rotated.minisign_public_key, b"m2", new_sig)


def test_imported_identities(keyset: KeySet) -> None:
    extra = X25519PrivateKey.generate().private_bytes_raw()
    t1 = T0 + timedelta(days=1)
    updated, added = keyset.with_imported_identities([extra, keyset.encryption.secret], now=t1)
    assert added == 1
    assert updated.recipient == keyset.recipient  # current unchanged
    assert updated.decryption_key_for(agekeys.encode_recipient(_pub(extra))).secret == extra
    same, zero = updated.with_imported_identities([extra], now=t1)
    assert zero == 0 and same is updated
    fresh = KeySet.from_identity("urn:school:9", extra, now=t1)
    assert fresh.encryption.secret == extra and fresh.signing.seed is not None


def _pub(secret: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def test_public_summary_has_no_secrets(keyset: KeySet) -> None:
    summary = keyset.rotate(now=T0 + timedelta(days=1)).public_summary()
    text = json.dumps(summary)
    for secret in _secrets_of(keyset):
        assert base64.b64encode(secret).decode() not in text
    assert summary["org_id"] == ORG and len(summary["encryption_keys"]) == 2


def test_policy_errors_are_policy_errors() -> None:
    for cls in (KeyRevokedError, KeyRetiredError, KeyNotYetValidError):
        assert issubclass(cls, KeyPolicyError) and issubclass(cls, PolicyError)


def test_a_fingerprint_is_read_aloud_without_look_alikes() -> None:
    from keys.fingerprint import CROCKFORD, SPOKEN, read_aloud

    assert read_aloud("7kq2 m9xd 0tzc 4hpb") == (
        "seven Kilo Quebec two",
        "Mike nine X-ray Delta",
        "zero Tango Zulu Charlie",
        "four Hotel Papa Bravo",
    )
    # Every character has its own word, and no word is said for two characters.
    assert set(SPOKEN) == set(CROCKFORD) and len(set(SPOKEN.values())) == len(CROCKFORD)
