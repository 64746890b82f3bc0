"""What the receiving pages need on a test node (:func:`tests.unit.auth.support.open_node`):
the inbox, the directory and the transfer requests over the node's store, and a second
school on the same node (Cliff Road Academy) that sends a pupil's file, sealed to us and
signed as between two nodes, through the inbox's own upload steps (offer, chunk,
complete). Requests go to a stand-in peer that takes everything, and an authorised
request queues its file in a stand-in outbox (the real ones are tested in
``tests/integration/exchange``)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from keys.keyfiles import KeyFiles
from keys.sealing import KekProtection
from schemas.manifest import Recipient, Sender
from schemas.peer import OfferBody
from schemas.records import NewAction, NewConcern, NewPupil, NewTriage
from tests.integration.package.support import identity
from tests.unit.auth.support import KEK, OTHER_URN, URN, Node
from transfer.alerts import Alerts
from transfer.config import Config, SmtpSection
from transfer.directory.service import Directory
from transfer.exchange.inbox import Inbox, PeerCaller
from transfer.exchange.requests import TransferRequests
from transfer.httpsig import content_digest
from transfer.identifiers import upn_check_letter
from transfer.mail import Mailer
from transfer.package.from_store import build_leaver_package
from transfer.store.permissions import Actor, Role

SENDER_NAME = "Cliff Road Academy"


def upn(serial: int) -> str:
    body = f"801200026{serial:03d}"
    return upn_check_letter(body) + body


class FakeOutbox:
    """The outbox as requests use it: a file queued is a package id."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, str]] = []

    async def queue_leaver_file(self, actor: Actor, pupil_id: str, to_org_id: str, **_: Any) -> Any:
        self.queued.append((pupil_id, to_org_id))
        return SimpleNamespace(id=str(uuid.uuid4()))

    async def latest_for_pupil(self, org_id: str, pupil_id: str, kind: str = "") -> Any:
        return None


class FakePeer:
    """The other node, as far as requests go: it takes everything."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def request_json(
        self, from_org: str, to_org: str, method: str, path: str, body: Any = None
    ) -> dict[str, Any]:
        self.sent.append((from_org, to_org, path))
        return {}


@dataclass
class Receiving:
    node: Node
    inbox: Inbox
    keys: KeyFiles
    directory: Directory
    requests: TransferRequests
    outbox: FakeOutbox
    peer: FakePeer
    sender_dsl: Actor
    #: The sending school's pupil (Amara Okafor, born 3 November 2014, UPN ``upn(101)``).
    sent_pupil: str
    tmp: Path
    packages: list[str] = field(default_factory=list)

    async def deliver(self) -> str:
        """The sender's file of its pupil, sealed to us and delivered to our inbox; its id."""
        store = self.node.store
        sender, to = self.keys.load(OTHER_URN), self.keys.load(URN)
        path = self.tmp / f"{uuid.uuid4().hex}.age"
        with path.open("wb") as f:
            built = await build_leaver_package(
                store,
                self.sender_dsl,
                self.sent_pupil,
                f,
                sender=Sender(
                    org_id=OTHER_URN,
                    key_fingerprint=sender.fingerprint,
                    signing_key_id=sender.key_id_hex,
                ),
                recipient=Recipient(org_id=URN, key_fingerprint=to.fingerprint),
                signer=sender.minisign_secret_key(),
                recipients=[identity(to).recipient],
            )
        data = path.read_bytes()
        path.unlink()
        pid = str(built.manifest.package_id)
        caller = PeerCaller(OTHER_URN, SENDER_NAME, sender.key_id_hex)
        await self.inbox.offer(
            caller,
            OfferBody(
                package_id=uuid.UUID(pid),
                package_kind="leaver_file",
                sender_org_id=OTHER_URN,
                recipient_org_id=URN,
                size=len(data),
                ciphertext_sha256=hashlib.sha256(data).hexdigest(),
            ),
        )

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        await self.inbox.receive_chunk(caller, pid, 0, content_digest(data), chunks())
        await self.inbox.complete(caller, pid)
        self.packages.append(pid)
        return pid

    async def received_request(self, of_upn: str) -> str:
        """Cliff Road Academy asks us for the file of the pupil with ``of_upn``; its id."""
        rid = str(uuid.uuid4())
        await self.requests.receive(
            OTHER_URN,
            {
                "request_id": rid,
                "requester_org_id": OTHER_URN,
                "holder_org_id": URN,
                "upn": of_upn,
                "dob": "2014-11-03",
                "surname": "Okafor",
                "forename": "Amara",
                "note": None,
            },
        )
        return rid


async def receiving(node: Node, config: Config, tmp: Path) -> Receiving:
    """The receiving services over ``node``; call it before anyone signs in: it moves the
    node's clock to now (the keys are made now, and packages are signed at the store's
    time), and the clock still moves only when the test moves it."""
    node.clock.now = max(node.clock.now, datetime.now(UTC))
    store = node.store
    keys = KeyFiles.for_data_dir(node.data_dir, KekProtection(KEK))
    await keys.create(URN)
    await keys.create(OTHER_URN)
    node.clock.now = max(node.clock.now, datetime.now(UTC))
    directory = Directory(store, keys=keys, base_url="https://node.example")
    inbox = Inbox(
        store=store, kek=KEK, keys=keys, directory=directory, config=config, data_dir=node.data_dir
    )
    outbox, peer = FakeOutbox(), FakePeer()
    requests = TransferRequests(
        store=store,
        outbox=outbox,
        client=peer,
        directory=directory,
        alerts=Alerts(store, Mailer(SmtpSection())),
        config=config,
    )
    # The sending school: a pupil with a concern, a triage decision and an action.
    s_admin = await store.actor_for(
        (
            await store.bootstrap_staff(
                OTHER_URN, username="sadmin", display_name="Sol Admin", roles=[Role.ADMINISTRATOR]
            )
        ).id
    )
    s_dsl = await store.actor_for(
        (
            await store.bootstrap_staff(
                OTHER_URN, username="sdsl", display_name="Rita Dee", roles=[Role.DSL]
            )
        ).id
    )
    amara = await store.create_pupil(
        s_admin,
        NewPupil(
            upn=upn(101),
            surname="Okafor",
            forename="Amara",
            dob=date(2014, 11, 3),
            sex="F",
            year_group="6",
        ),
    )
    concern = await store.record_concern(
        s_dsl,
        NewConcern(
            pupil_ids=(amara.id,),
            category="child_protection",
            happened_at=node.clock.now - timedelta(days=40),
            location="Playground",
            account="Amara said she is scared to go home when her uncle visits.",
        ),
    )
    await store.triage_concern(
        s_dsl,
        concern.id,
        NewTriage(decision="refer_social_care", reason="Disclosure of fear at home."),
    )
    await store.add_action(s_dsl, concern.id, NewAction(text="Call the MASH duty desk."))
    return Receiving(node, inbox, keys, directory, requests, outbox, peer, s_dsl, amara.id, tmp)
