"""A node with a school, its keys, a DSL, a real SMTP server and referral packages to offer."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from receivers.portal import PickupPortal, PortalSettings
from schemas.manifest import PackageKind, Recipient, Sender, Subject
from tests.unit.auth.support import KEK, URN, Node, open_node
from transfer.age import X25519Recipient, parse_recipient
from transfer.api import create_app
from transfer.auth import CHEAPEST
from transfer.config import Config, SmtpSection
from transfer.mail import Mailer
from transfer.package.build import BuiltPackage, build_package_file
from transfer.package.layout import EntrySource
from transfer.store.permissions import Actor, Role

AGENCY_EMAIL = "mash.team@bristol.example.org"
#: A document larger than several age chunks, so streaming is exercised.
DOCUMENT = hashlib.shake_256(b"body map").digest(300_000)
SHA = hashlib.sha256(DOCUMENT).hexdigest()
#: A MASH referral as the referral wizard seals it (schemas.referrals.MashReferral).
FORM: dict[str, Any] = {
    "kind": "social_care",
    "form_version": 1,
    "request": "safeguarding",
    "child": {
        "forename": "Ellie",
        "surname": "Marsh",
        "dob": "2016-05-01",
        "address": "4 Dock Road, Bristol",
        "sex": "female",
        "school": "Harbourside Primary",
        "upn": "H801200001001",
        "gp": "",
    },
    "carers": [
        {"name": "Kim Marsh", "relationship": "Mother", "parental_responsibility": True},
    ],
    "household": [{"name": "Lee Dunn", "relationship": "Mother's partner"}],
    "referrer": {
        "name": "Dana Lead",
        "role": "Designated Safeguarding Lead",
        "agency": "Harbourside Primary",
        "phone": "0117 496 0000",
    },
    "consent": {
        "parents_aware": False,
        "consent_given": False,
        "no_consent_reason": "greater_risk",
        "explanation": "The uncle lives with the family.",
    },
    "reason": "Bruising seen on the upper arm; the child said\nher uncle did it.",
    "harm_types": ["physical", "emotional"],
    "disclosures": [
        {
            "by": "Ellie",
            "to": "Ms Reed (class teacher)",
            "at": "2026-09-07T10:15:00+01:00",
            "summary": "[redacted] grabbed my arm.",
        }
    ],
    "impact_on_child": "Withdrawn in class, flinches when approached.",
    "risk_rating": "high",
    "risk_reasons": "A disclosure and visible bruising.",
}
CONCERN_TEXT = "Ellie was quiet in class and flinched"
CONCERN: dict[str, Any] = {
    "schema_version": 1,
    "id": "c1",
    "org_id": "urn-1",
    "pupil_ids": ["p1"],
    "category": "physical_abuse",
    "restricted": False,
    "happened_at": "2026-09-07T09:30:00+01:00",
    "recorded_at": "2026-09-07T11:00:00+01:00",
    "recorded_by": "s-reed",
    "location": "Classroom 3",
    "account": CONCERN_TEXT,
    "people_involved": "[redacted]",
    "status": "open",
}
DOCUMENT_REF: dict[str, Any] = {
    "schema_version": 1,
    "id": "d1",
    "pupil_id": "p1",
    "concern_id": "c1",
    "sha256": SHA,
    "size": len(DOCUMENT),
    "media_type": "application/pdf",
    "filename": "body-map.pdf",
    "uploaded_at": "2026-09-07T11:05:00+01:00",
    "uploaded_by": "s-reed",
}
CHRONOLOGY: list[dict[str, Any]] = [
    {
        "schema_version": 1,
        "kind": kind,
        "id": record["id"],
        "pupil_id": "p1",
        "occurred_at": at,
        "recorded_at": record.get("recorded_at", record.get("uploaded_at")),
        "concern_id": "c1",
        "record": record,
    }
    for kind, record, at in (
        ("concern", CONCERN, CONCERN["happened_at"]),
        ("document", DOCUMENT_REF, DOCUMENT_REF["uploaded_at"]),
    )
]
PEOPLE: list[dict[str, Any]] = [
    {"schema_version": 1, "id": "s-reed", "name": "Jo Reed", "role": "staff"},
]


class Inbox:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.received = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content))
        self.received.set()
        return "250 OK"

    def link(self) -> str:
        """The portal link in the last message."""
        body = self.messages[-1].get_payload(decode=True)
        assert isinstance(body, bytes)
        for line in body.decode().splitlines():
            if "/portal/open?t=" in line:
                return line.strip()
        raise AssertionError("no link in the e-mail")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class Acknowledgements:
    """Stands in for the referrals service: keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def record_acknowledgement(
        self,
        referral_id: str,
        *,
        name: str,
        agency_reference: str,
        at: datetime,
        via: str = "portal",
    ) -> None:
        self.calls.append(
            {
                "referral_id": referral_id,
                "name": name,
                "reference": agency_reference,
                "at": at,
                "via": via,
            }
        )


