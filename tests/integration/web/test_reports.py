"""Reports (issue 15): the governors' report over a seeded term, its figures checked
against the seed counted here in plain Python (not the report's SQL), suppression of
small counts in the governors' view, PDF and CSV, the chronology PDF, and who may open
which report by web address. In-process on each engine (aiohttp's TestServer)."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader
from sqlalchemy import insert

from schemas.records import (
    NewAction,
    NewBodyMapMark,
    NewConcern,
    NewPupil,
    NewTriage,
    PupilRecord,
)
from tests.support.web import Page, Site, site_for
from tests.unit.auth.support import Person
from transfer.errors import PolicyError
from transfer.exchange.tables import (
    IncomingPackage,
    outgoing_packages,
    outgoing_pupils,
    outgoing_receipts,
    transfer_requests,
)
from transfer.identifiers import upn_check_letter
from transfer.referrals.tables import Referral, ReferralEvent
from transfer.reports.figures import SUPPRESSED, csv_safe, present, report_csv
from transfer.reports.service import Reports
from transfer.store.permissions import Actor, Role

LONDON = ZoneInfo("Europe/London")
TERM = "autumn-2026"
#: Seeding happens "now" = 20 November, then the report is read on 10 December 2026.
SEEDING = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TODAY = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)

#: (category, happened at in UTC, pupils by index). Autumn 2026 runs 2 Sep - 18 Dec.
CONCERNS: list[tuple[str, datetime, tuple[int, ...]]] = [
    *[("bullying", datetime(2026, 9, 10 + i, 10, tzinfo=UTC), (0,)) for i in range(5)],
    *[("neglect", datetime(2026, 10, 5 + i, 10, tzinfo=UTC), (1,)) for i in range(4)],
    *[("online_safety", datetime(2026, 11, 2 + i, 10, tzinfo=UTC), (2 + i % 3,)) for i in range(7)],
    ("safeguarding", datetime(2026, 11, 16, 9, tzinfo=UTC), (0, 3)),  # two pupils
    # 00:30 on 2 September in England (still 1 September in UTC): inside the term.
    ("bullying", datetime(2026, 9, 1, 23, 30, tzinfo=UTC), (1,)),
    # 23:30 on 1 September in England: the day before the term, outside it.
    ("bullying", datetime(2026, 9, 1, 22, 30, tzinfo=UTC), (1,)),
    # The summer term: outside.
    *[("neglect", datetime(2026, 6, 3 + i, 10, tzinfo=UTC), (2,)) for i in range(3)],
]
YEARS = ["3", "3", "4", "6", "6", None]
DECISIONS = {
    0: "refer_early_help",
    1: "refer_early_help",
    5: "refer_social_care",
    6: "refer_lado",
    9: "monitor",
    10: "monitor",
    11: "monitor",
    18: "no_further_action",
}


def _upn(serial: int) -> str:
    body = f"801200026{serial:03d}"
    return upn_check_letter(body) + body


@dataclass
class World:
    site: Site
    dsl: Person
    deputy: Person
    head: Person
    teacher: Person
    admin: Person
    auditor: Person
    pupils: list[PupilRecord]
    concern_ids: list[str] = field(default_factory=list)

    async def actor(self, p: Person) -> Actor:
        return await self.site.node.store.actor_for(p.staff.id)


def _term_dates() -> tuple[date, date]:
    """Autumn 2026 straight from the shipped calendar file (not through the report)."""
    raw = resources.files("transfer.data").joinpath("term_dates_england.json").read_text()
    term = next(t for t in json.loads(raw)["terms"] if t["name"] == "Autumn 2026")
    return date.fromisoformat(term["start"]), date.fromisoformat(term["end"])


def _in_term(at: datetime) -> bool:
    start, end = _term_dates()
    return start <= at.astimezone(LONDON).date() <= end


async def _seed_exchange(site: Site, pupils: list[PupilRecord], org_id: str) -> None:
    """Leavers' files, files received, transfer requests and referrals, as rows (the
    report reads these tables; sending real packages adds nothing to what is counted)."""
    now = SEEDING

    def package(pid: str, queued: datetime, state: str = "delivered") -> dict[str, object]:
        return {
            "id": pid,
            "org_id": org_id,
            "to_org_id": "urn:199002",
            "to_name": "Cliff Road",
            "kind": "leaver_file",
            "state": state,
            "created_at": queued,
            "queued_at": queued,
            "state_changed_at": queued,
            "attempts": 1,
            "pulls": 0,
        }

    # Leavers: pupil 5 left on Wed 7 October (due, 5 school days later, Wed 14 October).
    sent = [
        ("p1", datetime(2026, 10, 8, 9, tzinfo=UTC), datetime(2026, 10, 13, 9, tzinfo=UTC)),
        ("p2", datetime(2026, 10, 8, 9, tzinfo=UTC), datetime(2026, 10, 20, 9, tzinfo=UTC)),
        ("p3", datetime(2026, 10, 9, 9, tzinfo=UTC), None),
    ]
    async with site.node.store.engine.begin() as conn:
        for pid, queued, receipt in sent:
            await conn.execute(insert(outgoing_packages).values(**package(pid, queued)))
            await conn.execute(
                insert(outgoing_pupils).values(package_id=pid, pupil_id=pupils[5].id)
            )
            if receipt is not None:
                await conn.execute(
                    insert(outgoing_receipts).values(
                        receipt_id=str(uuid.uuid4()),
                        package_id=pid,
                        kind="delivered",
                        issued_at=receipt,
                        received_at=receipt,
                        body=b"{}",
                        signature="x",
                    )
                )
        # A draft never sent, and one queued before the term: not counted.
        await conn.execute(
            insert(outgoing_packages).values(
                **package("p4", datetime(2026, 10, 9, tzinfo=UTC), "draft")
            )
        )
        await conn.execute(
            insert(outgoing_packages).values(**package("p5", datetime(2026, 7, 9, tzinfo=UTC)))
        )
        for n, state in enumerate(("accepted", "delivered", "refused")):
            await conn.execute(
                insert(IncomingPackage).values(
                    id=f"in{n}",
                    recipient_org_id=org_id,
                    sender_org_id="urn:1",
                    sender_name="A",
                    sender_key_id="k",
                    package_kind="leaver_file",
                    size=1,
                    ciphertext_sha256="0",
                    received=1,
                    state=state,
                    offered_at=now,
                    delivered_at=datetime(2026, 9, 20 + n, tzinfo=UTC),
                )
            )
        for n, (side, state) in enumerate(
            (
                ("received", "authorised"),
                ("received", "declined"),
                ("received", "received"),
                ("sent", "sent"),
            )
        ):
            await conn.execute(
                insert(transfer_requests).values(
                    request_id=f"r{n}",
                    org_id=org_id,
                    side=side,
                    requester_org_id="a",
                    holder_org_id="b",
                    upn=_upn(900),
                    surname="X",
                    forename="Y",
                    state=state,
                    created_at=datetime(2026, 10, 1 + n, tzinfo=UTC),
                    updated_at=now,
                    attempts=0,
                )
            )
        sent_referrals: tuple[tuple[str, datetime | None], ...] = (
            ("social_care", datetime(2026, 10, 2, tzinfo=UTC)),
            ("lado", datetime(2026, 11, 3, tzinfo=UTC)),
            ("police", None),
        )
        for kind, sent_at in sent_referrals:
            rid = str(uuid.uuid4())
            await conn.execute(
                insert(Referral).values(
                    id=rid,
                    org_id=org_id,
                    pupil_id=pupils[0].id,
                    kind=kind,
                    agency_org_id="a",
                    state="sent" if sent_at else "draft",
                    created_at=now,
                    created_by="x",
                    updated_at=now,
                )
            )
            if sent_at:
                await conn.execute(
                    insert(ReferralEvent).values(
                        id=str(uuid.uuid4()), referral_id=rid, seq=1, at=sent_at, action="sent"
                    )
                )


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with site_for(db_url, tmp_path) as site:
        node = site.node
        people = {}
        for name, role in (
            ("dsl", Role.DSL),
            ("deputy", Role.DEPUTY_DSL),
            ("head", Role.HEAD_TEACHER),
            ("teacher", Role.STAFF),
            ("admin", Role.ADMINISTRATOR),
            ("auditor", Role.AUDITOR),
        ):
            people[name] = await node.person(name, [role])
        admin = await node.store.actor_for(people["admin"].staff.id)
        pupils = []
        for n, year in enumerate(YEARS):
            pupils.append(
                await node.store.create_pupil(
                    admin,
                    NewPupil(
                        upn=_upn(101 + n),
                        surname=f"Pupil{n}",
                        forename="Zoë",
                        dob=date(2015, 3, 4),
                        sex="F",
                        year_group=year,
                        leaving_date=date(2026, 10, 7) if n == 5 else None,
                    ),
                )
            )
        w = World(
            site,
            people["dsl"],
            people["deputy"],
            people["head"],
            people["teacher"],
            people["admin"],
            people["auditor"],
            pupils,
        )
        node.clock.now = SEEDING
        dsl = await w.actor(w.dsl)
        for n, (category, at, who) in enumerate(CONCERNS):
            rec = await node.store.record_concern(
                dsl,
                NewConcern(
                    pupil_ids=tuple(pupils[i].id for i in who),
                    category=category,
                    happened_at=at,
                    account=f"Account number {n}.",
                    location="Hall",
                    body_map=(
                        NewBodyMapMark(
                            pupil_id=pupils[1].id,
                            side="front",
                            x=0.5,
                            y=0.25,
                            description="Bruise on the left forearm",
                        ),
                    )
                    if n == 5
                    else (),
                ),
            )
            w.concern_ids.append(rec.id)
            if n in DECISIONS:
                await node.store.triage_concern(
                    dsl, rec.id, NewTriage(decision=DECISIONS[n], reason="Because.")
                )
        # Actions: due 10 Nov done 20 Nov (late); due 25 Nov done 20 Nov (on time); then on
        # 10 December: due 1 Dec not done (overdue), due 15 Dec not done (not yet due), due
        # 10 Dec done that day (on time); due 3 January (next term): not counted.
        c = w.concern_ids[0]
        late = await node.store.add_action(dsl, c, NewAction(text="a", due_on=date(2026, 11, 10)))
        early = await node.store.add_action(dsl, c, NewAction(text="b", due_on=date(2026, 11, 25)))
        for a in (late, early):
            await node.store.complete_action(dsl, a.id)
        node.clock.now = TODAY
        await node.store.add_action(dsl, c, NewAction(text="c", due_on=date(2026, 12, 1)))
        await node.store.add_action(dsl, c, NewAction(text="d", due_on=date(2026, 12, 15)))
        today = await node.store.add_action(dsl, c, NewAction(text="e", due_on=date(2026, 12, 10)))
        await node.store.complete_action(dsl, today.id)
        await node.store.add_action(dsl, c, NewAction(text="f", due_on=date(2027, 1, 5)))
        await _seed_exchange(site, pupils, dsl.org_id)
        yield w


def _expected() -> dict[str, Counter[str]]:
    """The report's concern figures counted from the seed itself, in plain Python."""
    inside = [(cat, at, who) for cat, at, who in CONCERNS if _in_term(at)]
    by_year: Counter[str] = Counter()
    for _, _, who in inside:
        for year in {YEARS[i] for i in who}:
            by_year[f"Year {year}" if year else "Year group not known"] += 1
    by_month = Counter(at.astimezone(LONDON).strftime("%B %Y") for _, at, _ in inside)
    decided = Counter(
        DECISIONS[n] for n, c in enumerate(CONCERNS) if n in DECISIONS and _in_term(c[1])
    )
    return {
        "category": Counter(cat for cat, _, _ in inside),
        "year": by_year,
        "month": by_month,
        "decided": decided,
    }


