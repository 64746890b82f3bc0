"""Alerts and the KCSIE deadline sweep, on a real store (SQLite and PostgreSQL) with a
controlled clock, e-mailing a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from schemas.auditing import MemoryAudit
from schemas.records import Destination, NewPupil
from tests.integration.alerts.test_mail import Inbox, smtp_server  # noqa: F401 - a fixture used below
from transfer.alerts import ENGLAND, Alerts
from transfer.alerts.tables import alerts as alerts_table
from transfer.config import SmtpSection, TransferSection
from transfer.deadlines import DayUnit, default_calendar, transfer_due_date
from transfer.errors import InputError, NotFoundError
from transfer.exchange.deadlines_sweep import (
    Calendars,
    DeadlineSweep,
    deadline_key,
    level_for,
)
from transfer.mail import Mailer
from transfer.store.permissions import Actor, PermissionDenied
from transfer.store.service import Store

KEK = bytes(range(32))
URN = "199001"
LAESTAB = "8012000"
OTHER_URN = "199002"
_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"


def upn(serial: int, la: str = "801", estab: str = "2000", year: str = "26") -> str:
    """A valid permanent UPN (check letter computed as the DfE describes)."""
    body = f"{la}{estab}{year}{serial:03d}"
    total = sum(int(c) * w for c, w in zip(body, range(2, 14), strict=True))
    return _LETTERS[total % 23] + body


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def on(self, day: date, hour: int = 8) -> None:
        """Set the clock to ``hour`` o'clock in England on ``day``."""
        self.now = datetime.combine(day, time(hour), tzinfo=ENGLAND).astimezone(UTC)


@dataclass
class FakeOutbox:
    """Only ``latest_for_pupil``: the state of each pupil's latest leaver's file."""

    states: dict[tuple[str, str], str] = field(default_factory=dict)

    @dataclass
    class Rec:
        state: str

    async def latest_for_pupil(
        self, org_id: str, pupil_id: str, kind: str = "leaver_file"
    ) -> FakeOutbox.Rec | None:
        state = self.states.get((org_id, pupil_id))
        return None if state is None else FakeOutbox.Rec(state)


@dataclass
class AlertWorld:
    store: Store
    audit: MemoryAudit
    clock: Clock
    dsl: Actor
    deputy: Actor
    teacher: Actor
    data_dir: Path

    async def leaver(self, serial: int, leaving: date, kind: str = "school") -> str:
        admin = await self.store.actor_for(
            (await self.store.find_staff(URN, "admin")).id  # type: ignore[union-attr]
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
                destination=Destination(kind=kind, urn=OTHER_URN, name="Riverside Academy"),
            ),
        )
        return rec.id

    async def rows(self) -> list[sa.Row[tuple[str, str, date, str | None]]]:
        t = alerts_table
        async with self.store.sessions() as s:
            res = await s.execute(
                sa.select(t.c.key, t.c.level, t.c.day, t.c.closed_reason).order_by(
                    t.c.raised_at, t.c.level
                )
            )
            return list(res.all())  # type: ignore[arg-type]


async def open_world(db_url: str, data_dir: Path) -> AlertWorld:
    audit = MemoryAudit()
    clock = Clock(datetime(2026, 5, 1, 8, tzinfo=UTC))
    store = await Store.open(db_url, KEK, audit, data_dir=data_dir, clock=clock)
    await store.create_school(name="Harbourside Primary", urn=URN, laestab=LAESTAB)
    people = {
        "dsl": (["dsl"], "dsl@harbourside.example.org", True),
        "deputy": (["deputy_dsl"], "deputy@harbourside.example.org", True),
        "gone": (["dsl"], "gone@harbourside.example.org", False),
        "teacher": (["staff"], "teacher@harbourside.example.org", True),
        "admin": (["administrator"], None, True),
    }
    actors: dict[str, Actor] = {}
    for name, (roles, email, active) in people.items():
        rec = await store.bootstrap_staff(
            URN, username=name, display_name=name.title(), roles=roles, email=email
        )
        if not active:
            from transfer.store.tables import Staff

            async with store.sessions() as s, s.begin():
                await s.execute(sa.update(Staff).where(Staff.id == rec.id).values(active=False))
            continue
        actors[name] = await store.actor_for(rec.id)
    return AlertWorld(
        store=store,
        audit=audit,
        clock=clock,
        dsl=actors["dsl"],
        deputy=actors["deputy"],
        teacher=actors["teacher"],
        data_dir=data_dir,
    )


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[AlertWorld]:
    w = await open_world(db_url, tmp_path / "data")
    try:
        yield w
    finally:
        await w.store.close()


