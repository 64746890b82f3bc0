"""Issue 4 end to end: real ``handover serve`` processes on loopback sockets, driven as people
and other nodes drive them: DSLs through the staff API over HTTPS, operators and the directory
authority through ``handover`` commands, other nodes through signed ``/peer/v1`` requests.

Every node is a child process with its own data directory, KEK file, TLS certificate and
database; killing one is a real SIGKILL. Observations are what a person could check: states
and receipts through the staff API (receipts verified with the receiver's public key), audit
entries through ``handover audit show``, files on disk and rows in the receiver's database.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from keys.keyset import KeySet
from schemas.receipt import ReceiptActor, ReceiptBody
from tests.e2e.support import (
    PRIMARY,
    PRIMARY_DSL,
    SECONDARY,
    SECONDARY_DSL,
    CountingRelay,
    Pair,
    add_pupil,
    audit_entries,
    cli,
    eventually,
    expire_leases,
    keyset_of,
    offer_body,
    outgoing,
    part_size,
    public_key_of,
    query,
    send_leaver_file,
    send_raw,
    sign_in,
    signed_receipt_json,
    signed_request,
    upn,
    wait_state,
    wait_until,
)
from transfer.demo.api import StaffClient
from transfer.demo.procs import free_port
from transfer.receipts import sign_receipt, verify_receipt

#: Documents large enough that an upload in 64 KiB chunks (160 and 96 of them) takes long
#: enough to be caught half-way, small enough to keep the file's run time low.
LARGE = 10 * 1024 * 1024
MEDIUM = 6 * 1024 * 1024


def _verified_kinds(pair: Pair, record: dict[str, object]) -> list[str]:
    """Verify every receipt the sender holds with the receiver's own public key; their kinds."""
    key = public_key_of(pair.secondary, SECONDARY[0])
    kinds: list[str] = []
    receipts = record["receipts"]
    assert isinstance(receipts, list)
    for receipt in receipts:
        verified = verify_receipt(
            signed_receipt_json(receipt),
            public_key=key,
            package_id=UUID(str(record["id"])),
            ciphertext_sha256=str(record["ciphertext_sha256"]),
            receiver_org_id=SECONDARY[0],
        )
        assert verified.body.sender_org_id == PRIMARY[0]
        assert verified.body.ciphertext_size == record["ciphertext_size"]
        kinds.append(verified.body.kind)
    return kinds


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


async def _dsls(pair: Pair, http: aiohttp.ClientSession) -> tuple[StaffClient, StaffClient]:
    primary = await sign_in(pair, http, pair.primary, PRIMARY[0], PRIMARY_DSL[0])
    secondary = await sign_in(pair, http, pair.secondary, SECONDARY[0], SECONDARY_DSL[0])
    return primary, secondary


# ------------------------------------------------------------------ 1. the happy path


