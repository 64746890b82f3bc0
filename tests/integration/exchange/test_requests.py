"""Transfer requests between real nodes: aiohttp servers on 127.0.0.1 running the real peer
server, the real signed client, outbox, inbox and directory, on real databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from keys.keyfiles import KeyFiles
from keys.sealing import KekProtection
from schemas.auditing import MemoryAudit
from schemas.records import NewConcern, NewPupil
from tests.integration.alerts.test_alerts import upn
from tests.integration.exchange.inbox_support import free_port
from transfer.alerts import Alerts
from transfer.api.peer import PeerServices, mount
from transfer.config import Config, NodeSection, SmtpSection, TransferSection
from transfer.directory.document import entry_from_keyset
from transfer.directory.service import Directory
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.exchange.inbox import Inbox
from transfer.exchange.nonces import NonceTable
from transfer.exchange.outbox import Outbox
from transfer.exchange.requests import TransferRequests
from transfer.identifiers import InvalidUPN
from transfer.mail import Mailer
from transfer.store.permissions import Actor, PermissionDenied, Role
from transfer.store.service import Store
from transfer.transport.http import PeerClient

KEK = bytes(range(32))
PRIMARY, PRIMARY_LAESTAB = "199001", "8012000"
SECONDARY, SECONDARY_LAESTAB = "199002", "8012001"
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


class ShiftedClock:
    """Real time plus an offset a test can move (signatures use the real time)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class School:
    urn: str
    dsl: Actor
    teacher: Actor


@dataclass
class PeerNode:
    store: Store
    audit: MemoryAudit
    keys: KeyFiles
    directory: Directory
    client: PeerClient
    outbox: Outbox
    inbox: Inbox
    alerts: Alerts
    requests: TransferRequests
    url: str
    port: int
    clock: ShiftedClock
    app: web.Application
    data_dir: Path
    config: Config
    schools: dict[str, School] = field(default_factory=dict)
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def actions(self, prefix: str = "request.") -> list[tuple[str, str]]:
        return [(e.action, e.outcome) for e in self.audit.events if e.action.startswith(prefix)]

    async def add_pupil(self, urn: str, serial: int, *, leaving: date | None = None) -> str:
        admin = await self.store.actor_for(
            (await self.store.find_staff(urn, "admin")).id  # type: ignore[union-attr]
        )
        rec = await self.store.create_pupil(
            admin,
            NewPupil(
                upn=upn(serial),
                surname="Okafor",
                forename="Amara",
                dob=date(2014, 11, 3),
                sex="F",
                year_group="6",
                leaving_date=leaving,
            ),
        )
        return rec.id


async def _school(store: Store, urn: str, laestab: str, name: str) -> School:
    await store.create_school(name=name, urn=urn, laestab=laestab)
    ids = {}
    for username, roles in {
        "dsl": [Role.DSL],
        "teacher": [Role.STAFF],
        "admin": [Role.ADMINISTRATOR],
    }.items():
        rec = await store.bootstrap_staff(
            urn,
            username=username,
            display_name=username.title(),
            roles=roles,
            email=f"{username}@{urn}.example.org",
        )
        ids[username] = rec.id
    return School(urn, await store.actor_for(ids["dsl"]), await store.actor_for(ids["teacher"]))