def _mailer(port: int) -> Mailer:
    return Mailer(SmtpSection(host="127.0.0.1", port=port, starttls=False, timeout_seconds=5))


# ------------------------------------------------------------------ alerts


async def test_notify_is_idempotent_per_key_level_and_day_and_emails_the_dsl_team(
    world: AlertWorld,
    smtp_server: tuple[Inbox, int],  # noqa: F811
) -> None:
    inbox, port = smtp_server
    alerts = Alerts(world.store, _mailer(port))
    args = {"key": "k1", "subject": "Something to do", "message": "Please look."}
    assert await alerts.notify(URN, level="upcoming", **args)
    assert not await alerts.notify(URN, level="upcoming", **args)
    assert len(inbox.messages) == 1
    _, rcpts, msg = inbox.messages[0]
    # Active DSL team members with an address; not the inactive DSL, not other staff.
    assert rcpts == ["deputy@harbourside.example.org", "dsl@harbourside.example.org"]
    assert msg["Subject"] == "Handover: Something to do"
    # A new level the same day is a new alert and supersedes the open one.
    world.clock.now += timedelta(minutes=5)
    assert await alerts.notify(URN, level="due", **args)
    listed = await alerts.list(world.dsl)
    assert [(a.level, a.mail_state) for a in listed] == [("due", "sent")]
    everything = await alerts.list(world.dsl, open_only=False)
    assert [(a.level, a.closed_reason) for a in everything] == [
        ("due", None),
        ("upcoming", "superseded"),
    ]
    # The next day the same level is raised again.
    world.clock.now += timedelta(days=1)
    assert await alerts.notify(URN, level="due", **args)
    assert len(inbox.messages) == 3
    await alerts.resolve(URN, "k1")
    assert await alerts.list(world.dsl) == []
    assert world.audit.actions().count("alert.raised") == 3
    assert "alert.resolved" in world.audit.actions()


async def test_dismissed_alert_stays_quiet_and_only_the_dsl_team_sees_alerts(
    world: AlertWorld,
) -> None:
    alerts = Alerts(world.store, Mailer(SmtpSection()))
    assert await alerts.notify(URN, key="k2", level="info", subject="S", message="M")
    (alert,) = await alerts.list(world.deputy)
    assert alert.mail_state == "off"
    # Other staff see only the alerts that concern them (an overdue action they own).
    assert await alerts.list(world.teacher) == []
    with pytest.raises(PermissionDenied):
        await alerts.dismiss(world.teacher, alert.id)
    assert world.audit.events[-1].outcome == "refused"
    with pytest.raises(NotFoundError):
        await alerts.dismiss(world.dsl, "no-such-alert")
    dismissed = await alerts.dismiss(world.dsl, alert.id)
    assert dismissed.closed_reason == "dismissed" and dismissed.closed_by == world.dsl.staff_id
    assert (await alerts.dismiss(world.dsl, alert.id)) == dismissed  # idempotent
    world.clock.now += timedelta(days=1)
    assert not await alerts.notify(URN, key="k2", level="overdue", subject="S", message="M")
    with pytest.raises(InputError):
        await alerts.notify(URN, key="k3", level="loud", subject="S", message="M")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        await alerts.notify(URN, key="k3", level="info", subject="", message="M")


