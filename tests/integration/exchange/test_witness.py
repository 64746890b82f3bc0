"""Witnessing between two real nodes: receipts carry the issuer's checkpoint, the sender keeps it.

Two data directories made by ``handover init``'s own code, each with its own
SQLite database, key files and audit log. Node A (Riverside) receives packages
and issues receipts through its real :class:`~transfer.exchange.inbox.Inbox`
signing path; node B (Hillside) knows A from an entry A exported (with its
audit-log key) and keeps the checkpoints with :class:`transfer.exchange.witness.Witness`.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from schemas.auditing import AuditEvent
from schemas.directory import AuditKey, DirectoryEntry
from tests.support.notes import with_signature_length
from tests.support.postgres import PostgresServer, create_database
from transfer.api.peer import mount, services_for
from transfer.audit import merkle
from transfer.audit.checkpoint import Checkpoint, Signer, sign_checkpoint, verify_checkpoint
from transfer.audit.log import PeerCheckpoint
from transfer.commands.init import initialise, write_config
from transfer.config import CONFIG_FILE
from transfer.directory.document import (
    DirectoryFormatError,
    document_bytes,
    parse_document,
    parse_entry,
)
from transfer.exchange.tables import IncomingPackage
from transfer.exchange.witness import Witness, witness_receipt
from transfer.httpsig import content_digest, sign_request
from transfer.node import Node
from transfer.receipts import SignedReceipt
from transfer.store.permissions import Role
from transfer.transport.http import http_transport

KEK_HEX = "5a" * 32
A_ORG, A_HOST = "199002", "riverside.test:8443"
B_ORG, B_HOST = "100001", "hillside.test:8443"


async def make_node(
    data_dir: Path, urn: str, laestab: str, name: str, host: str, db_url: str = ""
) -> None:
    """``handover init`` for one school, with its own base URL (hence its log's origin).

    ``db_url``: its database (default: the embedded SQLite one in the data directory).
    """
    write_config(data_dir, name)
    config = data_dir / CONFIG_FILE
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('base_url = "https://localhost:8443"', f'base_url = "https://{host}"').replace(
            'url = ""', f'url = "{db_url}"'
        ),
        encoding="utf-8",
    )
    await initialise(
        data_dir,
        name=name,
        schools=[(urn, laestab, name)],
        agencies=[],
        admin=None,
        admin_password=None,
    )


@dataclass
class Pair:
    a: Node
    b: Node
    a_dir: Path
    b_dir: Path
    a_entry: DirectoryEntry


async def exported_entry(node: Node, org: str) -> DirectoryEntry:
    """What ``handover directory export-entry`` writes (it passes the log's key the same way)."""
    vkey = (await node.audit_log.verifier()).vkey
    return await node.directory.own_entry(org, audit_key=AuditKey.from_vkey(vkey))


async def open_pair(tmp_path: Path, db_urls: tuple[str, str] = ("", "")) -> Pair:
    a_dir, b_dir = tmp_path / "riverside", tmp_path / "hillside"
    await make_node(a_dir, A_ORG, "8012002", "Riverside Academy", A_HOST, db_urls[0])
    await make_node(b_dir, B_ORG, "8012001", "Hillside Primary", B_HOST, db_urls[1])
    a = await Node.open(a_dir, transport=http_transport)
    b = await Node.open(b_dir, transport=http_transport)
    entry = await exported_entry(a, A_ORG)
    await b.directory.add_local(entry, fingerprint=entry.fingerprint, actor="operator")
    return Pair(a, b, a_dir, b_dir, entry)


@pytest.fixture
async def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Pair]:
    monkeypatch.setenv("HANDOVER_KEK", KEK_HEX)
    p = await open_pair(tmp_path)
    try:
        yield p
    finally:
        await p.a.close()
        await p.b.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine_pair(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Pair]:
    """The two nodes, each on its own database of one engine: SQLite or PostgreSQL."""
    monkeypatch.setenv("HANDOVER_KEK", KEK_HEX)
    urls = ("", "")
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        tag = uuid.uuid4().hex[:8]
        urls = (create_database(server, f"wa{tag}"), create_database(server, f"wb{tag}"))
    p = await open_pair(tmp_path, urls)
    try:
        yield p
    finally:
        await p.a.close()
        await p.b.close()


async def a_receipt(node: Node) -> SignedReceipt:
    """A receipt issued by A's inbox for a package B sent (its real signing path)."""
    row = IncomingPackage(
        id=str(uuid.uuid4()),
        recipient_org_id=A_ORG,
        sender_org_id=B_ORG,
        package_kind="leaver_file",
        size=4096,
        ciphertext_sha256="ab" * 32,
    )
    return await node.inbox.receipts.sign(row, "delivered")


async def grow(node: Node, n: int) -> None:
    for i in range(n):
        await node.audit_log.record(
            AuditEvent(action="store.pupil.read", actor=f"staff-{i}", org=A_ORG, targets={})
        )


def witness_of(node: Node) -> Witness:
    """How the coordinator wires it: the node's log, directory and store."""
    return Witness(
        audit_log=node.audit_log,
        vkey_for=node.directory.audit_vkey_for,
        store=node.store,
        alerts=node.alerts,
    )


async def witness_events(node: Node) -> list[dict[str, Any]]:
    shown = await node.audit_log.show(action="audit.witness")
    return [{"outcome": s.entry.outcome, **s.entry.detail} for s in shown]


# ------------------------------------------------------------------ the entry


async def test_the_exported_entry_carries_the_audit_key_and_round_trips(pair: Pair) -> None:
    entry = pair.a_entry
    assert entry.audit_key is not None
    assert entry.audit_key.origin == f"{A_HOST}/audit" == pair.a.audit_log.origin
    assert entry.audit_key.vkey == (await pair.a.audit_log.verifier()).vkey
    # B's view answers with it; unknown organisations and B's own have none.
    assert await pair.b.directory.audit_vkey_for(A_ORG) == entry.audit_key.vkey
    assert await pair.b.directory.audit_vkey_for("nobody") is None
    assert await pair.b.directory.audit_vkey_for(B_ORG) is None
    # The entry file parses back; a vkey whose name is not the origin is refused.
    text = json.dumps(entry.model_dump(mode="json")).encode()
    assert parse_entry(text) == entry
    raw = entry.model_dump(mode="json")
    raw["audit_key"]["origin"] = "elsewhere.test/audit"
    with pytest.raises(DirectoryFormatError, match=r"named 'riverside\.test:8443/audit', not"):
        parse_entry(json.dumps(raw).encode())
    raw["audit_key"] = {"origin": "x/audit", "vkey": "x/audit+00000000+AQ=="}
    with pytest.raises(DirectoryFormatError, match="audit_key"):
        parse_entry(json.dumps(raw).encode())


def test_a_directory_without_audit_keys_keeps_its_canonical_bytes() -> None:
    """Directories signed before the field existed: no "audit_key" in the bytes."""
    doc_text = {
        "type": "handover.directory",
        "version": 1,
        "authority": {"name": "Testshire", "key_id": "0123456789ABCDEF"},
        "serial": 3,
        "issued_at": "2026-09-01T09:00:00Z",
        "next_update": "2026-10-01T09:00:00Z",
        "organisations": [],
        "revocations": [],
    }
    data = json.dumps(doc_text, sort_keys=True, separators=(",", ":")).encode()
    assert document_bytes(parse_document(data)) == data


async def test_a_signed_directory_with_an_audit_key_is_canonical(pair: Pair) -> None:
    from datetime import timedelta

    from transfer.directory.document import add_organisation, new_document

    doc = new_document("Testshire", now=pair.a.store.now(), valid_for=timedelta(days=30))
    doc = add_organisation(doc, pair.a_entry)
    data = document_bytes(doc)
    assert b'"audit_key":{"origin":"riverside.test:8443/audit","vkey":"' in data
    assert parse_document(data).organisations[0].audit_key == pair.a_entry.audit_key


# ------------------------------------------------------------ the receipts


async def test_issued_receipts_carry_the_issuers_latest_checkpoint(pair: Pair) -> None:
    verifier = await pair.a.audit_log.verifier()
    first = await a_receipt(pair.a)
    assert first.body.checkpoint is not None
    cp1 = verify_checkpoint(first.body.checkpoint, verifier)
    assert cp1.size == await pair.a.audit_log.size()
    await grow(pair.a, 5)
    second = await a_receipt(pair.a)
    assert second.body.checkpoint is not None
    cp2 = verify_checkpoint(second.body.checkpoint, verifier)
    assert cp2.size == cp1.size + 5 == await pair.a.audit_log.size()
    assert cp2.root == await pair.a.audit_log.root(cp2.size)


async def test_the_sender_keeps_each_receipts_checkpoint_and_audits_it(pair: Pair) -> None:
    witness = witness_of(pair.b)
    r1 = await a_receipt(pair.a)
    out = await witness.receipt(r1)
    assert (out.status, out.origin, out.kept) == ("first", f"{A_HOST}/audit", True)
    assert (await witness.receipt(r1)).status == "same"
    await grow(pair.a, 3)
    r2 = await a_receipt(pair.a)
    out2 = await witness_receipt(
        r2,
        audit_log=pair.b.audit_log,
        vkey_for=pair.b.directory.audit_vkey_for,
        store=pair.b.store,
    )
    assert out2.status == "unproven"  # a receipt carries no consistency proof
    assert out2.size == (out.size or 0) + 3
    held = await pair.b.audit_log.witnessed(f"{A_HOST}/audit")
    assert [(w["from_org"], w["size"], w["status"]) for w in held] == [
        (A_ORG, out.size, "first"),
        (A_ORG, out2.size, "unproven"),
    ]
    events = await witness_events(pair.b)
    assert [(e["outcome"], e["status"]) for e in events] == [("ok", "first"), ("ok", "unproven")]
    assert events[0]["issuer"] == A_ORG and events[0]["origin"] == f"{A_HOST}/audit"
    await pair.b.audit_log.verify()  # B re-checks what it holds


async def test_a_receipt_without_checkpoint_or_from_an_unpublished_log(pair: Pair) -> None:
    witness = witness_of(pair.b)
    receipt = await a_receipt(pair.a)
    bare = receipt.body.model_copy(update={"checkpoint": None})
    signed = SignedReceipt(bare, receipt.body_bytes, receipt.signature_text)
    assert (await witness.receipt(signed)).status == "none"
    # Without A's audit key in the directory nothing is kept, and the reason is audited.
    blind = Witness(audit_log=pair.b.audit_log, vkey_for=_none, store=pair.b.store)
    out = await blind.receipt(receipt)
    assert (out.status, out.reason, out.kept) == ("not-kept", "no-audit-key", False)
    assert await pair.b.audit_log.witnessed() == []
    assert [(e["outcome"], e["reason"]) for e in await witness_events(pair.b)] == [
        ("refused", "no-audit-key")
    ]


async def _none(org_id: str) -> str | None:
    return None


async def test_a_checkpoint_not_signed_by_the_published_key_is_refused(pair: Pair) -> None:
    witness = witness_of(pair.b)
    # A note named like A's log but signed by another key, inside a receipt A really signed
    # (as if A's node were misconfigured or its audit key replaced).
    impostor = Signer(f"{A_HOST}/audit", bytes(range(32)))
    note = sign_checkpoint(Checkpoint(impostor.name, 3, merkle.leaf_hash(b"x")), impostor)
    receipt = await _receipt_with(pair.a, note)
    out = await witness.receipt(receipt)
    assert (out.status, out.reason) == ("refused", "bad-checkpoint")
    assert await pair.b.audit_log.witnessed() == []
    [event] = await witness_events(pair.b)
    assert event["outcome"] == "refused" and event["reason"] == "bad-checkpoint"
    assert "signature" in str(event["problem"]) or "verif" in str(event["problem"])


async def _receipt_with(node: Node, note: str) -> SignedReceipt:
    from transfer.receipts import sign_receipt

    base = await a_receipt(node)
    body = base.body.model_copy(update={"checkpoint": note})
    return sign_receipt(body, node.keys.load(A_ORG))


async def test_a_rewritten_log_contradicts_the_held_checkpoint(pair: Pair) -> None:
    witness = witness_of(pair.b)
    first = await witness.receipt(await a_receipt(pair.a))
    assert first.status == "first" and first.size is not None
    # A's operator rewrites history: the same key signs another tree of the same size.
    signer = await pair.a.audit_log.signer()
    forged = sign_checkpoint(Checkpoint(signer.name, first.size, merkle.leaf_hash(b"y")), signer)
    out = await witness.receipt(await _receipt_with(pair.a, forged))
    assert (out.status, out.reason, out.kept) == ("conflict", "conflict", True)
    statuses = [w["status"] for w in await pair.b.audit_log.witnessed()]
    assert statuses == ["first", "conflict"]  # kept as evidence
    events = await witness_events(pair.b)
    assert events[-1]["outcome"] == "refused" and events[-1]["reason"] == "conflict"
    assert f"different root for size {first.size}" in str(events[-1]["problem"])
    # The sending school's DSL team is alerted (in-app; no SMTP configured here).
    staff = await pair.b.store.bootstrap_staff(
        B_ORG, username="dsl", display_name="Dee Ess", roles=[Role.DSL]
    )
    alerts = await pair.b.alerts.list(await pair.b.store.actor_for(staff.id))
    assert [a.key for a in alerts] == [f"audit-witness-conflict:{A_ORG}"]
    # B's own log is still intact: the conflict is A's, not B's.
    await pair.b.audit_log.verify()


async def test_a_counterpart_using_our_origin_is_refused_and_our_own_log_skipped(
    pair: Pair,
) -> None:
    ours = await pair.b.audit_log.verifier()
    clash = Signer(ours.name, bytes(range(1, 33))).verifier.vkey

    async def clashing(org_id: str) -> str | None:
        return clash

    async def own(org_id: str) -> str | None:
        return ours.vkey

    receipt = await a_receipt(pair.a)
    out = await Witness(audit_log=pair.b.audit_log, vkey_for=clashing, store=pair.b.store).receipt(
        receipt
    )
    assert (out.status, out.reason) == ("refused", "origin-clash")
    note = (await pair.b.audit_log.checkpoint()).note
    same_node = await Witness(
        audit_log=pair.b.audit_log, vkey_for=own, store=pair.b.store
    ).checkpoint(A_ORG, note)
    assert same_node.status == "own-log"
    assert await pair.b.audit_log.witnessed() == []


# ------------------------------------------------ the peer route (real socket)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Recorder:
    def __init__(self) -> None:
        self.receipts: list[SignedReceipt] = []

    async def record_receipt(self, signed: SignedReceipt) -> None:
        self.receipts.append(signed)


Post = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


@asynccontextmanager
async def receipts_route(pair: Pair, recorder: _Recorder) -> AsyncIterator[Post]:
    """B's peer route on a real socket; ``post(body)`` sends POST /peer/v1/receipts signed by A."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    services = services_for(pair.b, receipts=recorder)
    assert services.audit_vkey_for is not None
    services.config = services.config.model_copy(
        update={"node": services.config.node.model_copy(update={"base_url": url})}
    )
    # B must know where A's requests come from: A's entry is already a local entry.
    app = web.Application()
    mount(app, services)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    keyset = pair.a.keys.load(A_ORG)
    seed = keyset.signing.seed
    assert seed is not None

    async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Content-Digest": content_digest(data)}
        headers |= sign_request(
            "POST",
            url + "/peer/v1/receipts",
            headers,
            key_id=keyset.key_id_hex,
            private_key=seed,
        )
        async with (
            aiohttp.ClientSession() as http,
            http.post(url + "/peer/v1/receipts", data=data, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    try:
        yield post
    finally:
        await runner.cleanup()


async def test_pushed_receipts_checkpoints_are_kept_by_the_peer_route(pair: Pair) -> None:
    """POST /peer/v1/receipts on B, signed by A: services_for now knows A's audit key."""
    recorder = _Recorder()
    async with receipts_route(pair, recorder) as post:
        receipt = await a_receipt(pair.a)
        carried = await pair.a.audit_log.for_peer(None)
        status, answer = await post({"receipt": receipt.to_dict(), "checkpoint": carried.to_json()})
        assert status == 200, answer
        assert answer == {"recorded": True, "checkpoint": "first"}
        # Later, with a consistency proof from the size B holds: "consistent".
        held = await pair.b.audit_log.held_size(pair.a.audit_log.origin)
        await grow(pair.a, 4)
        proved = await pair.a.audit_log.for_peer(held)
        status, answer = await post(
            {"receipt": (await a_receipt(pair.a)).to_dict(), "checkpoint": proved.to_json()}
        )
        assert (status, answer["checkpoint"]) == (200, "consistent")
        # A forged checkpoint: the receipt is still recorded, the conflict answered and kept.
        signer = await pair.a.audit_log.signer()
        assert held is not None
        forged = sign_checkpoint(Checkpoint(signer.name, held, merkle.leaf_hash(b"z")), signer)
        bad = PeerCheckpoint(forged, None, [])
        status, answer = await post(
            {"receipt": (await a_receipt(pair.a)).to_dict(), "checkpoint": bad.to_json()}
        )
        assert (status, answer["checkpoint"]) == (200, "conflict")
        assert len(recorder.receipts) == 3
        # A malformed checkpoint is refused before anything is recorded.
        status, answer = await post(
            {"receipt": (await a_receipt(pair.a)).to_dict(), "checkpoint": {"since": 1}}
        )
        assert status == 400 and len(recorder.receipts) == 3
    statuses = [w["status"] for w in await pair.b.audit_log.witnessed(pair.a.audit_log.origin)]
    assert statuses == ["first", "consistent", "conflict"]


async def test_a_carried_checkpoint_with_a_bad_signature_length_refuses_the_receipt(
    engine_pair: Pair,
) -> None:
    """Issue 17, item 12: a 500 after the receipt was recorded; now refused before anything."""
    pair = engine_pair
    recorder = _Recorder()
    note = (await pair.a.audit_log.for_peer(None)).note
    async with receipts_route(pair, recorder) as post:
        for length in (63, 65):
            receipt = await a_receipt(pair.a)
            cut = PeerCheckpoint(with_signature_length(note, length), None, [])
            status, answer = await post({"receipt": receipt.to_dict(), "checkpoint": cut.to_json()})
            assert status == 422, answer
            assert answer["type"] == "urn:handover:problem:integrity-failure"
            assert f"is {length} bytes, not the 64" in answer["detail"]
        assert recorder.receipts == []  # nothing recorded
        assert await pair.b.audit_log.witnessed() == []
        refused = await pair.b.audit_log.show(action="receipt.refused")
        assert [(e.entry.outcome, e.entry.detail["reason"]) for e in refused] == [
            ("refused", "bad-checkpoint"),
            ("refused", "bad-checkpoint"),
        ]
        # The same receipt with its checkpoint intact is then taken as usual.
        good = (await pair.a.audit_log.for_peer(None)).to_json()
        status, answer = await post({"receipt": receipt.to_dict(), "checkpoint": good})
        assert (status, answer) == (200, {"recorded": True, "checkpoint": "first"})
        assert len(recorder.receipts) == 1


async def test_a_receipts_own_checkpoint_with_a_bad_signature_length_is_refused_as_witness(
    pair: Pair,
) -> None:
    """The checkpoint inside a receipt (signed with it): not kept, audited, nothing raised."""
    note = (await pair.a.audit_log.for_peer(None)).note
    receipt = await _receipt_with(pair.a, with_signature_length(note, 63))
    out = await witness_of(pair.b).receipt(receipt)
    assert (out.status, out.reason) == ("refused", "bad-checkpoint")
    assert await pair.b.audit_log.witnessed() == []