@asynccontextmanager
async def node(
    db_url: str, data_dir: Path, schools: list[tuple[str, str, str]], **transfer: float
) -> AsyncIterator[PeerNode]:
    audit = MemoryAudit()
    clock = ShiftedClock()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = Config(
        node=NodeSection(base_url=url),
        transfer=TransferSection(retry_base_seconds=0.05, retry_max_seconds=1, **transfer),
    )
    store = await Store.open(db_url, KEK, audit, data_dir=data_dir, clock=clock)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        keys = KeyFiles.for_data_dir(data_dir, KekProtection(KEK))
        made = {}
        for urn, laestab, name in schools:
            made[urn] = await _school(store, urn, laestab, name)
            await keys.create(urn)
        directory = Directory(store, keys=keys, base_url=url)
        client = PeerClient(keys=keys, directory=directory, config=config)
        stack.push_async_callback(client.close)
        outbox = Outbox(
            store=store,
            keys=keys,
            directory=directory,
            client=client,
            config=config,
            data_dir=data_dir,
        )
        inbox = Inbox(
            store=store, kek=KEK, keys=keys, directory=directory, config=config, data_dir=data_dir
        )
        alerts = Alerts(store, Mailer(SmtpSection()))
        requests = TransferRequests(
            store=store,
            outbox=outbox,
            client=client,
            directory=directory,
            alerts=alerts,
            config=config,
        )
        services = PeerServices(
            inbox=inbox,
            directory=directory,
            config=config,
            requests=requests,
            receipts=outbox,
            nonces=NonceTable(store.engine, skew_seconds=config.transfer.clock_skew_seconds),
        )
        app = web.Application()
        mount(app, services)
        n = PeerNode(
            store=store,
            audit=audit,
            keys=keys,
            directory=directory,
            client=client,
            outbox=outbox,
            inbox=inbox,
            alerts=alerts,
            requests=requests,
            url=url,
            port=port,
            clock=clock,
            app=app,
            data_dir=data_dir,
            config=config,
            schools=made,
        )
        await n.start()
        stack.push_async_callback(n.stop)
        yield n


async def introduce(a: PeerNode, b: PeerNode) -> None:
    """Each node adds the other's schools to its directory (fingerprints compared)."""
    for here, there in ((a, b), (b, a)):
        for urn in there.schools:
            entry = entry_from_keyset(
                there.keys.load(urn),
                name=f"School {urn}",
                kind="school",
                urn=urn,
                endpoint=there.url,
            )
            await here.directory.add_local(entry, fingerprint=entry.fingerprint, actor="test")


@pytest.fixture
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[PeerNode, PeerNode]]:
    async with (
        node(
            f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
            tmp_path / "primary",
            [(PRIMARY, PRIMARY_LAESTAB, "Hillside Primary")],
        ) as primary,
        node(
            f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
            tmp_path / "secondary",
            [(SECONDARY, SECONDARY_LAESTAB, "Riverside Academy")],
        ) as secondary,
    ):
        await introduce(primary, secondary)
        yield primary, secondary


async def _with_concern(n: PeerNode, urn: str, pupil_id: str) -> None:
    await n.store.record_concern(
        n.schools[urn].teacher,
        NewConcern(
            pupil_ids=(pupil_id,),
            category="child_protection",
            happened_at=T0,
            location="Playground",
            account="Said she is scared to go home.",
        ),
    )


