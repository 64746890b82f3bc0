"""Alerts raised as soon as the data changes (issue 11, item 20), on SQLite and PostgreSQL.

A leaving date set (by hand or by a CTF of leavers) raises the pupil's KCSIE deadline
alert at once, not at the next hourly sweep; a concern logged alerts the DSL team (in the
app, and by e-mail naming only who logged it, the category and a link); an overdue action
alerts its owner and the DSL team, both from the sweep and at once when it is added late.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from schemas.records import Destination, NewAction, NewConcern, NewPupil, NewTriage, PupilChanges
from tests.integration.alerts.test_alerts import (
    URN,
    AlertWorld,
    FakeOutbox,
    _mailer,
    open_world,
    upn,
)
from tests.integration.alerts.test_mail import Inbox, smtp_server  # noqa: F401 - a fixture used below
from transfer.alerts import Alerts
from transfer.alerts.rules import StoreAlerts, action_key, concern_key, role_label
from transfer.config import SmtpSection, TransferSection
from transfer.exchange.deadlines_sweep import DeadlineSweep, deadline_key
from transfer.mail import Mailer
from transfer.store.changes import StoreChange

BASE = "https://hillside.example:8443"
SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "ctf" / "leavers_801_2000.xml"
ACCOUNT = "Said her stepdad hit her with a belt; VERY-SECRET-CONCERN-TEXT"


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[AlertWorld]:
    w = await open_world(db_url, tmp_path / "data")
    try:
        yield w
    finally:
        await w.store.close()


def _wire(world: AlertWorld, mailer: Mailer | None = None) -> tuple[Alerts, StoreAlerts]:
    """The node's wiring (``transfer.node``): the store's listener raises the alerts."""
    alerts = Alerts(world.store, mailer or Mailer(SmtpSection()))
    deadlines = DeadlineSweep(
        world.store, alerts, FakeOutbox(), TransferSection(), data_dir=world.data_dir
    )
    rules = StoreAlerts(world.store, alerts, deadlines, base_url=BASE)
    rules.attach()
    rules.attach()  # once only
    assert world.store.listeners.count(rules.on_change) == 1
    return alerts, rules


async def _admin(world: AlertWorld) -> object:
    found = await world.store.find_staff(URN, "admin")
    assert found is not None
    return await world.store.actor_for(found.id)


async def test_a_leaving_date_set_raises_the_deadline_alert_at_once(world: AlertWorld) -> None:
    alerts, _ = _wire(world)
    world.clock.on(date(2026, 6, 10))
    admin = await _admin(world)
    pupil = await world.store.create_pupil(
        admin,  # type: ignore[arg-type]
        NewPupil(
            upn=upn(1),
            surname="Okafor",
            forename="Amara",
            dob=date(2014, 11, 3),
            sex="F",
            year_group="6",
        ),
    )
    assert await alerts.list(world.dsl) == []  # no leaving date yet: nothing to chase
    # Left two weeks ago, for a known school: overdue now, without any sweep having run.
    await world.store.update_pupil(
        admin,  # type: ignore[arg-type]
        pupil.id,
        PupilChanges(
            leaving_date=date(2026, 5, 27),
            destination=Destination(kind="school", urn="199002", name="Riverside Academy"),
        ),
    )
    (alert,) = await alerts.list(world.dsl)
    assert alert.key == deadline_key(pupil.id, date(2026, 5, 27)) and alert.level == "overdue"
    assert alert.pupil_id == pupil.id

    # The date was mistyped: corrected, the old deadline's alert goes and the new one comes.
    await world.store.update_pupil(
        admin,  # type: ignore[arg-type]
        pupil.id,
        PupilChanges(leaving_date=date(2026, 6, 3)),
    )
    (alert,) = await alerts.list(world.dsl)
    assert alert.key == deadline_key(pupil.id, date(2026, 6, 3))
    assert alert.level == "due"  # 5 school days after Wednesday 3 June: today
    closed = await alerts.list(world.dsl, open_only=False)
    assert {(a.key, a.closed_reason) for a in closed if a.closed_at} == {
        (deadline_key(pupil.id, date(2026, 5, 27)), "resolved")
    }

    # Destination unknown now: no school to send to, so no deadline alert stays open.
    await world.store.update_pupil(
        admin,  # type: ignore[arg-type]
        pupil.id,
        PupilChanges(destination=Destination(kind="unknown")),
    )
    assert await alerts.list(world.dsl) == []


async def test_a_ctf_of_leavers_raises_their_deadline_alerts_at_once(world: AlertWorld) -> None:
    alerts, _ = _wire(world)
    # The sample's leavers left on 22 July 2026: their files were due in the first days of
    # the autumn term, past by now.
    world.clock.on(date(2026, 9, 21))
    admin = await _admin(world)
    data = await asyncio.to_thread(SAMPLE.read_bytes)
    result = await world.store.import_ctf(admin, data, force=True)  # type: ignore[arg-type]
    assert result.leavers and len(result.pupil_ids) == 4
    raised = await alerts.list(world.dsl)
    pupils = {p.id for p in await world.store.list_pupils(world.dsl) if p.leaving_date}
    assert pupils and {a.pupil_id for a in raised} == pupils
    assert all(a.key.startswith("transfer-deadline:") and a.level == "overdue" for a in raised)


async def test_a_concern_logged_alerts_the_dsl_team_without_its_content(
    world: AlertWorld,
    smtp_server: tuple[Inbox, int],  # noqa: F811
) -> None:
    inbox, port = smtp_server
    alerts, _ = _wire(world, _mailer(port))
    admin = await _admin(world)
    pupil = await world.store.create_pupil(
        admin,  # type: ignore[arg-type]
        NewPupil(upn=upn(2), surname="Nowak", forename="Leon", dob=date(2014, 11, 2), sex="M"),
    )
    concern = await world.store.record_concern(
        world.teacher,
        NewConcern(
            pupil_ids=(pupil.id,),
            category="domestic_abuse",
            happened_at=world.clock.now - timedelta(hours=1),
            account=ACCOUNT,
            location="VERY-SECRET-PLACE",
            people_involved="VERY-SECRET-PERSON",
        ),
    )
    (alert,) = await alerts.list(world.dsl)
    assert alert.key == concern_key(concern.id) and alert.level == "info"
    assert alert.subject == "New concern logged: Domestic abuse"
    assert "Teacher (member of staff) logged a concern in the category Domestic abuse" in (
        alert.message
    )
    assert f"{BASE}/concerns/{concern.id}" in alert.message  # the web page, not the JSON API
    assert alert.mail_state == "sent"
    (_, rcpts, msg) = inbox.messages[0]
    assert rcpts == ["deputy@harbourside.example.org", "dsl@harbourside.example.org"]
    body = msg.get_payload()
    assert isinstance(body, str)
    text = msg["Subject"] + body
    assert "Teacher (member of staff)" in text and "Domestic abuse" in text
    decoded = msg.get_payload(decode=True)  # the body as sent is quoted-printable, wrapped
    assert isinstance(decoded, bytes)
    assert f"{BASE}/concerns/{concern.id}" in decoded.decode() and "/api/" not in text
    for secret in ("VERY-SECRET", "belt", "Leon", "Nowak", upn(2)):
        assert secret not in text, secret

    # The DSL triages it: the alert has done its job.
    await world.store.triage_concern(
        world.dsl, concern.id, NewTriage(decision="monitor", reason="watch")
    )
    assert await alerts.list(world.dsl) == []


async def test_an_overdue_action_alerts_its_owner_and_the_dsl_team(
    world: AlertWorld,
    smtp_server: tuple[Inbox, int],  # noqa: F811
) -> None:
    inbox, port = smtp_server
    alerts, rules = _wire(world, _mailer(port))
    world.clock.on(date(2026, 5, 4))
    admin = await _admin(world)
    pupil = await world.store.create_pupil(
        admin,  # type: ignore[arg-type]
        NewPupil(upn=upn(3), surname="Hughes", forename="Ellie", dob=date(2015, 6, 21), sex="F"),
    )
    concern = await world.store.record_concern(
        world.dsl,
        NewConcern(
            pupil_ids=(pupil.id,),
            category="neglect",
            happened_at=world.clock.now - timedelta(hours=2),
            account=ACCOUNT,
        ),
    )
    await alerts.resolve(URN, concern_key(concern.id))
    inbox.messages.clear()
    on_time = await world.store.add_action(
        world.dsl,
        concern.id,
        NewAction(
            text="SECRET-ACTION-TEXT", assignee_id=world.deputy.staff_id, due_on=date(2026, 5, 6)
        ),
    )
    assert await alerts.list(world.dsl) == []  # not due yet

    # Two days after the due date the sweep (the scheduler's) finds it.
    world.clock.on(date(2026, 5, 8))
    assert await rules.actions.run() == 1
    assert await rules.actions.run() == 0  # once a day
    (alert,) = await alerts.list(world.dsl)
    assert alert.key == action_key(on_time.id) and alert.level == "overdue"
    assert alert.staff_id == world.deputy.staff_id
    assert "owned by Deputy" in alert.message and "Wednesday 6 May 2026" in alert.message
    # The owner sees it; another member of staff does not.
    assert [a.id for a in await alerts.list(world.deputy)] == [alert.id]
    assert await alerts.list(world.teacher) == []
    (_, rcpts, msg) = inbox.messages[-1]
    assert "deputy@harbourside.example.org" in rcpts and "dsl@harbourside.example.org" in rcpts
    assert "SECRET-ACTION-TEXT" not in str(msg)

    # An action added with a due date already past is alerted at once, owner included,
    # even when the owner is not in the DSL team.
    late = await world.store.add_action(
        world.dsl,
        concern.id,
        NewAction(
            text="SECRET-ACTION-TEXT 2", assignee_id=world.teacher.staff_id, due_on=date(2026, 5, 1)
        ),
    )
    mine = await alerts.list(world.teacher)
    assert [a.key for a in mine] == [action_key(late.id)]
    assert "teacher@harbourside.example.org" in inbox.messages[-1][1]

    # Done: the alert is resolved.
    await world.store.complete_action(world.dsl, late.id)
    assert await alerts.list(world.teacher) == []
    assert [a.key for a in await alerts.list(world.dsl)] == [action_key(on_time.id)]


async def test_a_failing_listener_does_not_undo_the_change(world: AlertWorld) -> None:
    seen: list[StoreChange] = []

    async def broken(change: StoreChange) -> None:
        seen.append(change)
        raise RuntimeError("the mail server fell over")

    world.store.listeners.append(broken)
    admin = await _admin(world)
    pupil = await world.store.create_pupil(
        admin,  # type: ignore[arg-type]
        NewPupil(
            upn=upn(4),
            surname="Begum",
            forename="Yusuf",
            dob=date(2015, 1, 9),
            sex="M",
            leaving_date=date(2026, 4, 30),
        ),
    )
    assert [c.kind for c in seen] == ["pupil.leaving"]
    assert (await world.store.get_pupil(world.dsl, pupil.id)).leaving_date == date(2026, 4, 30)


def test_people_are_named_by_their_most_senior_role() -> None:
    assert role_label(["staff", "deputy_dsl"]) == "deputy DSL"
    assert role_label(["administrator", "dsl"]) == "DSL"
    assert role_label(["staff"]) == "member of staff"


async def test_the_node_wires_the_alerts_to_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Node.open`` attaches the listener: a leaving date set through any face alerts."""
    import secrets

    from transfer.commands.init import initialise
    from transfer.node import Node
    from transfer.transport.http import http_transport

    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    data = tmp_path / "node"
    await initialise(
        data,
        name="t",
        schools=[("123456", "8012000", "Hillside")],
        agencies=[],
        admin="admin",
        admin_password="a long enough pass phrase 42",
    )
    async with await Node.open(data, transport=http_transport) as node:
        admin = await node.store.find_staff("123456", "admin")
        assert admin is not None
        actor = await node.store.actor_for(admin.id)
        dsl = await node.accounts.bootstrap_account(
            "123456",
            username="dsl",
            display_name="Sam Patel",
            roles=["dsl"],
            password="a long enough pass phrase 43",
        )
        left = datetime.now(UTC).date() - timedelta(days=20)
        pupil = await node.store.create_pupil(
            actor,
            NewPupil(
                upn=upn(5),
                surname="Taylor",
                forename="Mia",
                dob=date(2014, 9, 30),
                sex="F",
                leaving_date=left,
                destination=Destination(kind="school", urn="654321"),
            ),
        )
        listed = await node.alerts.list(await node.store.actor_for(dsl.id))
        assert [a.key for a in listed] == [deadline_key(pupil.id, left)]
        assert listed[0].level == "overdue"
    await asyncio.sleep(0)