async def test_happy_path_delivered_viewed_accepted_with_verified_receipts(
    running: Pair, http: aiohttp.ClientSession
) -> None:
    pair = running
    primary, secondary = await _dsls(pair, http)
    pupil = await add_pupil(primary, 1, document=b"Strategy discussion minutes.\n" * 200)
    sent = await send_leaver_file(primary, pupil, SECONDARY[0])
    package_id = sent["id"]
    assert sent["state"] == "queued" and sent["to_name"] == SECONDARY[2]
    outgoing_file = pair.primary.data_dir / "outgoing" / f"{package_id}.age"
    assert _sha256(outgoing_file) == sent["ciphertext_sha256"]

    await wait_state(primary, package_id, ["delivered"])
    inbox = await secondary.call("GET", "/inbox")
    assert (package_id, "delivered") in [(i["package_id"], i["state"]) for i in inbox["items"]]
    delivered_file = pair.secondary.data_dir / "inbox" / f"{package_id}.age"
    assert _sha256(delivered_file) == sent["ciphertext_sha256"]

    shown = await secondary.call("GET", f"/inbox/{package_id}")
    assert shown["subject"]["upn"] == upn(1) and shown["subject"]["surname"] == "Okafor"
    assert shown["counts"]["concerns"] == 1 and shown["counts"]["documents"] == 1
    accepted = await secondary.call("POST", f"/inbox/{package_id}/accept", {})
    assert accepted["new_pupil"] is True and accepted["counts"]["concerns"] == 1

    done = await wait_state(primary, package_id, ["accepted"])
    assert _verified_kinds(pair, done) == ["delivered", "viewed", "accepted"]
    accepted_receipt = next(r for r in done["receipts"] if r["kind"] == "accepted")
    assert accepted_receipt["body"]["manifest_sha256"] == sent["manifest_sha256"]
    assert accepted_receipt["acted_by"] == {"name": SECONDARY_DSL[1], "role": "dsl"}
    assert [e["event"] for e in done["events"]] == [
        "draft",
        "queued",
        "sent",
        "receipt.delivered",
        "receipt.viewed",
        "receipt.accepted",
    ]

    # The secondary school now has the pupil, with the file's concern, in its own store.
    pupils = await secondary.call("GET", "/pupils")
    ours = [p for p in pupils["items"] if p["upn"] == upn(1)]
    assert len(ours) == 1 and ours[0]["id"] == accepted["pupil_id"]
    assert not delivered_file.exists()  # the ciphertext goes once imported
    assert query(
        pair.secondary, "SELECT state FROM incoming_packages WHERE id = ?", package_id
    ) == [("accepted",)]
    # Both audit logs tell the story; the sender's log verifies from scratch.
    received = await audit_entries(pair.secondary, "transfer.received")
    assert [e["outcome"] for e in received if e["targets"]["package"] == package_id] == ["ok"]
    ours_logged = [
        e["action"]
        for e in await audit_entries(pair.primary, "transfer.*")
        if e["targets"].get("package") == package_id
    ]
    assert ours_logged == [
        "transfer.queued",
        "transfer.sent",
        "transfer.delivered",
        "transfer.viewed",
        "transfer.accepted",
    ]
    await cli(["audit", "verify", "--data-dir", str(pair.primary.data_dir)])


# ------------------------------------------------------------------ 2. the receiver is down