async def test_round_trip_between_two_nodes(two_nodes: tuple[PeerNode, PeerNode]) -> None:
    primary, secondary = two_nodes
    old = await primary.add_pupil(PRIMARY, 7, leaving=date(2026, 7, 22))
    await _with_concern(primary, PRIMARY, old)
    new = await secondary.add_pupil(SECONDARY, 7)
    sec_dsl, pri_dsl = secondary.schools[SECONDARY].dsl, primary.schools[PRIMARY].dsl

    # The secondary school asks; the request travels signed to the primary's node.
    asked = await secondary.requests.create(
        sec_dsl, upn=upn(7), from_org_id=PRIMARY, note="Joined Year 7 on 2 September"
    )
    assert (asked.state, asked.outbound, asked.pupil_id) == ("pending", "request", new)
    assert await secondary.requests.send_due() == 1
    assert (await secondary.requests.get(sec_dsl, asked.request_id)).state == "sent"
    assert await secondary.requests.send_due() == 0  # nothing left to send

    # The primary's DSL sees it, matched to their pupil by UPN, and an alert.
    (seen,) = await primary.requests.list(pri_dsl, side="received")
    assert seen.request_id == asked.request_id
    assert (seen.matched, seen.dob_matches, seen.pupil_id) == (True, True, old)
    assert seen.note == "Joined Year 7 on 2 September"
    (alert,) = await primary.alerts.list(pri_dsl)
    assert alert.key == f"transfer-request:{asked.request_id}" and alert.pupil_id == old

    # Authorised: the leaver's file is queued to the secondary and the decision goes back.
    done = await primary.requests.authorise(pri_dsl, asked.request_id)
    assert done.state == "authorised" and done.package_id is not None
    latest = await primary.outbox.latest_for_pupil(PRIMARY, old)
    assert latest is not None and latest.id == done.package_id
    assert latest.to_org_id == SECONDARY and latest.state == "queued"
    assert await primary.alerts.list(pri_dsl) == []  # the request's alert is resolved
    assert await primary.requests.send_due() == 1
    theirs = await secondary.requests.get(sec_dsl, asked.request_id)
    assert (theirs.state, theirs.package_id) == ("authorised", done.package_id)
    (told,) = await secondary.alerts.list(sec_dsl)
    assert "authorised" in told.subject

    # The file itself then travels and lands in the secondary's inbox.
    assert await primary.outbox.deliver_due() == 1
    assert (await primary.outbox.latest_for_pupil(PRIMARY, old)).state == "delivered"  # type: ignore[union-attr]

    # Both sides audited; both pupils' chronologies say what happened.
    assert ("request.created", "ok") in secondary.actions()
    assert ("request.sent", "ok") in secondary.actions()
    assert ("request.decision.received", "ok") in secondary.actions()
    assert ("request.received", "ok") in primary.actions()
    assert ("request.authorised", "ok") in primary.actions()
    assert ("request.decision.sent", "ok") in primary.actions()
    sec_events = [e.kind for e in await secondary.store.chronology(sec_dsl, new)]
    assert sec_events.count("event") >= 2
    # Repeating a request or a decision (a lost answer, a retry) changes nothing.
    again = {
        "request_id": asked.request_id,
        "requester_org_id": SECONDARY,
        "holder_org_id": PRIMARY,
        "upn": upn(7),
        "dob": "2014-11-03",
        "surname": "Okafor",
        "forename": "Amara",
    }
    await primary.requests.receive(SECONDARY, again)
    with pytest.raises(ConflictError):
        await primary.requests.receive(SECONDARY, {**again, "upn": upn(8)})
    assert len(await primary.requests.list(pri_dsl)) == 1


async def test_unknown_upn_is_shown_as_such_and_declined_with_a_reason(
    two_nodes: tuple[PeerNode, PeerNode],
) -> None:
    primary, secondary = two_nodes
    await primary.add_pupil(PRIMARY, 8)  # another pupil: never revealed
    await secondary.add_pupil(SECONDARY, 9)
    sec_dsl, pri_dsl = secondary.schools[SECONDARY].dsl, primary.schools[PRIMARY].dsl
    asked = await secondary.requests.create(sec_dsl, upn=upn(9), from_org_id=PRIMARY)
    assert await secondary.requests.send_one(asked.request_id, SECONDARY)
    (seen,) = await primary.requests.list(pri_dsl)
    assert (seen.matched, seen.pupil_id, seen.dob_matches) == (False, None, None)
    (alert,) = await primary.alerts.list(pri_dsl)
    assert "matches none of the pupils" in alert.message and alert.pupil_id is None
    with pytest.raises(InputError, match="matches none of your pupils"):
        await primary.requests.authorise(pri_dsl, asked.request_id)
    with pytest.raises(PermissionDenied):
        await primary.requests.decline(primary.schools[PRIMARY].teacher, asked.request_id, "x")
    with pytest.raises(InputError, match="say why"):
        await primary.requests.decline(pri_dsl, asked.request_id, "   ")
    declined = await primary.requests.decline(pri_dsl, asked.request_id, "Never on our roll")
    assert declined.state == "declined" and declined.outbound == "decision"
    with pytest.raises(ConflictError):
        await primary.requests.authorise(pri_dsl, asked.request_id)
    assert await primary.requests.send_due() == 1
    theirs = await secondary.requests.get(sec_dsl, asked.request_id)
    assert (theirs.state, theirs.reason, theirs.package_id) == (
        "declined",
        "Never on our roll",
        None,
    )
    # A different answer later is refused; the same answer again is accepted quietly.
    with pytest.raises(ConflictError):
        await secondary.requests.receive_decision(
            PRIMARY,
            theirs_id := uuid.UUID(asked.request_id),
            {"decision": "authorised", "package_id": str(theirs_id)},
        )
    await secondary.requests.receive_decision(
        PRIMARY, theirs_id, {"decision": "declined", "reason": "Never on our roll"}
    )
    # Only the school asked may answer.
    with pytest.raises(NotFoundError):
        await secondary.requests.receive_decision(
            SECONDARY, theirs_id, {"decision": "declined", "reason": "x"}
        )