async def test_failed_email_is_kept_open_and_retried(
    world: AlertWorld,
    smtp_server: tuple[Inbox, int],  # noqa: F811
) -> None:
    inbox, port = smtp_server
    inbox.refuse.update({"dsl@harbourside.example.org", "deputy@harbourside.example.org"})
    alerts = Alerts(world.store, _mailer(port))
    assert await alerts.notify(URN, key="k4", level="overdue", subject="S", message="M")
    (alert,) = await alerts.list(world.dsl)
    assert alert.mail_state == "failed" and inbox.messages == []
    inbox.refuse.clear()
    assert await alerts.retry_mail() == 1
    assert await alerts.retry_mail() == 0
    (alert,) = await alerts.list(world.dsl)
    assert alert.mail_state == "sent" and len(inbox.messages) == 1


# ------------------------------------------------------------ deadline dates


def test_due_dates_across_a_bank_holiday_and_a_half_term() -> None:
    cal = default_calendar()
    # Thursday 30 April 2026; Monday 4 May is the early May bank holiday.
    assert transfer_due_date(date(2026, 4, 30), cal) == date(2026, 5, 8)
    # Wednesday 20 May 2026; 25-29 May is half-term (25 May also a bank holiday).
    assert transfer_due_date(date(2026, 5, 20), cal) == date(2026, 6, 3)
    # Calendar days run straight through the half-term.
    assert transfer_due_date(date(2026, 5, 20), cal, DayUnit.CALENDAR) == date(2026, 5, 25)
    # A July leaver: the fifth school day of the autumn term (starting Wed 2 Sept).
    assert transfer_due_date(date(2026, 7, 22), cal) == date(2026, 9, 8)
    assert [level_for(date(2026, 6, 3), date(2026, 6, d)) for d in range(1, 6)] == [
        "upcoming",
        "upcoming",
        "due",
        "overdue",
        "overdue",
    ]
    assert level_for(date(2026, 6, 3), date(2026, 5, 31)) is None


def test_operator_calendar_and_bank_holidays_replace_the_shipped_ones(tmp_path: Path) -> None:
    doc = {
        "name": "Harbourside 2025-27",
        "closures": ["2026-06-01"],  # an INSET day
        "terms": [
            {
                "name": "Summer 2026",
                "start": "2026-04-13",
                "end": "2026-07-22",
                "breaks": [{"start": "2026-05-25", "end": "2026-05-29"}],
            },
            {"name": "Autumn 2026", "start": "2026-09-03", "end": "2026-12-18"},
        ],
    }
    (tmp_path / "calendars").mkdir()
    (tmp_path / "calendars" / f"{URN}.json").write_text(json.dumps(doc))
    cals = Calendars(tmp_path)
    own = cals.for_org(URN)
    assert transfer_due_date(date(2026, 5, 20), own) == date(2026, 6, 4)
    # Another school on the node keeps the shipped calendar.
    assert transfer_due_date(date(2026, 5, 20), cals.for_org(OTHER_URN)) == date(2026, 6, 3)
    holidays = {
        "england-and-wales": {
            "division": "england-and-wales",
            "events": [{"title": "Extra bank holiday", "date": "2026-06-02"}],
        }
    }
    (tmp_path / "bank-holidays.json").write_text(json.dumps(holidays))
    assert transfer_due_date(date(2026, 5, 20), Calendars(tmp_path).for_org(URN)) == date(
        2026, 6, 5
    )
    (tmp_path / "calendar.json").write_text("{not json")
    with pytest.raises(Exception, match=r"calendar\.json"):
        Calendars(tmp_path).for_org(OTHER_URN)


# ------------------------------------------------------------- the sweep