async def test_the_report_over_a_term_matches_the_seed_counted_independently(
    world: World,
) -> None:
    reports = Reports(world.site.node.store)
    f = await reports.governors_report(await world.actor(world.dsl), TERM, exact=True)
    exp = _expected()
    labels = {
        "bullying": "Bullying",
        "neglect": "Neglect",
        "online_safety": "Online safety",
        "safeguarding": "Safeguarding",
    }
    assert (f.period.start, f.period.end) == _term_dates()
    assert {c.label: c.value for c in f.by_category} == {
        labels[k]: v for k, v in exp["category"].items()
    }
    assert f.concerns == sum(exp["category"].values()) == 18
    assert {c.label: c.value for c in f.by_year_group} == dict(exp["year"])
    months = {c.label: c.value for c in f.by_month}
    assert list(months) == ["September 2026", "October 2026", "November 2026", "December 2026"]
    assert {k: v for k, v in months.items() if v} == dict(exp["month"])
    outcomes = {c.label: c.value for c in f.outcomes}
    assert outcomes["Early help"] == exp["decided"]["refer_early_help"] == 2
    assert outcomes["Referral to children's social care (MASH)"] == 1
    assert outcomes["Referral to the LADO"] == 1 and outcomes["Referral to the police"] == 0
    assert outcomes["Monitoring"] == exp["decided"]["monitor"] == 3
    assert outcomes["No further action"] == 0  # decided about a summer concern
    assert {c.label: c.value for c in f.referrals} == {
        "Children's social care (MASH)": 1,
        "The LADO": 1,
        "The police": 0,
    }
    a = f.actions
    assert (a.due, a.on_time, a.late, a.overdue, a.not_yet_due) == (5, 2, 1, 1, 1)
    lv = f.leavers
    assert (lv.sent, lv.in_time, lv.late, lv.overdue, lv.waiting, lv.unknown) == (3, 1, 1, 1, 0, 0)
    assert (lv.received, lv.accepted) == (2, 1)
    r = f.requests
    assert (r.received, r.answered, r.authorised, r.declined, r.made) == (3, 2, 1, 1, 1)
    assert world.site.node.events("report.governors.read")
    # School years: 2026-27 holds this term's 18; 2025-26 the three summer concerns (the
    # day before the autumn term is in neither).
    dsl = await world.actor(world.dsl)
    assert (await reports.governors_report(dsl, "year-2026")).concerns == 18
    assert (await reports.governors_report(dsl, "year-2025")).concerns == 3