async def test_requester_bad_input_and_permissions(two_nodes: tuple[PeerNode, PeerNode]) -> None:
    primary, secondary = two_nodes
    school = secondary.schools[SECONDARY]
    await secondary.add_pupil(SECONDARY, 10)
    with pytest.raises(PermissionDenied):
        await secondary.requests.create(school.teacher, upn=upn(10), from_org_id=PRIMARY)
    assert ("request.created", "refused") in secondary.actions()
    with pytest.raises(NotFoundError, match="no pupil with this UPN"):
        await secondary.requests.create(school.dsl, upn=upn(11), from_org_id=PRIMARY)
    with pytest.raises(InputError):
        await secondary.requests.create(school.dsl, upn="X123", from_org_id=PRIMARY)
    with pytest.raises(NotFoundError, match="not in this node's directory"):
        await secondary.requests.create(school.dsl, upn=upn(10), from_org_id="199999")
    with pytest.raises(InputError, match="not your own"):
        await secondary.requests.create(school.dsl, upn=upn(10), from_org_id=SECONDARY)
    await secondary.requests.create(school.dsl, upn=upn(10), from_org_id=PRIMARY)
    with pytest.raises(ConflictError, match="already been asked"):
        await secondary.requests.create(school.dsl, upn=upn(10), from_org_id=PRIMARY)
    with pytest.raises(NotFoundError):
        await secondary.requests.get(school.dsl, "not-a-uuid")
    # A peer's malformed request is refused with a message, storing nothing.
    with pytest.raises(InputError, match="upn"):
        await primary.requests.receive(
            SECONDARY,
            {
                "request_id": "6f1c0d7e-3c1e-4a55-9a3b-0d4c1b1f0a11",
                "requester_org_id": SECONDARY,
                "holder_org_id": PRIMARY,
                "upn": "short",
                "surname": "A",
                "forename": "B",
            },
        )
    assert await primary.requests.list(primary.schools[PRIMARY].dsl) == []


async def test_peer_down_is_retried_then_delivered_and_a_refusal_fails(
    two_nodes: tuple[PeerNode, PeerNode],
) -> None:
    primary, secondary = two_nodes
    school = secondary.schools[SECONDARY]
    await secondary.add_pupil(SECONDARY, 12)
    await primary.stop()
    asked = await secondary.requests.create(school.dsl, upn=upn(12), from_org_id=PRIMARY)
    assert await secondary.requests.send_due() == 0
    row = await secondary.requests.get(school.dsl, asked.request_id)
    assert (row.state, row.outbound, row.attempts) == ("pending", "request", 1)
    assert row.last_error and "cannot reach" in row.last_error
    await primary.start()
    secondary.clock.offset += timedelta(seconds=5)  # past the back-off
    assert await secondary.requests.send_due() == 1
    assert (await secondary.requests.get(school.dsl, asked.request_id)).state == "sent"
    assert len(await primary.requests.list(primary.schools[PRIMARY].dsl)) == 1

    # The primary's node does not host this school: a permanent refusal, and an alert.
    ghost = KeyFiles.for_data_dir(secondary.data_dir / "ghost", KekProtection(KEK))
    await ghost.create("199003")
    entry = entry_from_keyset(
        ghost.load("199003"), name="Ghost School", kind="school", endpoint=primary.url
    )
    await secondary.directory.add_local(entry, fingerprint=entry.fingerprint, actor="test")
    await secondary.add_pupil(SECONDARY, 13)
    lost = await secondary.requests.create(school.dsl, upn=upn(13), from_org_id="199003")
    assert not await secondary.requests.send_one(lost.request_id, SECONDARY)
    failed = await secondary.requests.get(school.dsl, lost.request_id)
    assert (failed.state, failed.outbound) == ("failed", None)
    assert failed.last_error and "not hosted on this node" in failed.last_error
    assert ("request.sent", "failed") in secondary.actions()
    assert any(
        "could not be delivered" in a.subject for a in await secondary.alerts.list(school.dsl)
    )


