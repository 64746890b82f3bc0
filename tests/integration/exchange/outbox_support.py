"""A sending school with an outbox, and a tiny real peer (aiohttp on 127.0.0.1) to send to.

The peer implements the protocol side of ``/peer/v1`` (contracts §5): it
verifies every request's HTTP message signature, keeps uploads by offset,
checks each chunk's ``Content-Digest`` and the whole package's SHA-256, and
answers ``complete`` with a delivered receipt signed by the receiving
school's key. Knobs let a test take it down, cut a connection mid-upload,
refuse with a problem document or sign receipts with the wrong key.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from schemas.auditing import MemoryAudit
from schemas.directory import DirectoryEntry, OrgKind
from schemas.manifest import PackageKind
from schemas.receipt import ReceiptActor, ReceiptBody
from schemas.records import Destination, NewConcern, NewPupil
from tests.integration.store.conftest import KEK, SCHOOL_URN, School, make_school, start_clock
from transfer.config import Config, TransferSection
from transfer.directory.document import entry_from_keyset
from transfer.errors import AuthenticationError, NotFoundError
from transfer.exchange.outbox import Outbox
from transfer.httpsig import check_digest, verify_request
from transfer.identifiers import upn_check_letter
from transfer.receipts import SignedReceipt, sign_receipt
from transfer.store.service import Store
from transfer.transport.http import PeerClient

RECEIVER = "199002"
CHUNK = 64 * 1024
DOC_BYTES = 300 * 1024


def upn(serial: int) -> str:
    body = f"80120001{serial:04d}"
    return upn_check_letter(body) + body


class StaticDirectory:
    """A directory view over fixed entries (what the outbox, the peer client and the web
    app's pages read of ``Directory``)."""

    def __init__(self) -> None:
        self.by_id: dict[str, DirectoryEntry] = {}
        self.keys: dict[str, bytes] = {}

    def add(
        self,
        keyset: KeySet,
        name: str,
        endpoint: str | None,
        *,
        kind: OrgKind = "school",
        urn: str | None = None,
        town: str | None = None,
    ) -> None:
        self.by_id[keyset.org_id] = entry_from_keyset(
            keyset, name=name, kind=kind, endpoint=endpoint, urn=urn, town=town
        )
        self.keys[keyset.key_id_hex] = keyset.minisign_public_key.key

    async def entries(self) -> list[DirectoryEntry]:
        return list(self.by_id.values())

    async def entry(self, org_id: str) -> DirectoryEntry:
        try:
            return self.by_id[org_id]
        except KeyError:
            raise NotFoundError(f"organisation {org_id} is not in the directory") from None

    async def signing_public_key(self, key_id: str, at: datetime) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise NotFoundError(f"no key {key_id}") from None

    async def signer(self, key_id: str, at: datetime) -> tuple[DirectoryEntry, bytes]:
        for entry in self.by_id.values():
            if key_id in entry.key_ids() and key_id in self.keys:
                return entry, self.keys[key_id]
        raise AuthenticationError(f"no organisation has the key {key_id}")


@dataclass
class Upload:
    size: int
    sha256: str
    sender: str
    kind: PackageKind
    data: bytearray = field(default_factory=bytearray)
    receipts: list[SignedReceipt] = field(default_factory=list)


@dataclass
class TinyPeer:
    """The receiving school's node, reduced to the delivery protocol."""

    keyset: KeySet
    sender_keys: dict[str, bytes]
    url: str = ""
    uploads: dict[str, Upload] = field(default_factory=dict)
    #: How many times a package was stored whole (must stay 1 per package).
    stored: dict[str, int] = field(default_factory=dict)
    patch_bytes: list[int] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    down: bool = False
    #: Cut the connection on the PATCH with this (0-based) number, after reading it.
    drop_patch: int | None = None
    refuse: tuple[int, str] | None = None
    #: Hang (as a killed sender would leave it) on the PATCH with this number.
    stall_patch: int | None = None
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    unstall: asyncio.Event = field(default_factory=asyncio.Event)
    wrong_key: KeySet | None = None

    def _verify(self, request: web.Request) -> str:
        uri = self.url + request.path_qs
        verified = verify_request(
            request.method,
            uri,
            request.headers,
            public_key_for=lambda kid: self.sender_keys[kid],
            now=int(time.time()),
        )
        if verified.nonce in self.nonces:
            raise web.HTTPUnauthorized(text="replayed")
        self.nonces.add(verified.nonce)
        return verified.key_id

    def receipt(
        self,
        package_id: str,
        kind: Literal["delivered", "viewed", "accepted", "rejected"],
        *,
        manifest_sha256: str | None = None,
        reason: str | None = None,
    ) -> SignedReceipt:
        up = self.uploads[package_id]
        signer = self.wrong_key or self.keyset
        body = ReceiptBody(
            receipt_id=uuid.uuid4(),
            kind=kind,
            package_id=uuid.UUID(package_id),
            package_kind=up.kind,
            sender_org_id=up.sender,
            receiver_org_id=self.keyset.org_id,
            receiver_key_id=signer.key_id_hex,
            ciphertext_sha256=up.sha256,
            ciphertext_size=up.size,
            manifest_sha256=manifest_sha256,
            acted_by=None if kind == "delivered" else ReceiptActor(name="Dee Ess", role="dsl"),
            reason=reason,
            issued_at=datetime.now(UTC),
        )
        if self.wrong_key is not None:
            forged = sign_receipt(
                body.model_copy(update={"receiver_org_id": signer.org_id}), signer
            )
            signed = SignedReceipt(
                body=body, body_bytes=body.canonical_bytes(), signature_text=forged.signature_text
            )
        else:
            signed = sign_receipt(body, signer)
        up.receipts.append(signed)
        return signed

    def _problem(self, status: int, title: str, **extra: Any) -> web.Response:
        return web.json_response(
            {"type": "about:blank", "title": title, "status": status, "detail": title, **extra},
            status=status,
            content_type="application/problem+json",
        )

    @web.middleware
    async def gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.down:
            return self._problem(503, "down for maintenance")
        try:
            self._verify(request)
        except Exception as exc:
            return self._problem(401, f"signature refused: {exc}")
        if self.refuse is not None:
            return self._problem(*self.refuse)
        response: web.StreamResponse = await handler(request)
        return response

    async def start_upload(self, request: web.Request) -> web.Response:
        body = await request.json()
        pid = body["package_id"]
        up = self.uploads.get(pid)
        if up is not None and self.stored.get(pid):
            return web.json_response(
                {"state": "delivered", "receipt": up.receipts[0].to_dict()}, status=200
            )
        if up is None:
            self.uploads[pid] = Upload(
                size=body["size"],
                sha256=body["ciphertext_sha256"],
                sender=body["sender_org_id"],
                kind=body["package_kind"],
            )
            return web.json_response({"offset": 0, "state": "receiving"}, status=201)
        return web.json_response({"offset": len(up.data), "state": "receiving"})

    async def head(self, request: web.Request) -> web.Response:
        up = self.uploads[request.match_info["id"]]
        return web.Response(status=204, headers={"Upload-Offset": str(len(up.data))})

    async def patch(self, request: web.Request) -> web.StreamResponse:
        up = self.uploads[request.match_info["id"]]
        offset = int(request.headers["Upload-Offset"])
        if offset != len(up.data):
            return self._problem(409, "wrong offset", offset=len(up.data))
        number = len(self.patch_bytes)
        if number == self.stall_patch:
            self.stall_patch = None
            self.stalled.set()
            await self.unstall.wait()
            raise web.HTTPServiceUnavailable
        chunk = await request.read()
        self.patch_bytes.append(len(chunk))
        if self.drop_patch is not None and number == self.drop_patch:
            self.drop_patch = None
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=204)
        check_digest(request.headers["Content-Digest"], hashlib.sha256(chunk).digest())
        up.data += chunk
        return web.Response(status=204, headers={"Upload-Offset": str(len(up.data))})

    async def complete(self, request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        up = self.uploads[pid]
        if self.stored.get(pid):
            return web.json_response({"receipt": up.receipts[0].to_dict()})
        if len(up.data) != up.size or hashlib.sha256(up.data).hexdigest() != up.sha256:
            return self._problem(422, "the bytes do not match")
        self.stored[pid] = self.stored.get(pid, 0) + 1
        return web.json_response({"receipt": self.receipt(pid, "delivered").to_dict()})

    async def receipts(self, request: web.Request) -> web.Response:
        up = self.uploads[request.match_info["id"]]
        return web.json_response({"receipts": [r.to_dict() for r in up.receipts]})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.gate], client_max_size=1024**3)
        app.router.add_post("/peer/v1/packages", self.start_upload)
        app.router.add_route("HEAD", "/peer/v1/packages/{id}", self.head)
        app.router.add_patch("/peer/v1/packages/{id}", self.patch)
        app.router.add_post("/peer/v1/packages/{id}/complete", self.complete)
        app.router.add_get("/peer/v1/packages/{id}/receipts", self.receipts)
        return app


