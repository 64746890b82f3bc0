"""A receiving node on a real socket, and a sending school that drives the peer protocol.

Both schools are hosted on one node (one store, one key files), which is how
a local authority runs them; the sender still signs every request with its
own key and seals the package to the receiver, exactly as between two nodes.
The peer protocol is driven here with aiohttp and :mod:`transfer.httpsig`
directly, so these tests do not depend on the sending side's client.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from schemas.auditing import AuditEvent, MemoryAudit
from schemas.manifest import Recipient, Sender
from schemas.records import (
    Destination,
    NewAction,
    NewBodyMapMark,
    NewConcern,
    NewContact,
    NewTriage,
    PupilChanges,
)
from tests.integration.package.support import identity
from tests.integration.store.conftest import KEK, SCHOOL_URN, School, make_school, start_clock
from transfer.api.peer import PeerServices, mount
from transfer.config import Config, NodeSection, TransferSection
from transfer.directory.service import Directory
from transfer.exchange.inbox import Inbox
from transfer.exchange.nonces import NonceTable
from transfer.httpsig import content_digest, sign_request
from transfer.identifiers import upn_check_letter
from transfer.package.build import BuiltPackage
from transfer.package.from_store import build_leaver_package
from transfer.receipts import SignedReceipt
from transfer.store.permissions import Actor, Role
from transfer.store.service import Store

SENDER = SCHOOL_URN  # Harbourside Primary, made by make_school
RECEIVER = "199002"
RECEIVER_LAESTAB = "8012001"
MAX_PACKAGE = 4 * 1024 * 1024
# 300 KiB, spans several store chunks; a PDF as far as the store's check of its first bytes goes.
DOCUMENT = b"%PDF-1.7\n" + bytes(range(256)) * 1200
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def upn(serial: int) -> str:
    body = f"80120001{serial:04d}"
    return upn_check_letter(body) + body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ReceiptRecorder:
    """Stands in for the outbox on the ``/receipts`` route: keeps what it is given."""

    def __init__(self) -> None:
        self.receipts: list[SignedReceipt] = []

    async def record_receipt(self, signed: SignedReceipt) -> None:
        self.receipts.append(signed)


@dataclass
class Rig:
    store: Store
    audit: MemoryAudit
    keys: KeyFiles
    directory: Directory
    inbox: Inbox
    services: PeerServices
    school: School
    receiver_dsl: Actor
    receiver_staff: Actor
    url: str
    http: aiohttp.ClientSession
    data_dir: Path
    recorder: ReceiptRecorder
    tmp: Path
    packages: dict[str, Path] = field(default_factory=dict)

    @property
    def sender_keys(self) -> KeySet:
        return self.keys.load(SENDER)

    @property
    def receiver_keys(self) -> KeySet:
        return self.keys.load(RECEIVER)

    def events(self, action: str, outcome: str | None = None) -> list[AuditEvent]:
        return [
            e
            for e in self.audit.events
            if e.action == action and (outcome is None or e.outcome == outcome)
        ]

    def signed_headers(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        keyset: KeySet | None = None,
        created: int | None = None,
        nonce: str | None = None,
        digest: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        ks = keyset or self.sender_keys
        headers = {"Content-Digest": digest or content_digest(body), **(extra or {})}
        seed = ks.signing.seed
        assert seed is not None
        headers.update(
            sign_request(
                method,
                self.url + path,
                headers,
                key_id=ks.key_id_hex,
                private_key=seed,
                created=created,
                nonce=nonce,
            )
        )
        return headers

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] = b"",
        *,
        keyset: KeySet | None = None,
        extra: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """A signed request; (status, JSON body or {}, headers)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = self.signed_headers(method, path, data, keyset=keyset, extra=extra, **kw)
        if isinstance(body, dict):
            headers["Content-Type"] = "application/json"
        async with self.http.request(method, self.url + path, data=data, headers=headers) as r:
            raw = await r.read()
            return r.status, (json.loads(raw) if raw else {}), dict(r.headers)

    async def make_pupil_file(self, serial: int = 1, *, dob: date = date(2014, 11, 3)) -> str:
        """A pupil at the sending school with a chronology and a document; its id."""
        s, school = self.store, self.school
        pupil = await school.pupil(upn(serial), surname="Okafor", dob=dob)
        # Leaving for the receiving school: its file may go there without a reason.
        await s.update_pupil(
            school.admin,
            pupil.id,
            PupilChanges(destination=Destination(kind="school", urn=RECEIVER)),
        )
        concern = await s.record_concern(
            school.staff,
            NewConcern(
                pupil_ids=(pupil.id,),
                category="child_protection",
                happened_at=T0,
                location="Playground",
                account="Said she is scared to go home.",
                body_map=(
                    NewBodyMapMark(
                        pupil_id=pupil.id, side="front", x=0.4, y=0.3, description="bruise"
                    ),
                ),
            ),
        )
        await s.triage_concern(
            school.dsl, concern.id, NewTriage(decision="refer_social_care", reason="Disclosure")
        )
        await s.add_action(school.dsl, concern.id, NewAction(text="Call MASH"))
        await s.add_contact(
            school.dsl,
            concern.id,
            NewContact(agency="Bristol MASH", contacted_at=T0 + timedelta(hours=1), outcome="ok"),
        )

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(DOCUMENT), 50_000):
                yield DOCUMENT[i : i + 50_000]

        await s.add_document(
            school.dsl,
            pupil.id,
            chunks(),
            filename="Body map.pdf",
            concern_id=concern.id,
        )
        return pupil.id

    async def build(
        self,
        pupil_id: str,
        *,
        recipient_org: str = RECEIVER,
        to: KeySet | None = None,
        name: str = "pkg",
    ) -> tuple[BuiltPackage, bytes]:
        """The leaver's file of ``pupil_id``, sealed to the receiver; (built, ciphertext)."""
        sender, to_keys = self.sender_keys, to or self.receiver_keys
        path = self.tmp / f"{name}-{uuid.uuid4().hex[:8]}.age"
        with path.open("wb") as f:
            built = await build_leaver_package(
                self.store,
                self.school.dsl,
                pupil_id,
                f,
                sender=Sender(
                    org_id=sender.org_id,
                    key_fingerprint=sender.fingerprint,
                    signing_key_id=sender.key_id_hex,
                ),
                recipient=Recipient(org_id=recipient_org, key_fingerprint=to_keys.fingerprint),
                signer=sender.minisign_secret_key(),
                recipients=[identity(to_keys).recipient],
            )
        return built, path.read_bytes()

    def offer_body(self, package_id: str, data: bytes, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "package_id": package_id,
            "package_kind": "leaver_file",
            "sender_org_id": SENDER,
            "recipient_org_id": RECEIVER,
            "size": len(data),
            "ciphertext_sha256": hashlib.sha256(data).hexdigest(),
        }
        body.update(changes)
        return body

    async def patch(
        self, package_id: str, offset: int, chunk: bytes, *, digest: str | None = None
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        return await self.call(
            "PATCH",
            f"/peer/v1/packages/{package_id}",
            chunk,
            digest=digest,
            extra={"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        )

    async def upload(self, package_id: str, data: bytes, chunk: int = 100_000) -> None:
        status, body, _ = await self.call(
            "POST", "/peer/v1/packages", self.offer_body(package_id, data)
        )
        assert status in (200, 201), body
        offset = body["offset"]
        while offset < len(data):
            status, body, headers = await self.patch(
                package_id, offset, data[offset : offset + chunk]
            )
            assert status == 204, body
            offset = int(headers["Upload-Offset"])

    async def deliver(self, pupil_id: str) -> tuple[str, bytes, SignedReceipt]:
        """Build, upload and complete; (package id, ciphertext, delivered receipt)."""
        built, data = await self.build(pupil_id)
        pid = str(built.manifest.package_id)
        await self.upload(pid, data)
        status, body, _ = await self.call("POST", f"/peer/v1/packages/{pid}/complete", {})
        assert status == 200, body
        return pid, data, SignedReceipt.from_dict(body["receipt"])


@asynccontextmanager
async def receiving_node(
    db_url: str, tmp: Path, *, max_package: int = MAX_PACKAGE, serve: bool = True
) -> AsyncIterator[Rig]:
    """The receiving node; ``serve=False`` opens no port (the in-memory transport's tests)."""
    audit = MemoryAudit()
    data_dir = tmp / "node"
    store = await Store.open(db_url, KEK, audit, data_dir=data_dir)
    http: aiohttp.ClientSession | None = None
    runner: web.AppRunner | None = None
    try:
        school = await make_school(store, audit, start_clock(), data_dir)
        await store.create_school(name="Riverside Academy", urn=RECEIVER, laestab=RECEIVER_LAESTAB)
        dsl = await store.bootstrap_staff(
            RECEIVER, username="rdsl", display_name="Rita Dee", roles=[Role.DSL]
        )
        staff = await store.bootstrap_staff(
            RECEIVER, username="rstaff", display_name="Sam Staff", roles=[Role.STAFF]
        )
        keys = KeyFiles.for_data_dir(data_dir, KekProtection(KEK))
        await keys.create(SENDER)
        await keys.create(RECEIVER)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = Config(
            node=NodeSection(base_url=url),
            transfer=TransferSection(max_package_bytes=max_package, retry_base_seconds=1.0),
        )
        directory = Directory(store, keys=keys, base_url=url)
        inbox = Inbox(
            store=store, kek=KEK, keys=keys, directory=directory, config=config, data_dir=data_dir
        )
        recorder = ReceiptRecorder()
        services = PeerServices(
            inbox=inbox,
            directory=directory,
            nonces=NonceTable(store.engine, skew_seconds=config.transfer.clock_skew_seconds),
            config=config,
            receipts=recorder,
        )
        app = web.Application()
        mount(app, services)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        if serve:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        http = aiohttp.ClientSession()
        yield Rig(
            store=store,
            audit=audit,
            keys=keys,
            directory=directory,
            inbox=inbox,
            services=services,
            school=school,
            receiver_dsl=await store.actor_for(dsl.id),
            receiver_staff=await store.actor_for(staff.id),
            url=url,
            http=http,
            data_dir=data_dir,
            recorder=recorder,
            tmp=tmp,
        )
    finally:
        if http is not None:
            await http.close()
        if runner is not None:
            await runner.cleanup()
        await store.close()


def now_ts() -> int:
    return int(time.time())