async def test_small_counts_are_suppressed_for_governors_on_screen_pdf_and_csv(
    world: World,
) -> None:
    site = world.site
    await _as(world, world.dsl)
    # The DSL's own view: exact, marked not for sharing.
    page = await site.get(f"/reports?period={TERM}")
    assert page.status == 200, page.text[:300]
    own = _rows(page)
    assert own["Neglect"] == "4" and own["Bullying"] == "6" and own["Safeguarding"] == "1"
    assert "not for sharing" in page.text
    # The governors' version: 4 and 1 are "fewer than 5"; 5 and more shown.
    page = await site.get(f"/reports?period={TERM}&version=governors")
    gov = _rows(page)
    assert gov["Neglect"] == SUPPRESSED and gov["Safeguarding"] == SUPPRESSED
    assert gov["Bullying"] == "6" and gov["Online safety"] == "7"
    assert gov["Year 6"] == "5" and gov["Year 4"] == SUPPRESSED  # 5 shown, 3 not
    assert gov["All concerns"] == "about 20"  # a suppressed part: the total is rounded
    assert "not for sharing" not in page.text
    # A chart with its table: an image with a title and description, figures as words.
    svg = re.search(r'<svg class="app-chart"[^>]*>.*?</svg>', page.text, re.S)
    assert svg and 'role="img"' in svg.group(0) and "<title id=" in svg.group(0)
    assert "Neglect: fewer than 5" in html.unescape(svg.group(0))
    assert ' style="' not in page.text  # the strict CSP: no inline styles
    # The PDF carries the same figures as the governors' page.
    pdf = await site.client.get(f"/reports/{TERM}/governors.pdf")
    assert pdf.status == 200 and pdf.headers["Content-Type"] == "application/pdf"
    text = " ".join((p.extract_text() or "") for p in PdfReader(io.BytesIO(await pdf.read())).pages)
    text = " ".join(text.split())
    for label in ("Neglect", "Bullying", "Online safety", "Year 4", "Year 6"):
        assert f"{label} {gov[label]}" in text, (label, text[:2000])
    assert "Neglect 4" not in text and "Harbourside Primary" in text and "Page 1 of" in text
    # The CSV likewise.
    got = await site.client.get(f"/reports/{TERM}/governors.csv")
    body = (await got.read()).decode("utf-8-sig")
    rows = {(r[0], r[1]): r[2] for r in csv.reader(io.StringIO(body)) if len(r) == 3}
    assert rows[("Concerns by category", "Neglect")] == SUPPRESSED
    assert rows[("Concerns by category", "Bullying")] == "6"
    assert rows[("Concerns by year group", "Year 6")] == "5"
    assert rows[("Concerns by year group", "Year 4")] == SUPPRESSED
    assert got.headers["Content-Disposition"].startswith("attachment")
    # The DPO can tell what was made of each read: the page, the PDF, the CSV.
    reads = site.node.events("report.governors.read")
    assert [(e.detail["exact"], e.detail["copy"]) for e in reads] == [
        (True, "page"),
        (False, "page"),
        (False, "pdf"),
        (False, "csv"),
    ]