@asynccontextmanager
async def running_peer(peer: TinyPeer) -> AsyncIterator[TinyPeer]:
    runner = web.AppRunner(peer.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    peer.url = f"http://127.0.0.1:{port}"
    try:
        yield peer
    finally:
        peer.unstall.set()
        await runner.cleanup()


@dataclass
class Sending:
    """A sending school (store, keys, outbox) and the tiny peer of the receiving school."""

    school: School
    keys: KeyFiles
    directory: StaticDirectory
    config: Config
    peer: TinyPeer
    outbox: Outbox
    pupil_id: str
    data_dir: Path

    @property
    def store(self) -> Store:
        return self.school.store

    def second_outbox(self, store: Store | None = None, worker: str = "other") -> Outbox:
        client = PeerClient(keys=self.keys, directory=self.directory, config=self.config)
        return Outbox(
            store=store or self.store,
            keys=self.keys,
            directory=self.directory,
            client=client,
            config=self.config,
            data_dir=self.data_dir,
            worker_id=worker,
            uniform=lambda: 0.5,
        )

    async def new_pupil(self, serial: int) -> str:
        p = await self.store.create_pupil(
            self.school.admin,
            NewPupil(
                upn=upn(serial),
                surname="Okafor",
                forename="Amara",
                dob=date(2014, 11, 3),
                sex="F",
                year_group="6",
                destination=Destination(kind="school", urn=RECEIVER, name="Cliff Road Academy"),
            ),
        )
        await self.store.record_concern(
            self.school.staff,
            NewConcern(
                pupil_ids=(p.id,),
                category="child_protection",
                happened_at=datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
                account="Said she was scared to go home.",
                location="Playground",
            ),
        )
        return p.id


def config(**transfer: Any) -> Config:
    values: dict[str, Any] = {
        "chunk_bytes": CHUNK,
        "retry_base_seconds": 2.0,
        "retry_max_seconds": 60.0,
        "give_up_hours": 2,
    }
    values.update(transfer)
    return Config(transfer=TransferSection(**values))


async def _document(store: Store, school: School, pupil_id: str) -> None:
    # A PDF as far as its first bytes go (the store keeps only kinds of document it knows).
    data = b"%PDF-1.7\n" + os.urandom(DOC_BYTES - 9)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 50_000):
            yield data[i : i + 50_000]

    await store.add_document(school.dsl, pupil_id, chunks(), filename="minutes.bin")