@dataclass
class PortalWorld:
    node: Node
    keys: KeyFiles
    keyset: KeySet
    portal: PickupPortal
    dsl: Actor
    acks: Acknowledgements
    inbox: Inbox | None
    tmp: Path
    packages: list[Path] = field(default_factory=list)

    def pickup_ids(self) -> list[str]:
        """The pickups made so far, oldest first (from the audit events)."""
        return [
            e.targets["pickup"]
            for e in self.node.audit.events
            if e.action == "portal.created" and e.outcome == "ok"
        ]

    def package(
        self,
        *,
        kind: PackageKind = "referral_social_care",
        to_self: bool = True,
        document: bytes = DOCUMENT,
        extra: list[EntrySource] | None = None,
    ) -> tuple[Path, BuiltPackage]:
        """A referral package signed by the school, encrypted to its own key (or not)."""
        agency = KeySet.generate("mash-bristol", now=datetime(2026, 1, 1, tzinfo=UTC))
        target = agency if not to_self else self.keyset
        sha = hashlib.sha256(document).hexdigest()
        entries = [
            EntrySource.from_json("records/referral.json", FORM),
            EntrySource.from_json("records/chronology.json", CHRONOLOGY),
            EntrySource.from_json("records/people.json", PEOPLE),
            EntrySource.from_json("records/concerns/c1.json", CONCERN),
            EntrySource.from_json(
                "records/documents/d1.json", {**DOCUMENT_REF, "sha256": sha, "size": len(document)}
            ),
            *(extra or []),
            EntrySource.from_bytes(f"documents/{sha}", document),
        ]
        path = self.tmp / f"referral-{len(self.packages)}.age"
        recipient = parse_recipient(target.recipient)
        assert isinstance(recipient, X25519Recipient)
        built = build_package_file(
            path,
            kind=kind,
            sender=Sender(
                org_id=URN,
                key_fingerprint=self.keyset.fingerprint,
                signing_key_id=self.keyset.key_id_hex,
            ),
            recipient=Recipient(org_id="mash-bristol", key_fingerprint=agency.fingerprint),
            subject=Subject(surname="Marsh", forename="Ellie", dob=date(2016, 5, 1)),
            entries=entries,
            signer=self.keyset.minisign_secret_key(),
            recipients=[recipient],
        )
        self.packages.append(path)
        return path, built


@asynccontextmanager
async def portal_world(
    db_url: str,
    tmp: Path,
    *,
    smtp_port: int | None = None,
    inbox: Inbox | None = None,
    settings: PortalSettings | None = None,
) -> AsyncIterator[PortalWorld]:
    async with open_node(db_url, tmp / "data") as node:
        keys = KeyFiles.for_data_dir(tmp / "data", KekProtection(KEK))
        keyset = await keys.create(URN)
        person = await node.person("dsl", [Role.DSL])
        dsl = await node.store.actor_for(person.staff.id)
        mailer = None
        if smtp_port is not None:
            mailer = Mailer(
                SmtpSection(
                    host="127.0.0.1",
                    port=smtp_port,
                    starttls=False,
                    from_address="handover@school.example.org",
                )
            )
        acks = Acknowledgements()
        portal = PickupPortal(
            node.store,
            keys,
            KEK,
            base_url="https://node.example.org",
            mailer=mailer,
            acknowledgements=acks,
            clock=node.clock,
            settings=settings or PortalSettings(passcode_cost=CHEAPEST),
        )
        yield PortalWorld(node, keys, keyset, portal, dsl, acks, inbox, tmp)


@asynccontextmanager
async def served(world: PortalWorld, *, ssl_context: Any = None) -> AsyncIterator[str]:
    """The API and the portal on a real socket on 127.0.0.1; the base URL."""
    app = create_app(
        store=world.node.store,
        accounts=world.node.accounts,
        audit=world.node.audit,
        config=Config(),
        portal=world.portal,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context)
    await site.start()
    base = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    world.portal.base_url = base
    try:
        yield base
    finally:
        await runner.cleanup()


def no_plaintext_under(root: Path, *needles: bytes) -> list[Path]:
    """Files under ``root`` that contain any of ``needles``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(n in data for n in needles):
                found.append(path)
    return found


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHROMIUM = "/usr/bin/chromium"