def test_suppression_boundary_and_csv_formula_guard() -> None:
    from transfer.reports.figures import shown

    assert shown(4, exact=False).shown == SUPPRESSED and shown(5, exact=False).shown == "5"
    assert shown(1, exact=False).suppressed and shown(0, exact=False).shown == "0"
    assert shown(4, exact=True).shown == "4"
    for bad in ('=HYPERLINK("x")', "+1", "-1", "@SUM(A1)", "\tx"):
        assert csv_safe(bad).startswith("'")
    assert csv_safe("Bullying") == "Bullying"


async def test_a_category_named_like_a_formula_stays_text_in_the_csv(world: World) -> None:
    store = world.site.node.store
    dsl = await world.actor(world.dsl)
    await store.add_category(dsl, key="formula", label='=HYPERLINK("http://x")')
    await store.record_concern(
        dsl,
        NewConcern(
            pupil_ids=(world.pupils[0].id,),
            category="formula",
            account="x",
            happened_at=datetime(2026, 11, 3, tzinfo=UTC),
        ),
    )
    f = await Reports(store).governors_report(dsl, TERM)
    body = report_csv(present(f, exact=False)).decode("utf-8-sig")
    assert "'=HYPERLINK" in body and "\n=HYPERLINK" not in body and ",=HYPERLINK" not in body
    with pytest.raises(ValueError):
        report_csv(present(f, exact=True))


