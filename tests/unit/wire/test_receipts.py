"""Signed receipts: the model's rules per kind, signing, verification and every refusal."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from keys import minisign
from keys.keyset import KeySet
from schemas.manifest import canonical_json
from schemas.receipt import ReceiptActor, ReceiptBody, ReceiptDecodeError
from transfer.errors import InputError, IntegrityError
from transfer.receipts import (
    RECEIPT_CONTEXT,
    ReceiptError,
    ReceiptFormatError,
    SignedReceipt,
    receipt_trusted_comment,
    sign_receipt,
    verify_receipt,
)

SENDER = "urn:school:100001"
RECEIVER = "urn:school:100002"
PACKAGE = UUID("0b6c2f7e-9a1d-4c1b-8d2e-3f4a5b6c7d8e")
CIPHERTEXT = hashlib.sha256(b"the ciphertext").hexdigest()
MANIFEST = hashlib.sha256(b"the manifest").hexdigest()
ISSUED = datetime(2026, 9, 14, 10, 30, tzinfo=UTC)
DSL = ReceiptActor(name="Sam Patel", role="dsl")


@pytest.fixture(scope="module")
def receiver_keys() -> KeySet:
    return KeySet.generate(RECEIVER)


def _fields(keys: KeySet, kind: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "receipt_id": UUID("5f0c7a52-1b43-4b0e-9a55-0d9b7c1e2f3a"),
        "kind": kind,
        "package_id": PACKAGE,
        "package_kind": "leaver_file",
        "sender_org_id": SENDER,
        "receiver_org_id": keys.org_id,
        "receiver_key_id": keys.key_id_hex,
        "ciphertext_sha256": CIPHERTEXT,
        "ciphertext_size": 123_456,
        "issued_at": ISSUED,
    }
    if kind != "delivered":
        base["acted_by"] = DSL
    if kind == "accepted":
        base["manifest_sha256"] = MANIFEST
    if kind == "rejected":
        base["reason"] = "This pupil has not joined our school."
    base.update(extra)
    return base


def _body(keys: KeySet, kind: str, **extra: Any) -> ReceiptBody:
    return ReceiptBody(**_fields(keys, kind, **extra))


# ----------------------------------------------------------------- the model


@pytest.mark.parametrize("kind", ["delivered", "viewed", "accepted", "rejected"])
def test_each_kind_signs_and_verifies(receiver_keys: KeySet, kind: str) -> None:
    signed = sign_receipt(_body(receiver_keys, kind), receiver_keys)
    assert signed.body_bytes == signed.body.canonical_bytes()
    verified = verify_receipt(
        signed.to_json(),
        public_key=receiver_keys.minisign_public_key,
        package_id=PACKAGE,
        ciphertext_sha256=CIPHERTEXT,
        receiver_org_id=RECEIVER,
    )
    assert verified == signed
    sig = minisign.Signature.from_text(signed.signature_text)
    assert sig.trusted_comment == f"handover-receipt-v1 {kind} {PACKAGE}"


def test_canonical_bytes_are_sorted_compact_utc(receiver_keys: KeySet) -> None:
    body = _body(
        receiver_keys,
        "accepted",
        issued_at=datetime(2026, 9, 14, 11, 30, tzinfo=timezone(timedelta(hours=1))),
        reference="MASH-2026-0042",
    )
    raw = json.loads(body.canonical_bytes())
    assert list(raw) == sorted(raw)
    assert raw["issued_at"] == "2026-09-14T10:30:00Z"
    assert raw["type"] == "handover.receipt" and raw["version"] == 1
    assert raw["acted_by"] == {"name": "Sam Patel", "role": "dsl"}
    assert raw["reference"] == "MASH-2026-0042"
    assert b" " not in body.canonical_bytes().replace(b"Sam Patel", b"")
    assert ReceiptBody.from_bytes(body.canonical_bytes()) == body


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("delivered", {"acted_by": DSL}, "has no acted_by"),
        ("delivered", {"reason": "no"}, "no reason"),
        ("delivered", {"manifest_sha256": MANIFEST}, "no manifest_sha256"),
        ("delivered", {"reference": "X1"}, "no reference"),
        ("viewed", {"acted_by": None}, "must name the person"),
        ("viewed", {"manifest_sha256": MANIFEST}, "no manifest_sha256"),
        ("viewed", {"reason": "no"}, "no reason"),
        ("viewed", {"reference": "X1"}, "no reference"),
        ("accepted", {"manifest_sha256": None}, "must give the manifest's SHA-256"),
        ("accepted", {"acted_by": None}, "must name the person"),
        ("accepted", {"reason": "fine"}, "no reason"),
        ("accepted", {"reference": "x" * 101}, "at most 100"),
        ("accepted", {"reference": "   "}, "must not be blank"),
        ("rejected", {"reason": None}, "must give a reason"),
        ("rejected", {"reason": ""}, "at least 1"),
        ("rejected", {"reason": " \n "}, "must not be blank"),
        ("rejected", {"reason": "x" * 2001}, "at most 2000"),
        ("rejected", {"acted_by": None}, "must name the person"),
        ("rejected", {"manifest_sha256": MANIFEST}, "no manifest_sha256"),
        ("accepted", {"manifest_sha256": MANIFEST.upper()}, "pattern"),
        ("delivered", {"ciphertext_sha256": "abc"}, "pattern"),
        ("delivered", {"ciphertext_size": -1}, "greater than or equal"),
        ("delivered", {"receiver_key_id": "abcdef0123456789"}, "pattern"),
        ("delivered", {"sender_org_id": "bad org"}, "pattern"),
        ("delivered", {"issued_at": datetime(2026, 9, 14)}, "timezone"),
        ("delivered", {"kind": "opened"}, "Input should be"),
        ("delivered", {"package_kind": "parcel"}, "Input should be"),
        ("delivered", {"version": 2}, "Input should be 1"),
        ("delivered", {"type": "handover.manifest"}, "Input should be 'handover.receipt'"),
        ("delivered", {"surprise": 1}, "Extra inputs"),
        ("viewed", {"acted_by": {"name": "", "role": "dsl"}}, "at least 1"),
        ("delivered", {"checkpoint": "x" * 8193}, "at most 8192"),
    ],
)
def test_fields_required_and_refused_per_kind(
    receiver_keys: KeySet, kind: str, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ReceiptBody(**{**_fields(receiver_keys, kind), **change})


def test_reference_and_checkpoint_are_allowed_where_documented(receiver_keys: KeySet) -> None:
    _body(receiver_keys, "accepted", reference="x" * 100)
    _body(receiver_keys, "rejected", reference="MASH-1")
    _body(receiver_keys, "delivered", checkpoint="handover.example/log\n42\nabc=\n\n- sig\n")


def test_from_bytes_refuses_non_canonical_and_non_receipts(receiver_keys: KeySet) -> None:
    data = _body(receiver_keys, "delivered").canonical_bytes()
    raw = json.loads(data)
    pretty = json.dumps(raw, indent=1).encode()
    cases = [
        (pretty, "not in canonical form"),
        (data.replace(b'Z"', b'+00:00"'), "not in canonical form"),
        (b"\xff" + data, "not UTF-8"),
        (data[:-1], "not valid JSON"),
        (data[:-1] + b',"kind":"viewed"}', "appears twice"),
        (b"[]", "not a JSON object"),
        (canonical_json({**raw, "type": "handover.manifest"}), "it is not a receipt"),
        (canonical_json({**raw, "ciphertext_size": "12"}), "not in canonical form"),
        (canonical_json({**raw, "ciphertext_size": "twelve"}), "ciphertext_size"),
        (data.replace(b'"ciphertext_size":123456', b'"ciphertext_size":NaN'), "NaN"),
    ]
    for bad, message in cases:
        with pytest.raises(ReceiptDecodeError, match=message):
            ReceiptBody.from_bytes(bad)


# --------------------------------------------------------------- the wire form


def test_wire_form_round_trip(receiver_keys: KeySet) -> None:
    signed = sign_receipt(_body(receiver_keys, "rejected", reference="LADO-7"), receiver_keys)
    wire = json.loads(signed.to_json())
    assert set(wire) == {"receipt", "signature"}
    assert canonical_json(wire["receipt"]) == signed.body_bytes
    assert SignedReceipt.from_json(signed.to_json()) == signed
    assert SignedReceipt.from_dict(signed.to_dict()) == signed
    # Key order on the wire does not matter: the signed bytes are re-derived canonically.
    shuffled = json.dumps(
        {"signature": wire["signature"], "receipt": dict(reversed(list(wire["receipt"].items())))}
    ).encode()
    assert SignedReceipt.from_json(shuffled) == signed


def test_wire_form_refusals(receiver_keys: KeySet) -> None:
    signed = sign_receipt(_body(receiver_keys, "delivered"), receiver_keys)
    wire = signed.to_dict()
    cases: list[tuple[bytes, str]] = [
        (b"not json", "not valid JSON"),
        (b"\xfe", "not valid JSON"),
        (json.dumps([wire]).encode(), 'exactly "receipt" and "signature"'),
        (json.dumps({"receipt": wire["receipt"]}).encode(), 'exactly "receipt" and "signature"'),
        (json.dumps({**wire, "extra": 1}).encode(), 'exactly "receipt" and "signature"'),
        (json.dumps({**wire, "signature": 5}).encode(), "minisign text"),
        (json.dumps({**wire, "signature": "hello"}).encode(), "signature is malformed"),
        (
            json.dumps(
                {**wire, "receipt": {**wire["receipt"], "issued_at": "2026-09-14T10:30:00+00:00"}}
            ).encode(),
            "not in canonical form",
        ),
        (
            json.dumps({**wire, "receipt": {**wire["receipt"], "kind": "accepted"}}).encode(),
            "an accepted receipt must name the person",
        ),
        (
            b'{"receipt": {}, "receipt": {}, "signature": ""}',
            "appears twice",
        ),
        (b" " * (64 * 1024 + 1), "larger than"),
    ]
    for data, message in cases:
        with pytest.raises(ReceiptFormatError, match=message) as info:
            SignedReceipt.from_json(data)
        assert isinstance(info.value, InputError)


# ------------------------------------------------------------------- tampering


def _tampered(signed: SignedReceipt, **changes: Any) -> bytes:
    wire = signed.to_dict()
    wire["receipt"] = {**wire["receipt"], **changes}
    return json.dumps(wire).encode()


@pytest.mark.parametrize(
    "change",
    [
        {"receipt_id": "817ed19c-9140-4d0e-8f4e-1b2a3c4d5e6f"},
        {"package_id": "7a831263-0090-4b1c-9d2e-3f4a5b6c7d8f"},
        {"package_kind": "referral_lado"},
        {"sender_org_id": "urn:school:999999"},
        {"receiver_org_id": "urn:school:999999"},
        {"receiver_key_id": "0123456789ABCDEF"},
        {"ciphertext_sha256": hashlib.sha256(b"other").hexdigest()},
        {"ciphertext_size": 123_457},
        {"manifest_sha256": hashlib.sha256(b"other").hexdigest()},
        {"acted_by": {"name": "Someone Else", "role": "dsl"}},
        {"acted_by": {"name": "Sam Patel", "role": "head_teacher"}},
        {"reference": "MASH-2026-0043"},
        {"reference": None},
        {"issued_at": "2026-09-14T10:30:01Z"},
        {"checkpoint": "another checkpoint"},
        {"checkpoint": None},
    ],
    ids=lambda c: "+".join(f"{k}={str(v)[:12]}" for k, v in c.items()),
)
def test_every_field_is_covered_by_the_signature(
    receiver_keys: KeySet, change: dict[str, Any]
) -> None:
    signed = sign_receipt(
        _body(receiver_keys, "accepted", reference="MASH-2026-0042", checkpoint="checkpoint"),
        receiver_keys,
    )
    tampered = _tampered(signed, **change)
    SignedReceipt.from_json(tampered)  # still a well-formed receipt ...
    with pytest.raises(ReceiptError, match="does not verify") as info:  # ... but not signed
        verify_receipt(tampered, public_key=receiver_keys.minisign_public_key)
    assert isinstance(info.value, IntegrityError) and info.value.http_status == 422


def test_kind_and_reason_are_covered(receiver_keys: KeySet) -> None:
    rejected = sign_receipt(_body(receiver_keys, "rejected"), receiver_keys)
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(
            _tampered(rejected, reason="Another reason."),
            public_key=receiver_keys.minisign_public_key,
        )
    viewed = sign_receipt(_body(receiver_keys, "viewed"), receiver_keys)
    as_rejected = _tampered(viewed, kind="rejected", reason="Made up.")
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(as_rejected, public_key=receiver_keys.minisign_public_key)


def test_tampered_trusted_comment_is_refused(receiver_keys: KeySet) -> None:
    signed = sign_receipt(_body(receiver_keys, "viewed"), receiver_keys)
    text = signed.signature_text.replace(" viewed ", " accepted ")
    assert text != signed.signature_text
    forged = SignedReceipt(signed.body, signed.body_bytes, text)
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(forged, public_key=receiver_keys.minisign_public_key)


def test_body_not_matching_its_bytes_is_refused(receiver_keys: KeySet) -> None:
    signed = sign_receipt(_body(receiver_keys, "delivered"), receiver_keys)
    other = _body(receiver_keys, "delivered", ciphertext_size=1)
    mixed = SignedReceipt(other, signed.body_bytes, signed.signature_text)
    with pytest.raises(ReceiptError, match="does not match its signed bytes"):
        verify_receipt(mixed, public_key=receiver_keys.minisign_public_key)
    junk = SignedReceipt(signed.body, b"{}", signed.signature_text)
    with pytest.raises(ReceiptError, match="malformed"):
        verify_receipt(junk, public_key=receiver_keys.minisign_public_key)


def test_malformed_bytes_are_a_receipt_error(receiver_keys: KeySet) -> None:
    with pytest.raises(ReceiptError, match="malformed"):
        verify_receipt(b"{", public_key=receiver_keys.minisign_public_key)


# ------------------------------------------------------------ keys and context


def test_wrong_key_is_refused(receiver_keys: KeySet) -> None:
    signed = sign_receipt(_body(receiver_keys, "delivered"), receiver_keys)
    stranger = KeySet.generate(RECEIVER)
    with pytest.raises(ReceiptError, match="signed by another key"):
        verify_receipt(signed, public_key=stranger.minisign_public_key)
    # Same key id, different key: the Ed25519 check itself fails.
    impostor = minisign.PublicKey(
        key_id=receiver_keys.minisign_public_key.key_id, key=stranger.minisign_public_key.key
    )
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(signed, public_key=impostor)


def test_a_rotated_out_key_still_verifies_its_old_receipts(receiver_keys: KeySet) -> None:
    signed = sign_receipt(_body(receiver_keys, "delivered"), receiver_keys)
    rotated = receiver_keys.rotate()
    assert rotated.key_id_hex != receiver_keys.key_id_hex
    old_public = rotated.previous_signing[0].minisign_public_key
    assert verify_receipt(signed, public_key=old_public) == signed
    with pytest.raises(ReceiptError, match="signed by another key"):
        verify_receipt(signed, public_key=rotated.minisign_public_key)


def test_manifest_signature_over_the_same_bytes_is_not_a_receipt(receiver_keys: KeySet) -> None:
    body = _body(receiver_keys, "accepted")
    data = body.canonical_bytes()
    manifest_sig = minisign.sign(
        receiver_keys.minisign_secret_key(),
        data,
        trusted_comment=(
            f"handover-manifest-v1 package={PACKAGE} recipient={SENDER} "
            f"sha256={hashlib.sha256(data).hexdigest()}"
        ),
    )
    # The signature is genuine over exactly these bytes ...
    minisign.verify(receiver_keys.minisign_public_key, data, manifest_sig)
    # ... but was made as a manifest signature, so it is no receipt.
    with pytest.raises(ReceiptError, match="not made for this receipt"):
        verify_receipt(
            SignedReceipt(body, data, manifest_sig), public_key=receiver_keys.minisign_public_key
        )


@pytest.mark.parametrize(
    "comment",
    [
        f"handover-receipt-v1 delivered {PACKAGE}",
        "handover-receipt-v1 accepted f0ec545e-eeb0-4cf4-a473-822e2d97c586",
        f"handover-receipt-v1 accepted {PACKAGE} extra",
        f"handover-receipt-v2 accepted {PACKAGE}",
        "handover-receipt-v1",
        "",
    ],
)
def test_a_signature_for_another_step_or_package_is_refused(
    receiver_keys: KeySet, comment: str
) -> None:
    body = _body(receiver_keys, "accepted")
    data = body.canonical_bytes()
    sig = minisign.sign(receiver_keys.minisign_secret_key(), data, trusted_comment=comment)
    with pytest.raises(ReceiptError, match="not made for this receipt"):
        verify_receipt(SignedReceipt(body, data, sig), public_key=receiver_keys.minisign_public_key)


def test_legacy_minisign_signatures_are_refused(receiver_keys: KeySet) -> None:
    signed = sign_receipt(_body(receiver_keys, "delivered"), receiver_keys)
    parsed = minisign.Signature.from_text(signed.signature_text)
    legacy = minisign.Signature(
        algorithm=minisign.LEGACY_SIGNATURE_ALGORITHM,
        key_id=parsed.key_id,
        signature=parsed.signature,
        trusted_comment=parsed.trusted_comment,
        global_signature=parsed.global_signature,
        untrusted_comment=parsed.untrusted_comment,
    ).to_text()
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(
            SignedReceipt(signed.body, signed.body_bytes, legacy),
            public_key=receiver_keys.minisign_public_key,
        )


def test_body_must_name_the_signing_key(receiver_keys: KeySet) -> None:
    """A receipt signed by the right key but naming another key id is refused."""
    body = _body(receiver_keys, "delivered", receiver_key_id="0123456789ABCDEF")
    data = body.canonical_bytes()
    sig = minisign.sign(
        receiver_keys.minisign_secret_key(), data, trusted_comment=receipt_trusted_comment(body)
    )
    with pytest.raises(ReceiptError, match="names signing key 0123456789ABCDEF"):
        verify_receipt(SignedReceipt(body, data, sig), public_key=receiver_keys.minisign_public_key)


def test_expected_package_hash_and_receiver(receiver_keys: KeySet) -> None:
    signed = sign_receipt(_body(receiver_keys, "delivered"), receiver_keys)
    public = receiver_keys.minisign_public_key
    assert verify_receipt(signed, public_key=public, ciphertext_sha256=CIPHERTEXT.upper())
    with pytest.raises(ReceiptError, match=f"is for package {PACKAGE}, not"):
        verify_receipt(signed, public_key=public, package_id=uuid4())
    with pytest.raises(ReceiptError, match="receiver holds different bytes"):
        verify_receipt(
            signed, public_key=public, ciphertext_sha256=hashlib.sha256(b"x").hexdigest()
        )
    with pytest.raises(ReceiptError, match=f"issued by {RECEIVER}, not by urn:school:999999"):
        verify_receipt(signed, public_key=public, receiver_org_id="urn:school:999999")


def test_sign_receipt_refuses_a_body_for_other_keys(receiver_keys: KeySet) -> None:
    with pytest.raises(InputError, match="signed with the keys of"):
        sign_receipt(_body(receiver_keys, "delivered", receiver_org_id=SENDER), receiver_keys)
    with pytest.raises(InputError, match="current signing key is"):
        sign_receipt(
            _body(receiver_keys, "delivered", receiver_key_id="0123456789ABCDEF"), receiver_keys
        )


def test_context_label() -> None:
    assert RECEIPT_CONTEXT == "handover-receipt-v1"
