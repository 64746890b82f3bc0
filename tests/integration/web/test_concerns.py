"""Logging a concern in the web app (issue 13, item 3) and the alerts it raises (item 7),
in-process on each engine: the pupil found without JavaScript, several pupils, the body
map from the region list and from a click, mistakes shown at their fields with everything
kept, a date in the future, a pupil not in the school, a double submit, an expired
session, and a teacher who cannot reach another teacher's concern."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from schemas.records import (
    Destination,
    NewAction,
    NewConcern,
    NewPupil,
    PupilChanges,
    PupilRecord,
)
from tests.integration.alerts.test_alerts import upn
from tests.support.web import Page, Site, site_for
from tests.unit.auth.support import OTHER_URN, PASSWORD, URN, Person
from transfer.store.permissions import Role
from transfer.store.tables import Document

ACCOUNT = "She said her brother pushed her down the stairs; VERY-SECRET-ACCOUNT"
#: Typed text that looks like markup is shown as typed, never run.
MARKUP = "<script>alert(1)</script> & <b>bold</b>"


@pytest.fixture
async def site(db_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    async with site_for(db_url, tmp_path, alerts=True) as s:
        yield s


async def _pupil(
    site: Site, serial: int, forename: str, surname: str, org: str = URN
) -> PupilRecord:
    admin = await site.node.person(f"admin{serial}", [Role.ADMINISTRATOR], org=org)
    actor = await site.node.store.actor_for(admin.staff.id)
    return await site.node.store.create_pupil(
        actor,
        NewPupil(
            upn=upn(serial),
            surname=surname,
            forename=forename,
            dob=date(2015, 1, 2),
            sex="F",
            year_group="5",
        ),
    )


def _form(page: Page, pupils: list[str], **over: str) -> list[tuple[str, str]]:
    fields = {
        "csrf": page.hidden("csrf"),
        "form_owner": page.hidden("form_owner"),
        "submission_key": page.hidden("submission_key"),
        "mark_rows": "3",
        "category": "bullying",
        "happened-day": "7",
        "happened-month": "9",
        "happened-year": "2026",
        "happened_time": "08:30",
        "location": "Playground",
        "account": ACCOUNT,
        "people_involved": "Her brother, Year 9",
        "mark_1_where": "front-left-arm",
        "mark_1_note": "Bruise, 3 cm, blue",
        "mark_2_where": "back@0.5,0.3",
        "mark_2_note": "Graze",
        "mark_3_where": "",
        "mark_3_note": "",
        "action": "save",
    }
    fields.update(over)
    return [*fields.items(), *(("pupil", p) for p in pupils)]


async def test_a_teacher_logs_a_concern_about_two_pupils_without_javascript(site: Site) -> None:
    amara = await _pupil(site, 1, "Amara", "Okafor")
    ben = await _pupil(site, 2, "Ben", "Okafor")
    await _pupil(site, 3, "Chloe", "Smith")
    teacher = await site.node.person("teacher", [Role.STAFF])
    dsl = await site.node.person("dsl", [Role.DSL])
    home = await site.sign_in(teacher)
    assert '<a href="/concerns/new"' in home.text  # "log a concern" first for staff
    assert home.text.index("Log a concern") < home.text.index("Concerns you logged")
    assert "Alerts <span" not in home.text  # no bell: nothing for them

    found = await site.get("/concerns/new?q=okafor")
    assert "Amara Okafor, Year 5" in found.text and "Ben Okafor" in found.text
    assert "Chloe" not in found.text
    by_upn = await site.get(f"/concerns/new?q={upn(3)}")
    assert "Chloe Smith" in by_upn.text and "Amara" not in by_upn.text
    chosen = await site.get(f"/concerns/new?pupil={amara.id}&q=ben")
    assert f'value="{amara.id}" checked' in chosen.text
    assert f"pupil={amara.id}&amp;pupil={ben.id}" in chosen.text  # the "Select" link keeps both
    form = await site.get(f"/concerns/new?pupil={amara.id}&pupil={ben.id}")
    assert 'name="mark_1_pupil"' in form.text  # two pupils: whose mark it is

    saved = await site.post("/concerns/new", _form(form, [amara.id, ben.id], mark_2_pupil=ben.id))
    assert saved.status == 200 and saved.title == "Concern logged - Handover"
    assert re.search(r"/concerns/[0-9a-f-]{36}/saved$", saved.url)
    assert "Amara Okafor" in saved.text and "Ben Okafor" in saved.text
    assert "Left arm (front): Bruise, 3 cm, blue" in saved.text and "Graze" in saved.text
    assert "The designated safeguarding lead team has been told" in saved.text
    assert f'<span class="app-prose">{ACCOUNT}</span>' in saved.text
    assert "&lt;span" not in saved.text
    (concern,) = await site.node.store.list_concerns(await site.node.store.actor_for(dsl.staff.id))
    full = await site.node.store.get_concern(
        await site.node.store.actor_for(dsl.staff.id), concern.id
    )
    assert set(full.pupil_ids) == {amara.id, ben.id} and full.account == ACCOUNT
    marks = {m.description: m for m in full.body_map}
    assert marks["Graze"].pupil_id == ben.id and marks["Graze"].side == "back"
    assert (marks["Graze"].x, marks["Graze"].y) == (0.5, 0.3)
    assert marks["Left arm (front): Bruise, 3 cm, blue"].pupil_id == amara.id

    # The DSL team is alerted at once: the bell counts it, the alerts page says who and
    # what kind, never the account, never a raw id or the API's address.
    await site.post("/sign-out", {"csrf": saved.hidden("csrf")})
    dsl_home = await site.sign_in(dsl)
    assert re.search(r'app-bell__count">1<', dsl_home.text)
    alerts = await site.get("/alerts")
    assert "New concern logged: Bullying" in alerts.text
    assert "Teacher (member of staff)" in alerts.text
    assert "VERY-SECRET" not in alerts.text and "/api/v1" not in alerts.text
    assert concern.id not in re.sub(r'(href|action)="[^"]*"', "", alerts.text)
    # The DSL can read it; the page links to the pupil's page.
    dsl_view = await site.get(f"/concerns/{concern.id}/saved")
    assert dsl_view.status == 200 and f'href="/pupils/{amara.id}"' in dsl_view.text
    dismissed = await site.post(
        re.findall(r'action="(/alerts/[^"]+/dismiss)"', alerts.text)[0],
        {"csrf": alerts.hidden("csrf")},
    )
    assert "The alert has been dismissed" in dismissed.text
    assert re.search(r'app-bell__count">0<', dismissed.text)


async def test_mistakes_are_shown_at_their_fields_and_everything_typed_is_kept(
    site: Site,
) -> None:
    amara = await _pupil(site, 1, "Amara", "Okafor")
    teacher = await site.node.person("teacher", [Role.STAFF])
    await site.sign_in(teacher)
    form = await site.get(f"/concerns/new?pupil={amara.id}")
    page = await site.post(
        "/concerns/new",
        _form(
            form,
            [],
            category="",
            account="  ",
            happened_time="25:00",
            mark_3_note="A note without a place",
            location="Behind the sports hall",
        ),
    )
    assert page.status == 400 and page.title.startswith("Error: Log a concern")
    for anchor, message in [
        ("#pupil", "Find and select the pupil or pupils the concern is about"),
        ("#category", "Select the kind of concern"),
        ("#happened_time", "Enter the time it happened, for example 14:30"),
        ("#account", "Enter what you saw or were told"),
        ("#mark_3_where", "Choose where mark 3 is, or clear its note"),
    ]:
        assert f'href="{anchor}">{message}</a>' in page.text, message
        assert page.text.count(message) == 2, message  # the summary and the field
    assert 'value="Behind the sports hall"' in page.text
    assert 'value="A note without a place"' in page.text
    assert re.search(r'value="front-left-arm" selected', page.text)
    assert 'value="back@0.5,0.3" selected' in page.text  # the click's mark is kept too
    assert page.hidden("submission_key") == form.hidden("submission_key")

    future = site.node.clock.now + timedelta(days=2)
    page = await site.post(
        "/concerns/new",
        _form(
            form,
            [amara.id],
            **{"happened-day": str(future.day), "happened-month": str(future.month)},
        ),
    )
    assert "The date and time it happened must be in the past" in page.text
    assert ACCOUNT in page.text
    page = await site.post(
        "/concerns/new", _form(form, [amara.id], **{"happened-day": "31", "happened-month": "2"})
    )
    assert "Enter a real date, for example 27 3 2026" in page.text
    dsl = await site.node.store.actor_for((await site.node.person("d", [Role.DSL])).staff.id)
    assert await site.node.store.list_concerns(dsl) == []


async def test_a_pupil_not_in_the_school_is_refused_in_plain_words(site: Site) -> None:
    elsewhere = await _pupil(site, 9, "Dan", "Jones", org=OTHER_URN)
    teacher = await site.node.person("teacher", [Role.STAFF])
    await site.sign_in(teacher)
    form = await site.get("/concerns/new")
    for bogus in (elsewhere.id, "00000000-0000-0000-0000-000000000000"):
        page = await site.post("/concerns/new", _form(form, [bogus]))
        assert page.status == 400
        assert "A pupil chosen is not on your school&#39;s roll" in page.text
        assert ACCOUNT in page.text and "Traceback" not in page.text
    searched = await site.get("/concerns/new?q=Dan")
    assert "No pupil on your school's roll matches" in searched.text
    dsl = await site.node.store.actor_for((await site.node.person("d", [Role.DSL])).staff.id)
    assert await site.node.store.list_concerns(dsl) == []


async def test_sending_the_form_twice_keeps_one_concern(site: Site) -> None:
    amara = await _pupil(site, 1, "Amara", "Okafor")
    teacher = await site.node.person("teacher", [Role.STAFF])
    await site.sign_in(teacher)
    form = await site.get(f"/concerns/new?pupil={amara.id}")
    first = await site.post("/concerns/new", _form(form, [amara.id]), follow=False)
    again = await site.post("/concerns/new", _form(form, [amara.id]), follow=False)
    assert first.status == again.status == 303
    assert first.headers["Location"] == again.headers["Location"]
    fresh = await site.get(f"/concerns/new?pupil={amara.id}")
    assert fresh.hidden("submission_key") != form.hidden("submission_key")
    third = await site.post("/concerns/new", _form(fresh, [amara.id]), follow=False)
    assert third.headers["Location"] != first.headers["Location"]
    dsl = await site.node.store.actor_for((await site.node.person("d", [Role.DSL])).staff.id)
    assert len(await site.node.store.list_concerns(dsl)) == 2


async def test_after_an_expired_session_the_concern_comes_back_to_its_author(
    site: Site,
) -> None:
    amara = await _pupil(site, 1, "Amara", "Okafor")
    teacher = await site.node.person("teacher", [Role.STAFF])
    await site.sign_in(teacher)
    form = await site.get(f"/concerns/new?pupil={amara.id}")
    site.node.clock.advance(minutes=16)
    page = await site.post("/concerns/new", _form(form, [amara.id]))
    assert page.title == "Sign in to Handover - Handover"
    assert "What you had typed has been kept" in page.text and ACCOUNT not in page.text
    again = await site.post(
        "/sign-in",
        {
            "csrf": page.hidden("csrf"),
            "org": URN,
            "username": "teacher",
            "password": PASSWORD,
            "code": "",
            "kept_form": page.hidden("kept_form"),
        },
    )
    assert again.title == "Log a concern - Handover"
    assert "the concern was not saved" in again.text and ACCOUNT in again.text
    assert 'value="Bruise, 3 cm, blue"' in again.text
    assert again.hidden("submission_key") == form.hidden("submission_key")
    saved = await site.post("/concerns/new", _form(again, [amara.id]))
    assert saved.title == "Concern logged - Handover"


async def test_a_teacher_cannot_reach_another_teachers_concern(site: Site) -> None:
    amara = await _pupil(site, 1, "Amara", "Okafor")
    author: Person = await site.node.person("author", [Role.STAFF])
    other = await site.node.person("other", [Role.STAFF])
    home = await site.sign_in(author)
    form = await site.get(f"/concerns/new?pupil={amara.id}")
    saved = await site.post("/concerns/new", _form(form, [amara.id]))
    await site.post("/sign-out", {"csrf": home.hidden("csrf")})
    await site.sign_in(other)
    page = await site.get(urlpath(saved.url))
    assert page.status == 404 and ACCOUNT not in page.text
    assert page.title == "Page not found - Handover"
    assert [e.outcome for e in site.node.events("store.concern.read")][-1] == "refused"
    mine = await site.get("/")
    assert "No concerns yet." in mine.text


async def test_roles_that_do_not_log_concerns_are_refused_by_the_store(site: Site) -> None:
    admin = await site.node.person("admin", [Role.ADMINISTRATOR])
    await site.sign_in(admin)
    page = await site.get("/concerns/new")
    assert page.status == 403
    assert site.node.events("store.concern.form")[-1].outcome == "refused"


async def test_an_over_large_form_is_refused_in_plain_words(site: Site) -> None:
    amara = await _pupil(site, 1, "Amara", "Okafor")
    teacher = await site.node.person("teacher", [Role.STAFF])
    await site.sign_in(teacher)
    form = await site.get(f"/concerns/new?pupil={amara.id}")
    page = await site.post("/concerns/new", _form(form, [amara.id], account="x" * 300_000))
    assert page.status == 413 and page.title == "What was sent is too large - Handover"


def urlpath(url: str) -> str:
    return "/" + url.split("/", 3)[3]


PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


async def _attach(
    site: Site,
    page: Page,
    path: str,
    body: bytes,
    *,
    name: str = "note.pdf",
    csrf: bool = True,
    csrf_last: bool = False,
    back: str = "",
) -> Page:
    form = aiohttp.FormData()
    if csrf and not csrf_last:
        form.add_field("csrf", page.hidden("csrf"))
    if back:
        form.add_field("back", back)
    form.add_field("file", body, filename=name, content_type="application/octet-stream")
    if csrf and csrf_last:
        form.add_field("csrf", page.hidden("csrf"))
    async with site.client.post(path, data=form) as resp:
        return Page(resp.status, await resp.text(), resp.headers, str(resp.url))


async def _documents(site: Site, concern_id: str) -> list[str]:
    async with site.node.store.sessions() as s:
        rows = await s.scalars(select(Document.media_type).where(Document.concern_id == concern_id))
        return list(rows)


async def test_the_author_attaches_a_file_to_the_concern(site: Site) -> None:
    amara = await _pupil(site, 1, "Amara", "Okafor")
    author = await site.node.person("author", [Role.STAFF])
    await site.sign_in(author)
    form = await site.get(f"/concerns/new?pupil={amara.id}")
    saved = await site.post("/concerns/new", _form(form, [amara.id]))
    concern_id = urlpath(saved.url).split("/")[2]
    files = f"/concerns/{concern_id}/files"
    assert 'enctype="multipart/form-data"' in saved.text

    none = await site.post(files, {"csrf": saved.hidden("csrf")})
    assert none.status == 400 and "Select a file to attach" in none.text
    wrong = await _attach(site, saved, files, b"MZ\x90\x00" + bytes(200), name="run.exe")
    assert wrong.status == 415 and "The file must be a PDF, a photo" in wrong.text
    site.node.store.max_document_bytes = 1024
    large = await _attach(site, saved, files, b"x" * 5000, name="long.txt")
    assert large.status == 413 and "The file must be smaller than 1 MB" in large.text
    site.node.store.max_document_bytes = 10 * 1024**2
    assert await _documents(site, concern_id) == []
    # The CSRF token must come with the form, before the file.
    for page in (
        await _attach(site, saved, files, PDF, csrf=False),
        await _attach(site, saved, files, PDF, csrf_last=True),
    ):
        assert page.status == 403
    done = await _attach(site, saved, files, PDF, name="C:\\Users\\tw\\note.pdf")
    assert done.status == 200 and "The file has been attached to the concern." in done.text
    assert await _documents(site, concern_id) == ["application/pdf"]

    # Another teacher cannot; nor can the head teacher, who may read it but not add to it.
    await site.post("/sign-out", {"csrf": done.hidden("csrf")})
    other = await site.node.person("other", [Role.STAFF])
    home = await site.sign_in(other)
    assert (await _attach(site, home, files, PDF)).status == 404
    await site.post("/sign-out", {"csrf": home.hidden("csrf")})
    head = await site.node.person("head", [Role.HEAD_TEACHER])
    home = await site.sign_in(head)
    view = await site.get(f"/concerns/{concern_id}/saved")
    assert view.status == 200 and "Attach a file" not in view.text
    assert (await _attach(site, home, files, PDF)).status == 403
    assert site.node.events("store.document.upload")[-1].outcome == "refused"
    assert await _documents(site, concern_id) == ["application/pdf"]


async def test_what_was_typed_is_shown_as_typed_never_as_markup(site: Site) -> None:
    amara = await _pupil(site, 1, "Amara", "Okafor")
    teacher = await site.node.person("teacher", [Role.STAFF])
    await site.sign_in(teacher)
    form = await site.get(f"/concerns/new?pupil={amara.id}")
    saved = await site.post(
        "/concerns/new", _form(form, [amara.id], account=MARKUP, people_involved=MARKUP)
    )
    assert saved.title == "Concern logged - Handover"
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"
    assert saved.text.count(f'<span class="app-prose">{escaped}</span>') == 2
    assert "<script>alert" not in saved.text and "<b>bold" not in saved.text


async def test_the_bell_counts_a_leaving_date_at_once_not_at_the_sweep(site: Site) -> None:
    """Item 7: a leaver's KCSIE deadline reaches the bell as soon as the date is recorded."""
    amara = await _pupil(site, 1, "Amara", "Okafor")
    dsl = await site.node.person("dsl", [Role.DSL])
    home = await site.sign_in(dsl)
    assert re.search(r'app-bell__count">0<', home.text)  # the DSL team always has the bell
    admin = await site.node.store.actor_for(
        (await site.node.person("adm", [Role.ADMINISTRATOR])).staff.id
    )
    left = site.node.clock.now.date() - timedelta(days=21)
    await site.node.store.update_pupil(
        admin,
        amara.id,
        PupilChanges(
            leaving_date=left,
            destination=Destination(kind="school", urn=OTHER_URN, name="Cliff Road"),
        ),
    )
    home = await site.get("/")
    assert re.search(r'app-bell__count">1<', home.text)
    assert 'href="/pupils/' + amara.id + '">Amara Okafor' in home.text  # leavers' row links
    alerts = await site.get("/alerts")
    # Left in the summer holiday: due early next term (school days), so "due soon".
    assert "Leaver&#39;s file due on Tuesday 8 September 2026 (Amara Okafor)" in alerts.text
    assert "Open Amara Okafor\u2019s record" in alerts.text