async def test_receiver_down_for_a_while_is_retried_then_delivered(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    pair.world.start("primary")
    primary = await sign_in(pair, http, pair.primary, PRIMARY[0], PRIMARY_DSL[0])
    pupil = await add_pupil(primary, 2)
    package_id = (await send_leaver_file(primary, pupil, SECONDARY[0]))["id"]

    async def retried() -> dict[str, Any] | None:
        record = await outgoing(primary, package_id)
        return record if record["attempts"] >= 2 and record["last_error"] else None

    waiting = await eventually(retried, "two failed attempts")
    assert waiting["state"] == "queued"
    assert "cannot reach" in str(waiting["last_error"])
    assert waiting["next_attempt_at"] is not None
    assert "retry" in [e["event"] for e in waiting["events"]]

    pair.world.start("secondary")
    done = await wait_state(primary, package_id, ["delivered"])
    events = [e["event"] for e in done["events"]]
    # Every attempt but the last failed (a "retry" each); the last one sent it, once.
    assert done["attempts"] == events.count("retry") + 1 >= 3, done
    assert events.count("sent") == 1 and events.count("receipt.delivered") == 1
    assert _verified_kinds(pair, done) == ["delivered"]
    failed_attempts = await audit_entries(pair.primary, "transfer.attempt")
    assert len(failed_attempts) == events.count("retry")
    assert {e["outcome"] for e in failed_attempts} == {"failed"}
    assert query(pair.secondary, "SELECT id, state FROM incoming_packages") == [
        (package_id, "delivered")
    ]


# ------------------------------------------------------------------ 3. receiver killed mid-upload


async def test_receiver_killed_mid_upload_resumes_from_the_offset_it_held(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    # The secondary listens on a port of its own; a relay on its public port (the endpoint in
    # the directory) counts every byte sent to it.
    secondary = pair.secondary
    inner = free_port()
    secondary.serve.extra_args = ("--port", str(inner))
    relay = CountingRelay(secondary.port, inner)
    relay.start()
    try:
        pair.world.start()
        primary = await sign_in(pair, http, pair.primary, PRIMARY[0], PRIMARY_DSL[0])
        pupil = await add_pupil(primary, 3, document=os.urandom(LARGE))
        sent = await send_leaver_file(primary, pupil, SECONDARY[0])
        package_id, size = sent["id"], int(sent["ciphertext_size"])
        assert size > LARGE

        await asyncio.to_thread(
            wait_until,
            lambda: size // 5 < part_size(secondary, package_id) < size // 2,
            "the upload to be under way",
        )
        secondary.serve.kill()
        ((held, state),) = query(
            secondary, "SELECT received, state FROM incoming_packages WHERE id = ?", package_id
        )
        assert state == "receiving" and 0 < held < size
        assert part_size(secondary, package_id) >= held

        relay.reset()
        await asyncio.to_thread(pair.world.start, "secondary")
        done = await wait_state(primary, package_id, ["delivered"])
        sent_after_restart = relay.count()
        # Only what the receiver lacked was sent again (plus headers and TLS framing, far
        # less than what it already held): had the upload started over, at least ``size``
        # bytes would have gone through.
        assert size - held <= sent_after_restart < size - held // 2
        assert _verified_kinds(pair, done) == ["delivered"]
        assert (
            _sha256(secondary.data_dir / "inbox" / f"{package_id}.age") == sent["ciphertext_sha256"]
        )
        assert not (secondary.data_dir / "incoming" / f"{package_id}.part").exists()
    finally:
        pair.world.stop()
        relay.stop()


# ------------------------------------------------------------------ 4. sender killed mid-sweep


async def test_sender_killed_mid_sweep_delivers_once_after_restart(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    pair.world.start()
    primary = await sign_in(pair, http, pair.primary, PRIMARY[0], PRIMARY_DSL[0])
    pupil = await add_pupil(primary, 4, document=os.urandom(MEDIUM))
    sent = await send_leaver_file(primary, pupil, SECONDARY[0])
    package_id, size = sent["id"], int(sent["ciphertext_size"])

    await asyncio.to_thread(
        wait_until,
        lambda: size // 5 < part_size(pair.secondary, package_id) < size // 2,
        "the upload to be under way",
    )
    pair.primary.serve.kill()
    assert query(pair.primary, "SELECT state FROM outgoing_packages WHERE id = ?", package_id) == [
        ("queued",)
    ]
    assert expire_leases(pair.primary) == 1  # the killed process's lease: 120 s, made to pass

    await asyncio.to_thread(pair.world.start, "primary")
    done = await wait_state(primary, package_id, ["delivered"])
    assert done["attempts"] >= 2
    assert _verified_kinds(pair, done) == ["delivered"]
    assert [e["event"] for e in done["events"]].count("receipt.delivered") == 1

    # Exactly one package at the receiver, one delivered receipt, one file.
    assert query(pair.secondary, "SELECT id, state FROM incoming_packages") == [
        (package_id, "delivered")
    ]
    assert query(pair.secondary, "SELECT kind, count(*) FROM inbox_receipts GROUP BY kind") == [
        ("delivered", 1)
    ]
    assert sorted(p.name for p in (pair.secondary.data_dir / "inbox").iterdir()) == [
        f"{package_id}.age"
    ]
    received = await audit_entries(pair.secondary, "transfer.received")
    assert [(e["targets"]["package"], e["outcome"]) for e in received] == [(package_id, "ok")]
    offers = await audit_entries(pair.secondary, "transfer.offer")
    assert len(offers) == 1  # the second process resumed the same upload


# ------------------------------------------------------------------ 5, 6, 9. signed requests


async def test_replayed_request_is_refused_and_audited(
    running: Pair, http: aiohttp.ClientSession
) -> None:
    pair = running
    offer = offer_body(PRIMARY[0], SECONDARY[0])
    request = signed_request(
        pair.secondary.base_url,
        "POST",
        "/peer/v1/packages",
        offer,
        keyset=keyset_of(pair.primary, PRIMARY[0]),
    )
    status, body = await send_raw(http, pair, request)
    assert status == 201 and body == {"offset": 0, "state": "receiving"}
    status, problem = await send_raw(http, pair, request)
    assert status == 401, problem
    assert problem["type"] == "urn:handover:problem:replayed-request"
    refused = [
        (e["detail"]["key_id"], e["detail"]["method"], e["detail"]["path"])
        for e in await audit_entries(pair.secondary, "peer.refused")
        if e["detail"]["reason"] == "replayed-request"
    ]
    assert refused == [
        (keyset_of(pair.primary, PRIMARY[0]).key_id_hex, "POST", "/peer/v1/packages")
    ]
    held = query(
        pair.secondary, "SELECT id FROM incoming_packages WHERE id = ?", offer["package_id"]
    )
    assert len(held) == 1  # the first request's upload, once


async def test_unknown_sender_is_refused_and_audited(
    running: Pair, http: aiohttp.ClientSession
) -> None:
    pair = running
    stranger = KeySet.generate("999999")
    offer = offer_body("999999", SECONDARY[0])
    request = signed_request(
        pair.secondary.base_url, "POST", "/peer/v1/packages", offer, keyset=stranger
    )
    status, problem = await send_raw(http, pair, request)
    assert status == 401, problem
    assert stranger.key_id_hex in problem["detail"]
    refused = [
        (e["detail"]["reason"], e["outcome"])
        for e in await audit_entries(pair.secondary, "peer.refused")
        if e["detail"]["key_id"] == stranger.key_id_hex
    ]
    assert refused == [(problem["type"].rsplit(":", 1)[1], "refused")]
    assert (
        query(pair.secondary, "SELECT id FROM incoming_packages WHERE id = ?", offer["package_id"])
        == []
    )


async def test_clock_skew_within_the_window_is_accepted_beyond_it_refused(
    running: Pair, http: aiohttp.ClientSession
) -> None:
    pair = running
    keys = keyset_of(pair.primary, PRIMARY[0])
    now = int(time.time())
    results, offers = {}, {}
    for skew in (-200, 200, -400, 400):
        offers[skew] = offer_body(PRIMARY[0], SECONDARY[0])
        request = signed_request(
            pair.secondary.base_url,
            "POST",
            "/peer/v1/packages",
            offers[skew],
            keyset=keys,
            created=now + skew,
        )
        results[skew] = await send_raw(http, pair, request)
    assert results[-200][0] == 201 and results[200][0] == 201
    for skew in (-400, 400):
        status, problem = results[skew]
        assert status == 401 and problem["type"].endswith(":signature-out-of-time"), problem
    refused = await audit_entries(pair.secondary, "peer.refused")
    assert [e["detail"]["reason"] for e in refused].count("signature-out-of-time") == 2
    for skew, stored in ((-200, 1), (200, 1), (-400, 0), (400, 0)):
        rows = query(
            pair.secondary,
            "SELECT id FROM incoming_packages WHERE id = ?",
            offers[skew]["package_id"],
        )
        assert len(rows) == stored, skew


# ------------------------------------------------------------------ 7. a revoked key


async def test_package_signed_with_a_revoked_key_is_refused_saying_so(
    pair: Pair, http: aiohttp.ClientSession
) -> None:
    world, authority = pair.world, pair.world.authority_dir
    world.start("primary")
    primary = await sign_in(pair, http, pair.primary, PRIMARY[0], PRIMARY_DSL[0])
    pupil = await add_pupil(primary, 7)
    sent = await send_leaver_file(primary, pupil, SECONDARY[0])  # signed now with key K
    stolen = keyset_of(pair.primary, PRIMARY[0])  # what a thief copied before the revocation
    created = datetime.fromisoformat(sent["created_at"].replace("Z", "+00:00"))
    compromised_from = (created - timedelta(minutes=5)).astimezone(UTC)
    at = compromised_from.strftime("%Y-%m-%dT%H:%M:%SZ")

    # The school's operator revokes K from when the laptop went missing (which also rotates);
    # the authority publishes the new entry and the revocation; the secondary imports it.
    data = str(pair.primary.data_dir)
    await cli(["keys", "revoke", PRIMARY[0], "--data-dir", data, "--at", at])
    entry = authority / "entries" / "hillside-rotated.json"
    await cli(
        ["directory", "export-entry", "--data-dir", data, "--org", PRIMARY[0], "--out", str(entry)]
    )
    directory = str(world.directory_file)
    await cli(["directory", "add-org", "--file", directory, "--entry", str(entry), "--replace"])
    await cli(
        [
            "directory",
            "revoke",
            "--file",
            directory,
            "--org",
            PRIMARY[0],
            "--key-id",
            stolen.key_id_hex,
            "--at",
            at,
            "--reason",
            "laptop stolen",
        ]
    )
    await cli(["directory", "sign", "--file", directory, "--key", str(authority / "authority.key")])
    await cli(
        ["directory", "import", "--data-dir", str(pair.secondary.data_dir), "--file", directory]
    )
    world.start("secondary")

    # The queued package (signed with K after its revocation) is refused, and says why.
    failed = await wait_state(primary, sent["id"], ["failed", "delivered"])
    assert failed["state"] == "failed", failed
    reason = str(failed["failure_reason"])
    assert "revoked" in reason and stolen.key_id_hex in reason, reason
    ((state, why),) = query(
        pair.secondary,
        "SELECT state, refused_reason FROM incoming_packages WHERE id = ?",
        sent["id"],
    )
    assert state == "refused" and "revoked" in why
    assert not list((pair.secondary.data_dir / "inbox").glob("*.age"))

    # The stolen key itself is refused at the door, with the same explanation.
    request = signed_request(
        pair.secondary.base_url,
        "POST",
        "/peer/v1/packages",
        offer_body(PRIMARY[0], SECONDARY[0]),
        keyset=stolen,
    )
    status, problem = await send_raw(http, pair, request)
    assert status == 403 and "revoked" in problem["detail"], problem
    refused = await audit_entries(pair.secondary, "peer.refused")
    assert [(e["detail"]["key_id"], e["detail"]["reason"]) for e in refused] == [
        (stolen.key_id_hex, problem["type"].rsplit(":", 1)[1])
    ]

    # With the new key, a new leaver's file goes through.
    again = await send_leaver_file(
        primary, await add_pupil(primary, 8, surname="Nowak"), SECONDARY[0]
    )
    await wait_state(primary, again["id"], ["delivered"])


# ------------------------------------------------------------------ 8. a badly signed receipt


async def test_receipt_with_a_bad_signature_is_refused_state_unchanged(
    running: Pair, http: aiohttp.ClientSession
) -> None:
    pair = running
    primary = await sign_in(pair, http, pair.primary, PRIMARY[0], PRIMARY_DSL[0])
    sent = await send_leaver_file(primary, await add_pupil(primary, 9), SECONDARY[0])
    before = await wait_state(primary, sent["id"], ["delivered"])

    # A well-formed "accepted" receipt signed with the secondary's real key, then altered.
    receiver = keyset_of(pair.secondary, SECONDARY[0])
    body = ReceiptBody(
        receipt_id=uuid4(),
        kind="accepted",
        package_id=UUID(sent["id"]),
        package_kind="leaver_file",
        sender_org_id=PRIMARY[0],
        receiver_org_id=SECONDARY[0],
        receiver_key_id=receiver.key_id_hex,
        ciphertext_sha256=sent["ciphertext_sha256"],
        ciphertext_size=sent["ciphertext_size"],
        manifest_sha256=sent["manifest_sha256"],
        acted_by=ReceiptActor(name="Kamala Ahmed", role="dsl"),
        issued_at=datetime.now(UTC),
    )
    wire = sign_receipt(body, receiver).to_dict()
    wire["receipt"]["acted_by"]["name"] = "Someone Else"
    request = signed_request(
        pair.primary.base_url,
        "POST",
        "/peer/v1/receipts",
        {"receipt": wire, "checkpoint": None},
        keyset=receiver,
    )
    status, problem = await send_raw(http, pair, request)
    assert status == 422 and problem["type"] == "urn:handover:problem:receipt-invalid", problem
    assert "signature" in problem["detail"]

    after = await outgoing(primary, sent["id"])
    assert after["state"] == "delivered"
    assert after["receipts"] == before["receipts"] and after["events"] == before["events"]
    assert _verified_kinds(pair, after) == ["delivered"]
    assert query(
        pair.primary, "SELECT kind FROM outgoing_receipts WHERE package_id = ?", sent["id"]
    ) == [("delivered",)]
    refused = [
        (e["detail"]["reason"], e["detail"]["issuer"], e["detail"]["receipt_kind"])
        for e in await audit_entries(pair.primary, "receipt.refused")
        if e["targets"]["package"] == sent["id"]
    ]
    assert refused == [("receipt-invalid", SECONDARY[0], "accepted")]


# ------------------------------------------------------------------ 10. two serve processes


async def _watch_claims(url: str, seen: set[str], stop: asyncio.Event) -> None:
    """Note every process that holds a delivery lease, polling the shared database."""
    engine = create_async_engine(url)
    try:
        while not stop.is_set():
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT DISTINCT claimed_by FROM outgoing_packages "
                        "WHERE claimed_by IS NOT NULL"
                    )
                )
                seen.update(str(r[0]) for r in rows)
            await asyncio.sleep(0.02)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_two_serve_processes_on_one_postgresql_deliver_each_package_once(
    pg_pair: Pair, pg_url: str, http: aiohttp.ClientSession
) -> None:
    pair = pg_pair
    second = pair.primary.serve.sibling("primary-2")
    claimers: set[str] = set()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_claims(pg_url, claimers, stop))
    try:
        pair.world.start("primary")
        second.start()
        second.wait_ready()
        primary = await sign_in(pair, http, pair.primary, PRIMARY[0], PRIMARY_DSL[0])
        # The same session, through the other process (sessions live in the shared database).
        via_second = await sign_in(
            pair, http, pair.primary, PRIMARY[0], PRIMARY_DSL[0], base_url=second.base_url
        )
        # Twenty leavers queued (through both processes) while the secondary is down, so that
        # every package is due at once when it comes up.
        ids = []
        for n in range(20):
            dsl = primary if n % 2 else via_second
            pupil = await add_pupil(dsl, 100 + n, surname=f"Leaver{n:02d}", concern=False)
            ids.append((await send_leaver_file(dsl, pupil, SECONDARY[0]))["id"])
        await asyncio.to_thread(pair.world.start, "secondary")
        records = [await wait_state(primary, i, ["delivered"], within=120) for i in ids]
        stop.set()
        await watcher
        # Both processes took part (a worker id is host:pid:random) ...
        pids = {int(worker.split(":")[-2]) for worker in claimers}
        assert pair.primary.serve.proc is not None and second.proc is not None
        assert pids == {pair.primary.serve.proc.pid, second.proc.pid}, claimers

        rows = query(pair.secondary, "SELECT id, state FROM incoming_packages")
        assert sorted(rows) == sorted((i, "delivered") for i in ids)
        assert query(pair.secondary, "SELECT kind, count(*) FROM inbox_receipts GROUP BY kind") == [
            ("delivered", 20)
        ]
        received = await audit_entries(pair.secondary, "transfer.received")
        assert sorted(e["targets"]["package"] for e in received) == sorted(ids)
        offers = await audit_entries(pair.secondary, "transfer.offer")
        assert sorted(e["targets"]["package"] for e in offers) == sorted(ids)
        # ... and each package was sent once: every attempt but the last failed while the
        # secondary was down (a "retry" event each); none was made after the delivery.
        for record in records:
            events = [e["event"] for e in record["events"]]
            assert events.count("sent") == 1 and events.count("receipt.delivered") == 1, events
            assert record["attempts"] == events.count("retry") + 1, record
            assert len(record["receipts"]) == 1
        assert len(list((pair.secondary.data_dir / "inbox").glob("*.age"))) == 20
    finally:
        stop.set()
        await asyncio.gather(watcher, return_exceptions=True)
        second.stop()
        pair.world.stop()
