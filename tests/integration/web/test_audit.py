"""The Audit area and subject access downloads, through aiohttp's test client on each engine.

The node here audits into a real audit log (and memory, to read events back), so the
trail the pages show is the one the services wrote while people worked.
"""

from __future__ import annotations

import html
import io
import json
import re
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from pypdf import PdfReader

from schemas.auditing import AuditEvent, MemoryAudit
from schemas.records import NewAction, NewConcern, NewPupil, PupilRecord
from tests.support.web import WEB_KEY, Page, Site, web_config
from tests.unit.auth.support import KEK, Node, Person, start_clock
from transfer.api import create_app
from transfer.audit.export import verify_export
from transfer.audit.log import AuditLog
from transfer.audit.request_ids import RequestIdAudit
from transfer.audit.trail import AuditTrail
from transfer.auth import CHEAPEST, Accounts
from transfer.config import SecuritySection
from transfer.identifiers import upn_check_letter
from transfer.store.db import make_engine
from transfer.store.permissions import Role
from transfer.store.service import Store
from transfer.web import WebServices

URN = "199001"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ACCOUNT = "Said an older boy took her phone at the gate."


class Both(MemoryAudit):
    """Memory (to read events back) and the real log (what the pages read)."""

    def __init__(self, log: AuditLog) -> None:
        super().__init__()
        self.log = log

    async def record(self, event: AuditEvent) -> None:
        await super().record(event)
        await self.log.record(event)


@dataclass
class World:
    site: Site
    log: AuditLog
    dsl: Person
    head: Person
    dpo: Person
    teacher: Person
    admin: Person
    amara: PupilRecord
    ben: PupilRecord
    concern_id: str


def _upn(body: str) -> str:
    return upn_check_letter(body) + body


@asynccontextmanager
async def audited_world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    clock = start_clock()
    log = AuditLog.open(db_url, KEK, clock=clock)
    memory = Both(log)
    sink = RequestIdAudit(memory)
    store = await Store.open(db_url, KEK, sink, data_dir=tmp_path / "data", clock=clock)
    try:
        config = web_config()
        accounts = Accounts(store, KEK, sink, SecuritySection(), clock=clock, hashing=CHEAPEST)
        await store.create_school(name="Harbourside Primary", urn=URN, laestab="8012000")
        node = Node(
            store=store, accounts=accounts, audit=memory, clock=clock, data_dir=tmp_path / "data"
        )
        dsl = await node.person("r.dee", [Role.DSL])
        head = await node.person("h.stone", [Role.HEAD_TEACHER])
        dpo = await node.person("d.price", [Role.AUDITOR], enrol=True)
        teacher = await node.person("t.lane", [Role.STAFF])
        admin = await node.person("a.admin", [Role.ADMINISTRATOR])
        admin_actor = await store.actor_for(admin.staff.id)
        amara = await store.create_pupil(
            admin_actor,
            NewPupil(
                upn=_upn("801200026101"),
                surname="Okafor",
                forename="Amara",
                dob=date(2014, 11, 3),
                sex="F",
                year_group="6",
            ),
        )
        ben = await store.create_pupil(
            admin_actor,
            NewPupil(
                upn=_upn("801200026102"),
                surname="Okafor",
                forename="Ben",
                dob=date(2016, 2, 1),
                sex="M",
                year_group="4",
            ),
        )
        concern = await store.record_concern(
            await store.actor_for(teacher.staff.id),
            NewConcern(
                pupil_ids=(amara.id,),
                category="bullying",
                happened_at=clock.now,
                account=ACCOUNT,
            ),
        )
        dsl_actor = await store.actor_for(dsl.staff.id)
        await store.add_action(dsl_actor, concern.id, NewAction(text="Call home today."))
        app = create_app(
            store=store,
            accounts=accounts,
            audit=sink,
            config=config,
            web_pages=WebServices(
                store=store,
                accounts=accounts,
                config=config,
                audit=sink,
                web_key=WEB_KEY,
                trail=AuditTrail(log, sink),
            ),
        )
        async with TestClient(TestServer(app)) as client:
            yield World(
                Site(node, client), log, dsl, head, dpo, teacher, admin, amara, ben, concern.id
            )
    finally:
        await store.close()
        await log.close()


async def _as(w: World, person: Person) -> Page:
    home = await w.site.sign_in(person)
    assert home.status == 200, home.text
    return home