async def test_the_dsls_own_actions_come_first_on_the_home_page(site: Site) -> None:
    amara = await _pupil(site, 1, "Amara", "Okafor")
    dsl = await site.node.person("dsl", [Role.DSL])
    deputy = await site.node.person("deputy", [Role.DEPUTY_DSL])
    store = site.node.store
    dsl_actor = await store.actor_for(dsl.staff.id)
    concern = await store.record_concern(
        dsl_actor,
        NewConcern(
            pupil_ids=(amara.id,),
            category="neglect",
            happened_at=site.node.clock.now,
            account="Hungry",
        ),
    )
    late = site.node.clock.now.date() - timedelta(days=3)
    # The DSL's own is due a day later than the others, and still comes first.
    for text, who, due in (
        ("Ring the social worker", deputy, late),
        ("Meet the parents", dsl, late + timedelta(days=1)),
        ("Check attendance", deputy, late),
    ):
        await store.add_action(
            dsl_actor, concern.id, NewAction(text=text, assignee_id=who.staff.id, due_on=due)
        )
    home = await site.sign_in(dsl)
    mine = home.text.index("Meet the parents")
    assert mine < home.text.index("Ring the social worker")
    assert mine < home.text.index("Check attendance")
    assert "Meet the parents <span" in home.text  # marked "(yours)"