async def test_only_the_dsl_team_sees_exact_figures_and_reports_are_refused_by_role(
    world: World,
) -> None:
    store = world.site.node.store
    reports = Reports(store)
    head = await world.actor(world.head)
    with pytest.raises(PolicyError):
        await reports.governors_report(head, TERM, exact=True)
    assert (await reports.governors_report(head, TERM)).concerns == 18
    deputy = await world.actor(world.deputy)
    assert (await reports.governors_report(deputy, TERM, exact=True)).concerns == 18
    for who in (world.teacher, world.admin, world.auditor):
        with pytest.raises(PolicyError):
            await reports.governors_report(await world.actor(who), TERM)
    refused = [e for e in world.site.node.events("report.governors.read") if e.outcome == "refused"]
    assert len(refused) == 4
    # By web address: the head teacher gets the governors' version, even when asking.
    site = world.site
    await _as(world, world.head)
    page = await site.get(f"/reports?period={TERM}&version=dsl")
    assert page.status == 200 and _rows(page)["Neglect"] == SUPPRESSED
    assert await _status(site, f"/pupils/{world.pupils[0].upn}/chronology.pdf") == 200
    paths = [
        "/reports",
        f"/reports?period={TERM}",
        f"/reports/{TERM}/governors.pdf",
        f"/reports/{TERM}/governors.csv",
        f"/pupils/{world.pupils[0].upn}/chronology.pdf",
    ]
    for who in (world.teacher, world.admin, world.auditor):
        await _as(world, who)
        home = await site.get("/")
        assert 'href="/reports"' not in home.text
        for path in paths:
            assert await _status(site, path) == 403, (who.username, path)
    await _as(world, world.dsl)
    page = await site.get("/reports")  # the form starts on this term; no report yet
    assert page.status == 200 and 'value="autumn-2026" selected' in page.text
    assert "governors.pdf" not in page.text
    page = await site.get("/reports?period=no-such-term")
    assert page.status == 400 and page.title.startswith("Error: ")
    assert 'href="#period">Choose a term or school year from the list' in page.text
    assert await _status(site, "/reports/no-such-term/governors.pdf") == 404