async def test_sweep_raises_each_level_in_sequence_once_a_day_until_accepted(
    world: AlertWorld,
    smtp_server: tuple[Inbox, int],  # noqa: F811
) -> None:
    inbox, port = smtp_server
    alerts = Alerts(world.store, _mailer(port))
    outbox = FakeOutbox()
    pupil = await world.leaver(1, date(2026, 5, 20))  # due Wednesday 3 June 2026
    await world.leaver(2, date(2026, 5, 20), kind="unknown")  # destination unknown: no deadline
    sweep = DeadlineSweep(world.store, alerts, outbox, TransferSection(), data_dir=world.data_dir)
    key = deadline_key(pupil, date(2026, 5, 20))
    seen: list[tuple[date, int]] = []
    for day in [date(2026, 5, 31) + timedelta(days=i) for i in range(6)]:
        world.clock.on(day)
        first = await sweep.run()
        world.clock.on(day, hour=15)
        second = await sweep.run()  # later the same day: nothing new
        assert second.raised == 0
        seen.append((day, first.raised))
        if day == date(2026, 6, 4):
            outbox.states[(URN, pupil)] = "delivered"  # delivered is not enough
    assert seen == [
        (date(2026, 5, 31), 0),
        (date(2026, 6, 1), 1),
        (date(2026, 6, 2), 1),
        (date(2026, 6, 3), 1),
        (date(2026, 6, 4), 1),
        (date(2026, 6, 5), 1),
    ]
    rows = await world.rows()
    assert [(r.level, r.day) for r in rows] == [
        ("upcoming", date(2026, 6, 1)),
        ("upcoming", date(2026, 6, 2)),
        ("due", date(2026, 6, 3)),
        ("overdue", date(2026, 6, 4)),
        ("overdue", date(2026, 6, 5)),
    ]
    assert {r.key for r in rows} == {key}
    assert len(inbox.messages) == 5
    last = inbox.messages[-1][2]
    assert "overdue since Wednesday 3 June 2026" in str(last["Subject"])
    body = last.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert b"delivered; the receiving DSL has not accepted it yet" in body
    assert b"Okafor" not in body and b"Amara" not in body  # e-mails name no child
    (open_alert,) = await alerts.list(world.dsl)
    assert open_alert.pupil_id == pupil and open_alert.pupil_name == "Amara Okafor"
    # The receiving DSL accepts: the alert is resolved and nothing more is raised.
    outbox.states[(URN, pupil)] = "accepted"
    world.clock.on(date(2026, 6, 6))
    report = await sweep.run()
    assert (report.raised, report.accepted) == (0, 1)
    assert await alerts.list(world.dsl) == []
    world.clock.on(date(2026, 6, 8))
    assert (await sweep.run()).raised == 0
    assert len(inbox.messages) == 5


async def test_calendar_that_runs_out_raises_one_info_alert(world: AlertWorld) -> None:
    alerts = Alerts(world.store, Mailer(SmtpSection()))
    await world.leaver(3, date(2028, 7, 20))  # the shipped terms end in July 2028
    sweep = DeadlineSweep(
        world.store, alerts, FakeOutbox(), TransferSection(), data_dir=world.data_dir
    )
    world.clock.on(date(2028, 7, 20))
    report = await sweep.run()
    assert report.problems == 1 and report.raised == 0
    (alert,) = await alerts.list(world.dsl)
    assert alert.key == "calendar" and "term dates" in alert.message
    assert (await sweep.run()).problems == 1
    assert len(await alerts.list(world.dsl, open_only=False)) == 1


# ------------------------------------------------------------- migration


def _our_diffs(conn: sa.engine.Connection) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import transfer.exchange.tables  # noqa: F401 - registers the table
    from transfer.store.db import Base

    ours = {"alerts", "transfer_requests"}
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    out = []
    for diff in compare_metadata(ctx, Base.metadata):
        item = diff[0] if isinstance(diff, list) else diff
        names = {getattr(getattr(p, "table", None), "name", None) for p in item[1:]}
        names |= {getattr(p, "name", None) for p in item[1:]}
        names |= {p for p in item[1:] if isinstance(p, str)}
        if names & ours:
            out.append(diff)
    return out


async def test_requests_migration_matches_the_tables(db_url: str) -> None:
    from alembic.script import ScriptDirectory

    from transfer.store.db import _alembic_config, make_engine, migrate

    engine = make_engine(db_url)
    try:
        await migrate(engine)
        await migrate(engine)
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
            diffs = await conn.run_sync(_our_diffs)
    finally:
        await engine.dispose()
    assert {"alerts", "transfer_requests"} <= tables
    assert diffs == [], diffs
    rev = ScriptDirectory.from_config(_alembic_config()).get_revision("requests_0001")
    assert rev is not None and "requests" in rev.branch_labels