async def test_the_dsl_adds_a_document_from_the_concerns_page(site: Site) -> None:
    """Issue 13 item 5: documents are part of triage; the DSL adds one from the concern's
    page and comes back to it; mistakes come back on the "Add a document" page."""
    amara = await _pupil(site, 1, "Amara", "Okafor")
    author = await site.node.person("author", [Role.STAFF])
    await site.sign_in(author)
    form = await site.get(f"/concerns/new?pupil={amara.id}")
    saved = await site.post("/concerns/new", _form(form, [amara.id]))
    concern_id = urlpath(saved.url).split("/")[2]
    await site.post("/sign-out", {"csrf": saved.hidden("csrf")})

    dsl = await site.node.person("dsl", [Role.DSL])
    await site.sign_in(dsl)
    concern = await site.get(f"/concerns/{concern_id}")
    assert f'href="/concerns/{concern_id}/documents/new"' in concern.text
    page = await site.get(f"/concerns/{concern_id}/documents/new")
    assert page.status == 200 and page.title == "Add a document - Handover"
    assert 'name="back" value="concern"' in page.text
    files = f"/concerns/{concern_id}/files"
    wrong = await _attach(
        site, page, files, b"MZ\x90\x00" + bytes(200), name="run.exe", back="concern"
    )
    assert wrong.status == 415 and wrong.title == "Error: Add a document - Handover"
    assert "The file must be a PDF, a photo" in wrong.text
    done = await _attach(site, page, files, PDF, name="strategy-minutes.pdf", back="concern")
    assert done.status == 200 and urlpath(done.url) == f"/concerns/{concern_id}?done=document"
    assert "The document has been added." in done.text
    assert "strategy-minutes.pdf" in done.text
    assert await _documents(site, concern_id) == ["application/pdf"]

    # The head teacher reads the concern but adds no document; another teacher cannot see it.
    await site.post("/sign-out", {"csrf": done.hidden("csrf")})
    head = await site.node.person("head", [Role.HEAD_TEACHER])
    await site.sign_in(head)
    assert (await site.get(f"/concerns/{concern_id}/documents/new")).status == 403
    other = await site.node.person("other", [Role.STAFF])
    home = await site.get("/")
    await site.post("/sign-out", {"csrf": home.hidden("csrf")})
    await site.sign_in(other)
    assert (await site.get(f"/concerns/{concern_id}/documents/new")).status == 404