async def _sign_out(w: World, page: Page) -> None:
    await w.site.post("/sign-out", {"csrf": page.hidden("csrf")})


def _shown(page: Page) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.text))


def _rows(page: Page) -> list[str]:
    body = page.text.split('<tbody class="govuk-table__body">', 1)
    if len(body) < 2:
        return []
    rows = re.findall(
        r"<tr class=\"govuk-table__row\">(.*?)</tr>", body[1].split("</tbody>")[0], re.S
    )
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", r)).split()) for r in rows]


async def _seed_reads(w: World) -> None:
    """The DSL opens Amara's page (record and chronology); the next day the head teacher
    reads Ben's chronology."""
    home = await _as(w, w.dsl)
    assert (await w.site.get(f"/pupils/{w.amara.upn}")).status == 200
    await _sign_out(w, home)
    w.site.node.clock.advance(days=1)
    home = await _as(w, w.head)
    assert (await w.site.get(f"/pupils/{w.ben.upn}")).status == 200
    await _sign_out(w, home)


async def test_each_filter_narrows_the_trail_and_names_people_and_pupils(
    db_url: str, tmp_path: Path
) -> None:
    async with audited_world(db_url, tmp_path) as w:
        await _seed_reads(w)
        first_day = w.site.node.clock.now.date() - timedelta(days=1)
        await _as(w, w.dpo)
        everything = await w.site.get("/audit")
        assert everything.status == 200, everything.text
        assert everything.title == "Who has looked at this child's file? - Handover"
        all_rows = _rows(everything)
        # Every entry of the school but the page's own reading (written after it counted).
        assert all_rows and len(all_rows) == min(50, await w.log.count(org=w.amara.org_id) - 1)

        # By pupil, chosen by name: only entries about Amara, named, never an id.
        want = await w.log.count(org=w.amara.org_id, pupil=w.amara.id)
        page = await w.site.get("/audit?pupil=amara+okafor")
        rows = _rows(page)
        assert page.title == "Who has looked at Amara Okafor's file? - Handover"
        assert len(rows) == want > 0
        assert all("Amara Okafor, Year 6" in r for r in rows)
        assert any("R.Dee (DSL)" in r and "Read the pupil's chronology" in r for r in rows)
        assert any("A.Admin (Administrator)" in r and "Added the pupil" in r for r in rows)
        assert not any("Ben" in r for r in rows)
        assert not _UUID.search(_shown(page))

        # A surname both share: the page asks which pupil, linked by UPN.
        page = await w.site.get("/audit?pupil=okafor")
        assert "Which pupil?" in page.text and not _rows(page)
        assert f"/audit?pupil={w.amara.upn}" in page.text and f"pupil={w.ben.upn}" in page.text
        page = await w.site.get("/audit?pupil=Nobody+Here")
        assert page.status == 400 and page.title.startswith("Error:")

        # By person: the head teacher's entries only (Ben's chronology).
        head_id = w.head.staff.id
        want = await w.log.count(org=w.amara.org_id, person=head_id)
        page = await w.site.get("/audit?person=h.stone")
        rows = _rows(page)
        assert len(rows) == want > 0
        assert all("H.Stone (Head teacher)" in r for r in rows)
        assert any("Ben Okafor, Year 4" in r for r in rows)

        # By what was done, in words: chronology reads only.
        page = await w.site.get("/audit?action=chronology")
        rows = _rows(page)
        assert len(rows) == 2
        assert all("Read the pupil's chronology" in r for r in rows)

        # By date: the first day has Amara's read, not Ben's.
        day = first_day.strftime("%d/%m/%Y")
        page = await w.site.get(f"/audit?action=chronology&from={day}&to={day}")
        rows = _rows(page)
        assert len(rows) == 1 and "Amara Okafor" in rows[0] and "R.Dee (DSL)" in rows[0]
        page = await w.site.get("/audit?from=31/2/2026")
        assert page.status == 400 and "must be a real date" in page.text

        # What the auditor reads never includes the concern's content.
        for path in ("/audit", "/audit?pupil=amara", "/audit/integrity"):
            assert ACCOUNT not in (await w.site.get(path)).text