@asynccontextmanager
async def sending(db_url: str, tmp_path: Path, **transfer: Any) -> AsyncIterator[Sending]:
    """A school on ``db_url`` with a pupil whose file is ~300 KiB, and the receiver's peer."""
    audit = MemoryAudit()
    data_dir = tmp_path / "data"
    clock = start_clock()
    store = await Store.open(db_url, KEK, audit, data_dir=data_dir, clock=clock)
    try:
        school = await make_school(store, audit, clock, data_dir)
        keys = KeyFiles(data_dir / "keys", KekProtection(KEK))
        own = await keys.create(SCHOOL_URN)
        receiver = KeySet.generate(RECEIVER)
        peer = TinyPeer(keyset=receiver, sender_keys={own.key_id_hex: own.minisign_public_key.key})
        async with running_peer(peer):
            directory = StaticDirectory()
            directory.add(own, "Harbourside Primary", "http://127.0.0.1:1")
            directory.add(receiver, "Cliff Road Academy", peer.url)
            cfg = config(**transfer)
            client = PeerClient(keys=keys, directory=directory, config=cfg)
            outbox = Outbox(
                store=store,
                keys=keys,
                directory=directory,
                client=client,
                config=cfg,
                data_dir=data_dir,
                worker_id="first",
                uniform=lambda: 0.5,
            )
            s = Sending(school, keys, directory, cfg, peer, outbox, "", data_dir)
            s.pupil_id = await s.new_pupil(1)
            await _document(store, school, s.pupil_id)
            try:
                yield s
            finally:
                await client.close()
    finally:
        await store.close()