async def test_gives_up_after_the_configured_hours(tmp_path: Path) -> None:
    async with node(
        f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        tmp_path / "a",
        [(SECONDARY, SECONDARY_LAESTAB, "Riverside Academy")],
        give_up_hours=1,
    ) as n:
        ghost = KeyFiles.for_data_dir(tmp_path / "ghost", KekProtection(KEK))
        await ghost.create(PRIMARY)
        entry = entry_from_keyset(
            ghost.load(PRIMARY),
            name="Hillside Primary",
            kind="school",
            endpoint=f"http://127.0.0.1:{free_port()}",
        )
        await n.directory.add_local(entry, fingerprint=entry.fingerprint, actor="test")
        await n.add_pupil(SECONDARY, 14)
        dsl = n.schools[SECONDARY].dsl
        asked = await n.requests.create(dsl, upn=upn(14), from_org_id=PRIMARY)
        assert not await n.requests.send_one(asked.request_id, SECONDARY)
        assert (await n.requests.get(dsl, asked.request_id)).state == "pending"
        n.clock.offset += timedelta(hours=2)
        assert await n.requests.send_due() == 0
        gone = await n.requests.get(dsl, asked.request_id)
        assert (gone.state, gone.outbound) == ("failed", None)


async def test_both_schools_on_one_node(db_url: str, tmp_path: Path) -> None:
    """A local authority's node hosting both schools: one row per school, one server."""
    async with node(
        db_url,
        tmp_path / "la",
        [
            (PRIMARY, PRIMARY_LAESTAB, "Hillside Primary"),
            (SECONDARY, SECONDARY_LAESTAB, "Riverside Academy"),
        ],
    ) as n:
        old = await n.add_pupil(PRIMARY, 15, leaving=date(2026, 7, 22))
        await _with_concern(n, PRIMARY, old)
        await n.add_pupil(SECONDARY, 15)
        sec, pri = n.schools[SECONDARY].dsl, n.schools[PRIMARY].dsl
        asked = await n.requests.create(sec, upn=upn(15), from_org_id=PRIMARY)
        assert await n.requests.send_due() == 1
        (seen,) = await n.requests.list(pri)
        assert seen.side == "received" and seen.pupil_id == old
        (mine,) = await n.requests.list(sec)
        assert mine.side == "sent" and mine.state == "sent"
        done = await n.requests.authorise(pri, asked.request_id)
        assert await n.requests.send_due() == 1
        final = await n.requests.get(sec, asked.request_id)
        assert (final.state, final.package_id) == ("authorised", done.package_id)
        # Authorising twice is refused; the file is queued once.
        with pytest.raises(ConflictError):
            await n.requests.authorise(pri, asked.request_id)


async def test_the_dsl_names_the_pupil_of_an_unmatched_request_by_upn(
    two_nodes: tuple[PeerNode, PeerNode],
) -> None:
    """Issue 11, items 16 and 17: ``authorise`` takes the pupil's UPN (a bad one gets the DfE's
    words), and the authorised request is the reason the file goes where none is recorded."""
    primary, secondary = two_nodes
    known = await primary.add_pupil(PRIMARY, 11)  # the same child, on our roll under 11
    await secondary.add_pupil(SECONDARY, 12)
    sec_dsl, pri_dsl = secondary.schools[SECONDARY].dsl, primary.schools[PRIMARY].dsl
    asked = await secondary.requests.create(sec_dsl, upn=upn(12), from_org_id=PRIMARY)
    assert await secondary.requests.send_one(asked.request_id, SECONDARY)
    with pytest.raises(InvalidUPN, match="wrong check letter"):
        await primary.requests.authorise(pri_dsl, asked.request_id, pupil_id="A" + upn(11)[1:])
    done = await primary.requests.authorise(pri_dsl, asked.request_id, pupil_id=upn(11).lower())
    assert done.state == "authorised" and done.package_id is not None
    sent = await primary.outbox.get(pri_dsl, done.package_id)
    assert sent.pupil_ids == (known,) and sent.reasons_needed == ("not_destination",)
    assert sent.send_reason is not None and asked.request_id in sent.send_reason