async def test_the_chronology_prints_with_school_printer_pages_and_every_entry(
    world: World,
) -> None:
    site = world.site
    await _as(world, world.dsl)
    pupil = world.pupils[1]  # four neglect concerns, two bullying, triage decisions
    page = await site.get(f"/pupils/{pupil.upn}")
    assert f'href="/pupils/{pupil.upn}/chronology.pdf"' in page.text
    got = await site.client.get(f"/pupils/{pupil.upn}/chronology.pdf")
    assert got.status == 200 and got.headers["Content-Type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(await got.read()))
    pages = [" ".join((p.extract_text() or "").split()) for p in reader.pages]
    total = len(pages)
    for n, text in enumerate(pages, start=1):
        assert "Harbourside Primary" in text and f"Page {n} of {total}" in text
        assert "Printed by Dsl (Designated safeguarding lead) on 10 December 2026" in text
    everything = " ".join(pages)
    mine = [n for n, (_, _, who) in enumerate(CONCERNS) if 1 in who]
    assert mine
    for n in mine:
        assert f"Account number {n}." in everything
    assert everything.count("Concern: Neglect") == 4
    assert everything.count("Concern: Bullying") == 2  # either side of the term's start
    assert "Triage decision: Referral to children's social care (MASH)" in everything
    assert "Zoë Pupil1" in everything
    assert (
        "Body map, front of the body: Bruise on the left forearm (at 50% across, 25% "
        "down)" in everything
    )
    printed = world.site.node.events("store.chronology.print")
    assert printed and printed[-1].targets == {"pupil": pupil.id}


# ------------------------------------------------------------------ helpers


async def _as(world: World, who: Person) -> Page:
    site = world.site
    site.client.session.cookie_jar.clear()
    home = await site.sign_in(who)
    assert home.title == "Home - Handover", home.text[:500]
    return home


async def _status(site: Site, path: str) -> int:
    async with site.client.get(path) as resp:
        await resp.read()
        return resp.status


def _rows(page: Page) -> dict[str, str]:
    """Every table row of a page: its heading cell and its figure, as read."""
    found = re.findall(
        r'<th scope="row" class="govuk-table__header">(.*?)</th><td[^>]*>(.*?)</td>', page.text
    )
    return {html.unescape(k): html.unescape(re.sub(r"<[^>]+>", "", v)) for k, v in found}


async def test_the_report_index_migration_carries_a_store_forward(world: World) -> None:
    """store_0007 on a store that already holds concerns: down to store_0006 and up again
    on both engines; the index is there afterwards and the figures are the same."""
    from alembic import command
    from sqlalchemy import inspect

    from transfer.store.db import _alembic_config

    store = world.site.node.store
    dsl = await world.actor(world.dsl)
    before = await Reports(store).governors_report(dsl, TERM, exact=True)

    def indexes(conn: object) -> set[str]:
        return {i["name"] or "" for i in inspect(conn).get_indexes("concerns")}

    def down(conn: object) -> set[str]:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "store_0006")
        return indexes(conn)

    def up(conn: object) -> set[str]:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
        return indexes(conn)

    async with store.engine.begin() as conn:
        assert not {"ix_concerns_org_happened", "ix_concerns_org_concern"} & await conn.run_sync(
            down
        )
    assert await Reports(store).governors_report(dsl, TERM, exact=True) == before
    async with store.engine.begin() as conn:
        assert {"ix_concerns_org_happened", "ix_concerns_org_concern"} <= await conn.run_sync(up)
    assert await Reports(store).governors_report(dsl, TERM, exact=True) == before