async def test_the_trail_is_paginated_newest_first(db_url: str, tmp_path: Path) -> None:
    async with audited_world(db_url, tmp_path) as w:
        home = await _as(w, w.dsl)
        for _ in range(30):  # each page view writes two entries about Amara
            await w.site.get(f"/pupils/{w.amara.upn}")
        await _sign_out(w, home)
        await _as(w, w.dpo)
        total = await w.log.count(org=w.amara.org_id, pupil=w.amara.id)
        first = await w.site.get(f"/audit?pupil={w.amara.upn}")
        assert f"Showing 1 to 50 of {total} entries" in first.text
        assert 'rel="next"' in first.text and 'rel="prev"' not in first.text
        second = await w.site.get(f"/audit?pupil={w.amara.upn}&page=2")
        total += 1  # the first page's own reading was about Amara too
        assert f"Showing 51 to {total} of {total} entries" in second.text
        assert len(_rows(first)) + len(_rows(second)) == total
        assert "Added the pupil" in _rows(second)[-1]  # the oldest entry comes last


async def test_verify_from_the_page_finds_a_tampered_entry(db_url: str, tmp_path: Path) -> None:
    async with audited_world(db_url, tmp_path) as w:
        await _seed_reads(w)
        home = await _as(w, w.dpo)
        page = await w.site.post("/audit/verify", {"csrf": home.hidden("csrf")})
        assert page.status == 200 and page.title == "The audit log is intact - Handover"
        size = await w.log.size()
        assert "entries checked" in page.text
        assert (await w.log.root(size - 1)).hex() in page.text or (
            await w.log.root(size)
        ).hex() in page.text

        # Tamper as tests/integration/audit/test_tamper.py does: change a search column.
        shown = await w.log.show(pupil=w.ben.id)
        seq = shown[0].seq
        engine = make_engine(db_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text("UPDATE audit_entries SET pupil = :p WHERE seq = :s"),
                    {"p": w.amara.id, "s": seq},
                )
        finally:
            await engine.dispose()
        page = await w.site.post("/audit/verify", {"csrf": home.hidden("csrf")})
        assert page.title == "The audit log has been changed - Handover"
        text = _shown(page)
        assert f"Entry {seq}" in text
        assert "The pupil stored beside the entry" in text
        verified = [
            e
            for e in w.site.node.audit.events
            if e.action == "audit.read" and e.detail.get("what") == "verify"
        ]
        assert [e.outcome for e in verified] == ["ok", "failed"]


