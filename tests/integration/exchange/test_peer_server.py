"""The peer server on a real socket: signed uploads, resume, idempotent completion, refusals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keys.keyset import KeySet
from tests.integration.exchange.inbox_support import (
    RECEIVER,
    SENDER,
    Rig,
    now_ts,
    receiving_node,
)
from transfer.httpsig import content_digest
from transfer.receipts import SignedReceipt, verify_receipt


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        yield r


async def test_upload_in_chunks_then_complete_gives_a_signed_delivered_receipt(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    built, data = await rig.build(pupil)
    pid = str(built.manifest.package_id)

    status, body, _ = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data))
    assert (status, body) == (201, {"offset": 0, "state": "receiving"})
    status, _, headers = await rig.call("HEAD", f"/peer/v1/packages/{pid}")
    assert status == 204 and headers["Upload-Offset"] == "0"
    await rig.upload(pid, data, chunk=70_000)
    assert (rig.data_dir / "incoming" / f"{pid}.part").stat().st_size == len(data)

    status, body, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 200, body
    receipt = verify_receipt(
        SignedReceipt.from_dict(body["receipt"]),
        public_key=rig.receiver_keys.minisign_public_key,
        package_id=uuid.UUID(pid),
        ciphertext_sha256=hashlib.sha256(data).hexdigest(),
        receiver_org_id=RECEIVER,
    )
    assert receipt.body.kind == "delivered" and receipt.body.sender_org_id == SENDER
    assert receipt.body.ciphertext_size == len(data)
    # The ciphertext moved to the inbox, byte for byte; nothing left in incoming/.
    assert (rig.data_dir / "inbox" / f"{pid}.age").read_bytes() == data
    assert not (rig.data_dir / "incoming" / f"{pid}.part").exists()

    # Idempotent: complete again, offer again, and pull: always the same receipt.
    status, again, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 200 and again["receipt"] == body["receipt"]
    status, offered, _ = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data))
    assert status == 200 and offered == {"state": "delivered", "receipt": body["receipt"]}
    status, pulled, _ = await rig.call("GET", f"/peer/v1/packages/{pid}/receipts")
    assert status == 200 and pulled["receipts"] == [body["receipt"]]
    listed = await rig.inbox.list(rig.receiver_dsl)
    assert [(i.package_id, i.state) for i in listed] == [(pid, "delivered")]
    assert len(rig.events("transfer.received", "ok")) == 1
    assert len(rig.events("receipt.issued")) == 1


async def _refused(rig: Rig, reason: str) -> None:
    events = rig.events("peer.refused", "refused")
    assert events, "the refusal was not audited"
    assert events[-1].detail["reason"] == reason
    assert events[-1].detail["path"] == "/peer/v1/packages"


async def test_unsigned_wrongly_signed_expired_future_and_replayed_requests_are_refused(
    rig: Rig,
) -> None:
    pid = str(uuid.uuid4())
    body = rig.offer_body(pid, b"x" * 2000)
    url = rig.url + "/peer/v1/packages"

    async with rig.http.post(url, json=body) as r:
        assert r.status == 401
        problem = await r.json()
        assert problem["type"].endswith("unsigned-request") and "signed" in problem["detail"]
    await _refused(rig, "unsigned-request")

    # Signed over one body, sent with another: the digest (and signature) do not match.
    headers = rig.signed_headers("POST", "/peer/v1/packages", b'{"other": 1}')
    headers["Content-Type"] = "application/json"
    async with rig.http.post(url, json=body, headers=headers) as r:
        assert r.status == 422 and (await r.json())["type"].endswith("content-digest-mismatch")

    # A signature made by another key claiming the sender's key id.
    other = KeySet.generate(SENDER)
    forged = rig.signed_headers("POST", "/peer/v1/packages", b"{}", keyset=other)
    forged["Signature-Input"] = forged["Signature-Input"].replace(
        other.key_id_hex, rig.sender_keys.key_id_hex
    )
    async with rig.http.post(url, data=b"{}", headers=forged) as r:
        assert r.status == 401 and (await r.json())["type"].endswith("bad-signature")
    await _refused(rig, "bad-signature")

    for created, what in ((now_ts() - 3600, "expired"), (now_ts() + 3600, "future")):
        status, problem, _ = await rig.call("POST", "/peer/v1/packages", body, created=created)
        assert status == 401, what
        assert problem["type"].endswith("signature-out-of-time"), what
        await _refused(rig, "signature-out-of-time")

    # The same signed request twice: the second is a replay.
    raw = b'{"package_id": "x"}'
    headers = rig.signed_headers("POST", "/peer/v1/packages", raw)
    async with rig.http.post(url, data=raw, headers=headers) as r:
        assert r.status == 422  # reached the handler: a body that is not an offer
    async with rig.http.post(url, data=raw, headers=headers) as r:
        assert r.status == 401 and (await r.json())["type"].endswith("replayed-request")
    await _refused(rig, "replayed-request")
    # Nothing was stored by any of them.
    assert await rig.inbox.list(rig.receiver_dsl) == []
    assert not (rig.data_dir / "incoming").exists()


async def test_unknown_sender_and_revoked_key_are_refused(rig: Rig) -> None:
    pid = str(uuid.uuid4())
    body = rig.offer_body(pid, b"x" * 2000)
    stranger = KeySet.generate("199003")
    status, problem, _ = await rig.call("POST", "/peer/v1/packages", body, keyset=stranger)
    assert status == 401, problem
    assert stranger.key_id_hex in problem["detail"]
    events = rig.events("peer.refused", "refused")
    assert events[-1].detail["key_id"] == stranger.key_id_hex

    old = rig.sender_keys
    await rig.keys.revoke(SENDER, at=datetime.now(UTC) - timedelta(minutes=5))
    status, problem, _ = await rig.call("POST", "/peer/v1/packages", body, keyset=old)
    assert status in (401, 403), problem
    assert "revoked" in problem["detail"]
    # The new current key is accepted.
    status, problem, _ = await rig.call("POST", "/peer/v1/packages", body)
    assert status == 201, problem


async def test_offer_checks_before_any_byte(rig: Rig) -> None:
    data = b"y" * 5000
    pid = str(uuid.uuid4())
    too_big = rig.offer_body(pid, data, size=rig.services.config.transfer.max_package_bytes + 1)
    status, problem, _ = await rig.call("POST", "/peer/v1/packages", too_big)
    assert status == 413 and "limit" in problem["detail"]
    status, problem, _ = await rig.call(
        "POST", "/peer/v1/packages", rig.offer_body(pid, data, recipient_org_id="199009")
    )
    assert status == 404 and "not hosted" in problem["detail"]
    status, problem, _ = await rig.call(
        "POST", "/peer/v1/packages", rig.offer_body(pid, data, sender_org_id=RECEIVER)
    )
    assert status == 403 and "only send its own" in problem["detail"]
    assert not (rig.data_dir / "incoming" / f"{pid}.part").exists()
    # Accepted, then the same id with another hash is a conflict.
    assert (await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data)))[0] == 201
    status, problem, _ = await rig.call(
        "POST", "/peer/v1/packages", rig.offer_body(pid, data, ciphertext_sha256="0" * 64)
    )
    assert status == 409 and "another sender" in problem["detail"]


async def test_wrong_offset_bad_chunk_digest_and_wrong_final_hash(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    built, data = await rig.build(pupil)
    pid = str(built.manifest.package_id)
    assert (await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data)))[0] == 201
    assert (await rig.patch(pid, 0, data[:1000]))[0] == 204

    status, problem, headers = await rig.patch(pid, 500, data[500:1500])
    assert status == 409 and problem["offset"] == 1000 and headers["Upload-Offset"] == "1000"

    # A chunk whose bytes are not those its signed digest names: refused, cut back.
    status, problem, _ = await rig.patch(
        pid, 1000, data[1000:2000], digest=content_digest(b"something else")
    )
    assert status == 422 and problem["type"].endswith("content-digest-mismatch")
    status, _, headers = await rig.call("HEAD", f"/peer/v1/packages/{pid}")
    assert headers["Upload-Offset"] == "1000"
    assert (rig.data_dir / "incoming" / f"{pid}.part").stat().st_size == 1000

    # Too early to complete.
    status, problem, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 409 and problem["offset"] == 1000

    # Bytes beyond the declared size are refused.
    status, problem, _ = await rig.patch(pid, 1000, data[1000:] + b"extra")
    assert status == 413

    # The whole upload, but of other bytes than offered: the hash check fails at the end.
    tampered = bytearray(data)
    tampered[-10] ^= 1
    assert (await rig.patch(pid, 1000, bytes(tampered[1000:])))[0] == 204
    status, problem, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 422 and problem["offset"] == 0 and "SHA-256" in problem["detail"]
    status, _, headers = await rig.call("HEAD", f"/peer/v1/packages/{pid}")
    assert headers["Upload-Offset"] == "0"
    # And from nothing again, correctly, it is delivered.
    await rig.upload(pid, data)
    status, body, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 200, body


async def test_a_package_addressed_to_someone_else_is_refused_at_completion(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    # Sealed to our key, but the signed manifest names another organisation.
    built, data = await rig.build(pupil, recipient_org="199008")
    pid = str(built.manifest.package_id)
    await rig.upload(pid, data)
    status, problem, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 403 and "addressed to another organisation" in problem["detail"]
    assert not (rig.data_dir / "incoming" / f"{pid}.part").exists()
    assert not (rig.data_dir / "inbox" / f"{pid}.age").exists()
    assert rig.events("transfer.received", "refused")[-1].detail["reason"]
    # The same id is not taken again.
    status, problem, _ = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data))
    assert status == 409 and "refused" in problem["detail"]


async def test_upload_resumes_from_the_last_good_offset_after_a_dropped_connection(
    rig: Rig,
) -> None:
    pupil = await rig.make_pupil_file()
    built, data = await rig.build(pupil)
    pid = str(built.manifest.package_id)
    assert (await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data)))[0] == 201
    assert (await rig.patch(pid, 0, data[:100_000]))[0] == 204

    # A chunk of 150,000 bytes, of which only 60,000 are sent before the connection drops.
    chunk = data[100_000:250_000]
    path = f"/peer/v1/packages/{pid}"
    headers = rig.signed_headers(
        "PATCH",
        path,
        chunk,
        extra={"Upload-Offset": "100000", "Content-Type": "application/offset+octet-stream"},
    )
    host, port = rig.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    head = f"PATCH {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(chunk)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode() + chunk[:60_000])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await asyncio.sleep(0.3)

    status, _, got = await rig.call("HEAD", path)
    assert status == 204 and got["Upload-Offset"] == "100000"
    assert (rig.data_dir / "incoming" / f"{pid}.part").stat().st_size == 100_000
    offset = 100_000
    while offset < len(data):
        status, body, got = await rig.patch(pid, offset, data[offset : offset + 90_000])
        assert status == 204, body
        offset = int(got["Upload-Offset"])
    status, body, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 200, body
    assert (rig.data_dir / "inbox" / f"{pid}.age").read_bytes() == data


async def test_receipts_route_takes_only_the_issuers_own_receipts(rig: Rig) -> None:
    """Our school sent a package to 199001 (hosted here too): 199001's node pushes receipts."""
    from schemas.receipt import ReceiptActor, ReceiptBody
    from transfer.receipts import sign_receipt

    issuer = rig.sender_keys
    body = ReceiptBody(
        receipt_id=uuid.uuid4(),
        kind="accepted",
        package_id=uuid.uuid4(),
        package_kind="leaver_file",
        sender_org_id=RECEIVER,
        receiver_org_id=SENDER,
        receiver_key_id=issuer.key_id_hex,
        ciphertext_sha256="ab" * 32,
        ciphertext_size=10,
        manifest_sha256="cd" * 32,
        acted_by=ReceiptActor(name="Dee", role="dsl"),
        issued_at=datetime.now(UTC),
    )
    signed = sign_receipt(body, issuer)
    status, answer, _ = await rig.call(
        "POST", "/peer/v1/receipts", {"receipt": signed.to_dict(), "checkpoint": None}
    )
    assert status == 200, answer
    assert [r.body.receipt_id for r in rig.recorder.receipts] == [body.receipt_id]
    # The same receipt delivered by another organisation is refused.
    status, problem, _ = await rig.call(
        "POST",
        "/peer/v1/receipts",
        {"receipt": signed.to_dict(), "checkpoint": None},
        keyset=rig.receiver_keys,
    )
    assert status == 403 and "only the issuer" in problem["detail"]
    # A receipt whose bytes were changed does not verify.
    altered = signed.to_dict()
    altered["receipt"]["ciphertext_size"] = 11
    status, problem, _ = await rig.call(
        "POST", "/peer/v1/receipts", {"receipt": altered, "checkpoint": None}
    )
    assert status == 422, problem
    assert len(rig.recorder.receipts) == 1


async def test_a_signed_body_with_a_key_twice_is_refused(rig: Rig) -> None:
    """A signature covers the bytes, not one reading of them: ``"size": 1, "size": 10**12``
    would be one size to a reader that keeps the first key and another to ours."""
    data = b"z" * 5000
    pid = str(uuid.uuid4())
    offer = json.dumps(rig.offer_body(pid, data)).encode()
    twice = offer[:-1] + b', "size": 1}'
    status, problem, _ = await rig.call("POST", "/peer/v1/packages", twice)
    assert status == 400 and problem["type"] == "urn:handover:problem:malformed-body"
    assert "'size' appears twice" in problem["detail"]
    assert not (rig.data_dir / "incoming" / f"{pid}.part").exists()
    assert (await rig.call("POST", "/peer/v1/packages", offer))[0] == 201