async def test_the_export_downloads_and_verifies_with_only_its_files(
    db_url: str, tmp_path: Path
) -> None:
    async with audited_world(db_url, tmp_path) as w:
        await _seed_reads(w)
        home = await _as(w, w.dpo)
        integrity = await w.site.get("/audit/integrity")
        assert integrity.status == 200
        async with w.site.client.post("/audit/export", data={"csrf": home.hidden("csrf")}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "application/x-tar"
            assert 'filename="audit-export-harbourside-primary-' in r.headers["Content-Disposition"]
            body = await r.read()
        out = tmp_path / "export"
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            tar.extractall(out, filter="data")
        (folder,) = list(out.iterdir())
        vkey = (await w.log.verifier()).vkey
        summary = verify_export(folder, vkey)
        # Every entry of the school but the export's own (written once it was made).
        assert summary.entries == await w.log.count(org=w.amara.org_id) - 1
        assert not summary.complete
        # The page now shows the checkpoint signed for the export.
        integrity = await w.site.get("/audit/integrity")
        latest = await w.log.latest_checkpoint()
        assert latest is not None and latest.checkpoint.root.hex() in integrity.text
        assert not list((tmp_path / "data").rglob("audit-export*"))


async def test_teachers_and_administrators_are_refused_every_audit_url(
    db_url: str, tmp_path: Path
) -> None:
    async with audited_world(db_url, tmp_path) as w:
        for person in (w.teacher, w.admin, w.head):
            home = await _as(w, person)
            assert 'href="/audit"' not in home.text
            csrf = home.hidden("csrf")
            for path in ("/audit", f"/audit?pupil={w.amara.upn}", "/audit/integrity"):
                assert (await w.site.get(path)).status == 403, (person.username, path)
            for path in ("/audit/verify", "/audit/export"):
                assert (await w.site.post(path, {"csrf": csrf})).status == 403
            sar = f"/pupils/{w.amara.upn}/subject-access"
            assert (await w.site.get(sar)).status == 403
            page = await w.site.post(sar, {"csrf": csrf, "format": "json", "code": "123456"})
            assert page.status == 403
            await _sign_out(w, home)
        refused = [
            e
            for e in w.site.node.audit.events
            if e.action == "audit.read" and e.outcome == "refused"
        ]
        assert len(refused) >= 3 * 5
        # The DPO: the Audit area, but no pupil page and no subject access export.
        home = await _as(w, w.dpo)
        assert 'href="/audit"' in home.text
        assert (await w.site.get(f"/pupils/{w.amara.upn}")).status == 403
        assert (await w.site.get(f"/pupils/{w.amara.upn}/subject-access")).status == 403


async def _sar(w: World, fmt: str) -> tuple[int, bytes, str]:
    page = await w.site.get(f"/pupils/{w.amara.upn}/subject-access")
    assert page.status == 200, page.text
    code = w.dsl.code(w.site.node.clock.now)
    w.site.node.next_step()
    async with w.site.client.post(
        f"/pupils/{w.amara.upn}/subject-access",
        data={"csrf": page.hidden("csrf"), "format": fmt, "code": code},
    ) as r:
        return r.status, await r.read(), r.headers.get("Content-Disposition", "")


def _pdf_text(pdf: bytes) -> str:
    return " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(pdf)).pages)


async def test_subject_access_as_json_and_pdf_after_a_code(db_url: str, tmp_path: Path) -> None:
    async with audited_world(db_url, tmp_path) as w:
        home = await _as(w, w.dsl)
        pupil_page = await w.site.get(f"/pupils/{w.amara.upn}")
        assert f'href="/pupils/{w.amara.upn}/subject-access"' in pupil_page.text
        assert f'href="/audit?pupil={w.amara.upn}"' in pupil_page.text

        # No code, or a wrong one: the form again, nothing exported.
        sar = f"/pupils/{w.amara.upn}/subject-access"
        page = await w.site.post(sar, {"csrf": home.hidden("csrf"), "format": "json", "code": ""})
        assert page.status == 400 and "Enter the 6-digit code" in page.text
        page = await w.site.post(
            sar, {"csrf": home.hidden("csrf"), "format": "json", "code": "000000"}
        )
        assert page.status == 400 and not w.site.node.events("store.sar.export")

        status, body, disposition = await _sar(w, "json")
        assert status == 200 and disposition.endswith('.json"')
        records = json.loads(body)
        assert records["pupil"]["surname"] == "Okafor"
        assert [c["account"] for c in records["concerns"]] == [ACCOUNT]
        assert [a["text"] for a in records["actions"]] == ["Call home today."]

        status, pdf, disposition = await _sar(w, "pdf")
        assert status == 200 and pdf.startswith(b"%PDF-") and disposition.endswith('.pdf"')
        text = _pdf_text(pdf)
        assert "Subject access export: Amara Okafor" in text
        assert "Harbourside Primary" in text and "Printed by R.Dee (Designated" in text
        for concern in records["concerns"]:
            assert " ".join(concern["account"].split()) in text
        for action in records["actions"]:
            assert action["text"] in text
        assert records["pupil"]["upn"] in text
        people = {p["id"]: p["name"] for p in records["people"]}
        assert f"by {people[records['concerns'][0]['recorded_by']]} (Staff)" in text
        assert not _UUID.search(text)

        # Each download is audited with how it was delivered; nothing is left on disk.
        delivered = [e.detail["delivered_as"] for e in w.site.node.events("store.sar.export")]
        assert delivered == ["json", "pdf"]
        assert not [p for p in (tmp_path / "data").rglob("*") if "sar-" in p.name]

        # Erased: the pupil's export can no longer be had (nothing of it was kept anywhere).
        await w.site.node.store.erase_pupil(
            await w.site.node.store.actor_for(w.dsl.staff.id), w.amara.id
        )
        sar = f"/pupils/{w.amara.upn}/subject-access"
        assert (await w.site.get(sar)).status == 404
        code = w.dsl.code(w.site.node.clock.now)
        page = await w.site.post(sar, {"csrf": home.hidden("csrf"), "format": "json", "code": code})
        assert page.status == 404 and ACCOUNT not in page.text
        assert len(w.site.node.events("store.sar.export")) == 2
