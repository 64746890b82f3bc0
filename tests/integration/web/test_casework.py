"""The pupil page, a concern's page, triage, amending a concern and search: in-process on
each engine (aiohttp's TestServer over a test node, a clock the test moves). Each rule of
issue 13 items 4, 5 and 6 as a page shows it, and each refusal by web address."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from schemas.records import NewConcern, NewPupil, PupilRecord
from tests.support.web import Page, Site, site_for
from tests.unit.auth.support import URN, Person
from transfer.identifiers import upn_check_letter
from transfer.store.permissions import Actor, Role
from transfer.store.tables import Concern, ProvenanceRow


def _upn(serial: int) -> str:
    body = f"801200026{serial:03d}"
    return upn_check_letter(body) + body


@dataclass
class World:
    site: Site
    dsl: Person
    teacher: Person
    other_teacher: Person
    head: Person
    admin: Person
    amara: PupilRecord
    leon: PupilRecord
    mine: str  # the teacher's concern about Amara
    theirs: str  # the other teacher's concern about Amara
    restricted: str  # the other teacher's restricted concern about Amara

    async def actor(self, p: Person) -> Actor:
        return await self.site.node.store.actor_for(p.staff.id)

    def text(self, page: Page) -> str:
        return html.unescape(page.text)


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with site_for(db_url, tmp_path) as site:
        node = site.node
        dsl = await node.person("dsl", [Role.DSL])
        teacher = await node.person("teacher", [Role.STAFF])
        other = await node.person("other", [Role.STAFF])
        head = await node.person("head", [Role.HEAD_TEACHER])
        admin = await node.person("admin", [Role.ADMINISTRATOR])
        admin_actor = await node.store.actor_for(admin.staff.id)
        pupils = []
        for n, (forename, surname) in enumerate((("Amara", "Okafor"), ("Leon", "Nowak"))):
            pupils.append(
                await node.store.create_pupil(
                    admin_actor,
                    NewPupil(
                        upn=_upn(101 + n),
                        surname=surname,
                        forename=forename,
                        dob=date(2014, 11, 3),
                        sex="F",
                        year_group="6",
                    ),
                )
            )
        amara, leon = pupils
        now = node.clock.now

        async def concern(who: Person, category: str, account: str, days: int) -> str:
            actor = await node.store.actor_for(who.staff.id)
            rec = await node.store.record_concern(
                actor,
                NewConcern(
                    pupil_ids=(amara.id,),
                    category=category,
                    happened_at=now - timedelta(days=days),
                    account=account,
                    location="Playground",
                    people_involved="Amara; a lunchtime supervisor",
                ),
            )
            return rec.id

        mine = await concern(teacher, "bullying", "Amara said older pupils took her lunch.", 20)
        theirs = await concern(other, "neglect", "Amara was hungry at breakfast club.", 10)
        restricted = await concern(other, "domestic_abuse", "Amara spoke of shouting at home.", 5)
        yield World(site, dsl, teacher, other, head, admin, amara, leon, mine, theirs, restricted)


async def _as(world: World, who: Person) -> Page:
    site = world.site
    if site.client.session.cookie_jar:
        site.client.session.cookie_jar.clear()
    home = await site.sign_in(who)
    assert home.title == "Home - Handover", home.text[:500]
    return home


# ------------------------------------------------------------------ the pupil page


async def test_the_dsl_sees_the_pupils_details_and_whole_chronology(world: World) -> None:
    await _as(world, world.dsl)
    page = await world.site.get(f"/pupils/{world.amara.upn}")
    assert page.status == 200 and page.title == "Amara Okafor, Year 6 - Handover"
    text = world.text(page)
    assert str(world.amara.upn) in text and "3 November 2014" in text and "Year 6" in text
    # In time order, each by name and role, never by id.
    found = re.findall(r'<h3 class="govuk-heading-s app-timeline__title">(.*?)</h3>', text, re.S)
    titles = [re.sub(r"<[^>]+>", "", t).strip() for t in found]
    assert titles == ["Concern: Bullying", "Concern: Neglect", "Concern: Domestic abuse"], titles
    assert "recorded by Teacher (Staff)" in text and "recorded by Other (Staff)" in text
    for staff_id in (world.teacher.staff.id, world.other_teacher.staff.id):
        assert staff_id not in text
    # The same page by id; the audit log has the read.
    by_id = await world.site.get(f"/pupils/{world.amara.id}")
    assert by_id.title == page.title
    assert world.site.node.events("store.chronology.read")


async def test_chronology_filters_are_a_get_form_with_mistakes_by_their_fields(
    world: World,
) -> None:
    await _as(world, world.dsl)
    base = f"/pupils/{world.amara.upn}"
    page = await world.site.get(f"{base}?category=neglect")
    assert "Concern: Neglect" in page.text and "Concern: Bullying" not in page.text
    assert 'value="neglect" selected' in page.text
    day = (world.site.node.clock.now - timedelta(days=12)).date()
    page = await world.site.get(f"{base}?from={day.isoformat()}")
    assert "Concern: Bullying" not in page.text and "Concern: Neglect" in page.text
    page = await world.site.get(f"{base}?kind=triage")
    assert "No entries match these filters." in page.text
    page = await world.site.get(f"{base}?from=31/02/2026&to=nonsense")
    assert page.status == 400 and page.title.startswith("Error: ")
    assert 'href="#from">The start date must be a real date' in page.text
    assert 'value="nonsense"' in page.text  # what was typed is kept
    page = await world.site.get(f"{base}?from=2026-06-01&to=2026-01-01")
    assert 'href="#to">The end date must be the same as or after the start date' in page.text


async def test_a_long_chronology_comes_in_pages(world: World) -> None:
    from transfer.web import pupils

    store = world.site.node.store
    dsl = await world.actor(world.dsl)
    for n in range(pupils.PAGE_SIZE + 5):
        await store.record_concern(
            dsl,
            NewConcern(
                pupil_ids=(world.leon.id,),
                category="attendance",
                account=f"Absence number {n}.",
                happened_at=world.site.node.clock.now - timedelta(hours=200 - n),
            ),
        )
    await _as(world, world.dsl)
    page = await world.site.get(f"/pupils/{world.leon.upn}")
    assert f"Showing 1 to {pupils.PAGE_SIZE} of {pupils.PAGE_SIZE + 5} entries" in page.text
    assert "Absence number 0." in page.text and "Absence number 104." not in page.text
    later = re.search(r'href="([^"]+)#chronology" rel="next"', page.text)
    assert later is not None
    page = await world.site.get(html.unescape(later.group(1)))
    assert "Absence number 104." in page.text and "Page 2 of 2" in page.text


async def test_a_received_record_shows_where_it_came_from(world: World) -> None:
    store = world.site.node.store
    async with store.sessions() as s, s.begin():
        s.add(
            ProvenanceRow(
                id="11111111-2222-3333-4444-555555555555",
                org_id=URN,
                source_org_id="199002",
                source_org_name="Cliff Road Academy",
                package_id="pkg-1",
                received_at=world.site.node.clock.now - timedelta(days=1),
                original_id="orig-1",
            )
        )
        await s.execute(
            update(Concern)
            .where(Concern.id == world.theirs)
            .values(provenance_id="11111111-2222-3333-4444-555555555555")
        )
    await _as(world, world.dsl)
    text = world.text(await world.site.get(f"/pupils/{world.amara.upn}"))
    assert "Received from Cliff Road Academy on 6 September 2026" in text
    assert "recorded by a member of staff at Cliff Road Academy" in text
    page = await world.site.get(f"/concerns/{world.theirs}")
    assert "Received from Cliff Road Academy" in world.text(page)
    # A received concern's text cannot be changed here.
    assert "Change the text of this concern" not in page.text


async def test_unknown_or_malformed_pupils_and_concerns_are_a_plain_404(world: World) -> None:
    await _as(world, world.dsl)
    for path in (
        f"/pupils/{_upn(999)}",
        "/pupils/not-a-upn",
        "/pupils/H80120002610Z",
        "/concerns/00000000-0000-0000-0000-000000000000",
        "/concerns/nope",
        "/documents/00000000-0000-0000-0000-000000000000",
    ):
        page = await world.site.get(path)
        assert page.status == 404, path
        assert page.title == "Page not found - Handover", path
        assert "Traceback" not in page.text and "UPN" not in page.text


async def test_a_teacher_sees_only_the_concerns_they_logged(world: World) -> None:
    await _as(world, world.teacher)
    page = await world.site.get(f"/pupils/{world.amara.upn}")
    assert page.status == 200 and "Concerns you logged about this pupil" in page.text
    assert f'href="/concerns/{world.mine}"' in page.text
    assert world.theirs not in page.text and world.restricted not in page.text
    assert "Chronology" not in page.text
    mine = await world.site.get(f"/concerns/{world.mine}")
    assert mine.status == 200 and "older pupils took her lunch" in mine.text
    assert "Record a triage decision" not in mine.text
    # Another teacher's concern, a restricted one, and the DSL's forms: not by URL either.
    for path in (f"/concerns/{world.theirs}", f"/concerns/{world.restricted}"):
        refused = await world.site.get(path)
        assert refused.status == 404 and "hungry" not in refused.text, path
    own, theirs = f"/concerns/{world.mine}", f"/concerns/{world.theirs}"
    for path in (f"{own}/triage", f"{own}/actions/new", f"{own}/contacts/new", f"{theirs}/amend"):
        refused = await world.site.get(path)
        assert refused.status in (403, 404), (path, refused.status)
        assert refused.status == 403 or path.endswith("/amend")
    form = await world.site.get(f"/concerns/{world.mine}")
    posted = await world.site.post(
        f"/concerns/{world.mine}/triage",
        {
            "csrf": form.hidden("csrf"),
            "decision": "monitor",
            "reason": "I decide",
        },
    )
    assert posted.status == 403
    assert not world.site.node.events("store.triage.record") or all(
        e.outcome == "refused" for e in world.site.node.events("store.triage.record")
    )


async def test_restricted_categories_only_for_those_allowed(world: World) -> None:
    await _as(world, world.head)
    page = await world.site.get(f"/pupils/{world.amara.upn}")
    assert "Concern: Neglect" in page.text and "Domestic abuse" not in page.text
    assert (await world.site.get(f"/concerns/{world.restricted}")).status == 404
    await _as(world, world.dsl)
    page = await world.site.get(f"/concerns/{world.restricted}")
    assert page.status == 200 and "Restricted category" in page.text


async def test_an_administrator_sees_details_and_no_concern_content(world: World) -> None:
    await _as(world, world.admin)
    page = await world.site.get(f"/pupils/{world.amara.upn}")
    assert page.status == 200 and str(world.amara.upn) in page.text
    assert "never safeguarding records" in page.text
    assert "lunch" not in page.text and "Chronology" not in page.text
    for path in (
        f"/concerns/{world.mine}",
        f"/concerns/{world.mine}/triage",
        f"/concerns/{world.mine}/amend",
    ):
        refused = await world.site.get(path)
        assert refused.status == 403, path
        assert "lunch" not in refused.text


# ------------------------------------------------------------------ triage


async def _form(world: World, path: str) -> tuple[Page, dict[str, str]]:
    page = await world.site.get(path)
    assert page.status == 200, (path, page.status)
    fields = {"csrf": page.hidden("csrf"), "form_owner": page.hidden("form_owner")}
    if "submission" in page.text:
        fields["submission"] = page.hidden("submission")
    return page, fields


async def test_the_dsl_triages_adds_an_action_and_a_contact_and_marks_it_done(
    world: World,
) -> None:
    await _as(world, world.dsl)
    cid = world.mine
    _, fields = await _form(world, f"/concerns/{cid}/triage")
    # Mistakes next to their fields, what was typed kept, nothing saved.
    page = await world.site.post(f"/concerns/{cid}/triage", {**fields, "reason": "Because."})
    assert page.status == 400 and 'href="#decision">Select the decision' in page.text
    assert ">Because.</textarea>" in page.text
    assert page.hidden("submission") == fields["submission"]
    page = await world.site.post(f"/concerns/{cid}/triage", {**fields, "decision": "no_referral"})
    assert 'href="#reason">Say why' in page.text and 'value="no_referral" checked' in page.text
    assert not world.site.node.events("store.triage.record")
    # A decision not to refer, with its reason; sent twice, stored once.
    good = {**fields, "decision": "no_referral", "reason": "Parents spoken to; monitoring."}
    page = await world.site.post(f"/concerns/{cid}/triage", good)
    assert page.url.endswith(f"/concerns/{cid}?done=triage#triage") or "done=triage" in page.url
    again = await world.site.post(f"/concerns/{cid}/triage", good)
    assert again.status == 200
    text = world.text(again)
    assert text.count("Triage decision: Decided not to refer") == 1
    assert "Parents spoken to; monitoring." in text and "recorded by Dsl (DSL)" in text
    assert len([e for e in world.site.node.events("store.triage.record") if e.outcome == "ok"]) == 1

    # An action with an owner chosen by name, and a due date.
    page, fields = await _form(world, f"/concerns/{cid}/actions/new")
    assert f'value="{world.head.staff.id}">Head (Head teacher)</option>' in page.text
    yesterday = (world.site.node.clock.now - timedelta(days=1)).date().isoformat()
    page = await world.site.post(
        f"/concerns/{cid}/actions/new",
        {**fields, "text": "Speak to Amara's mother", "owner": "someone", "due": yesterday},
    )
    assert page.status == 400
    assert 'href="#owner">Choose someone from the list' in page.text
    assert 'href="#due">The due date must be today or later' in page.text
    assert "Speak to Amara&#39;s mother</textarea>" in page.text
    due = (world.site.node.clock.now + timedelta(days=7)).date()
    page = await world.site.post(
        f"/concerns/{cid}/actions/new",
        {
            **fields,
            "text": "Speak to Amara's mother",
            "owner": world.head.staff.id,
            "due": due.isoformat(),
        },
    )
    text = world.text(page)
    assert "The action has been added." in text
    assert "Owner:</dt> <dd>Head (Head teacher)" in text and "14 September 2026" in text
    done = re.search(r'<form method="post" action="(/actions/[^"]+/done)">', page.text)
    assert done is not None
    page = await world.site.post(done.group(1), {"csrf": page.hidden("csrf")})
    assert "The action has been marked as done." in page.text
    assert "Mark as done" not in page.text and "Not yet" not in page.text

    # A contact with an agency: not in the future.
    page, fields = await _form(world, f"/concerns/{cid}/contacts/new")
    tomorrow = (world.site.node.clock.now + timedelta(days=1)).date().isoformat()
    page = await world.site.post(
        f"/concerns/{cid}/contacts/new",
        {**fields, "agency": "Bristol MASH", "day": tomorrow, "time": "10:00"},
    )
    assert page.status == 400 and "The contact cannot be in the future" in page.text
    assert 'value="Bristol MASH"' in page.text
    today = world.site.node.clock.now.date().isoformat()
    page = await world.site.post(
        f"/concerns/{cid}/contacts/new",
        {
            **fields,
            "agency": "Bristol MASH",
            "day": today,
            "time": "9:00",
            "outcome": "Advice: monitor.",
        },
    )
    text = world.text(page)
    assert "The contact has been recorded." in text and "Contact with Bristol MASH" in text
    assert "Advice: monitor." in text


async def test_a_concern_is_amended_with_the_earlier_text_kept(world: World) -> None:
    await _as(world, world.teacher)
    page, fields = await _form(world, f"/concerns/{world.mine}/amend")
    assert "Amara said older pupils took her lunch.</textarea>" in page.text
    # Nothing changed: said so, nothing saved.
    same = {
        **fields,
        "account": "Amara said older pupils took her lunch.",
        "location": "Playground",
        "people_involved": "Amara; a lunchtime supervisor",
        "reason": "Checking",
    }
    page = await world.site.post(f"/concerns/{world.mine}/amend", same)
    assert page.status == 400 and "Nothing was changed" in page.text
    changed = {
        **same,
        "account": "Amara said two Year 6 pupils took her lunch on Monday.",
        "reason": "Added who and when, after speaking to her again.",
    }
    page = await world.site.post(f"/concerns/{world.mine}/amend", changed)
    text = world.text(page)
    assert "The concern has been changed." in text
    assert "two Year 6 pupils took her lunch on Monday" in text
    assert re.search(r"Amended by Teacher \(Staff\) on 7 September 2026 at \d", text)
    assert "Added who and when" in text
    assert "The text before this change" in text and "older pupils took her lunch." in text
    again = await world.site.post(f"/concerns/{world.mine}/amend", changed)  # a double submit
    assert world.text(again).count("Amended by Teacher") == 1
    assert len(world.site.node.events("store.concern.amend")) == 1
    # Someone else's concern: not by URL; the DSL may.
    refused = await world.site.get(f"/concerns/{world.theirs}/amend")
    assert refused.status == 404
    await _as(world, world.dsl)
    page = await world.site.get(f"/concerns/{world.mine}")
    assert "Amended by Teacher (Staff)" in world.text(page)
    assert 'href="/concerns/' + world.mine + '/amend"' in page.text


async def test_a_form_sent_after_the_session_expired_is_kept(world: World) -> None:
    await _as(world, world.dsl)
    _, fields = await _form(world, f"/concerns/{world.mine}/triage")
    world.site.node.clock.advance(minutes=16)
    page = await world.site.post(
        f"/concerns/{world.mine}/triage",
        {**fields, "decision": "monitor", "reason": "Keep an eye on lunchtimes."},
    )
    assert page.title == "Sign in to Handover - Handover"
    assert "What you had typed has been kept" in page.text
    kept = page.hidden("kept_form")
    page = await world.site.post(
        "/sign-in",
        {
            "csrf": page.hidden("csrf"),
            "org": URN,
            "username": "dsl",
            "password": world.dsl.password,
            "code": world.dsl.code(world.site.node.clock.now),
            "kept_form": kept,
        },
    )
    assert page.title == "Record a triage decision - Handover"
    assert "What you typed has been kept" in page.text
    assert "Keep an eye on lunchtimes.</textarea>" in page.text
    assert 'value="monitor" checked' in page.text
    assert not world.site.node.events("store.triage.record")


# ------------------------------------------------------------------ search


async def test_search_finds_within_each_persons_permissions(world: World) -> None:
    await _as(world, world.teacher)
    page = await world.site.get("/search?q=amara")
    assert page.status == 200 and "Amara Okafor" in page.text
    assert f'href="/concerns/{world.mine}"' in page.text
    assert world.theirs not in page.text and world.restricted not in page.text
    await _as(world, world.dsl)
    page = await world.site.get(f"/search?q={world.amara.upn}")
    for cid in (world.mine, world.theirs, world.restricted):
        assert f'href="/concerns/{cid}"' in page.text
    page = await world.site.get("/search?category=neglect")
    assert world.theirs in page.text and world.mine not in page.text
    page = await world.site.get("/search?status=closed")
    assert "No concern you may see matches." in page.text
    day = (world.site.node.clock.now - timedelta(days=7)).date().isoformat()
    page = await world.site.get(f"/search?from={day}")
    assert world.restricted in page.text and world.mine not in page.text
    page = await world.site.get("/search?from=yesterday&status=lost")
    assert page.status == 400 and 'href="#from">' in page.text and 'href="#status">' in page.text
    await _as(world, world.head)
    page = await world.site.get("/search?q=amara")
    assert world.theirs in page.text and world.restricted not in page.text
    await _as(world, world.admin)
    page = await world.site.get("/search?q=leon")
    assert "Leon Nowak" in page.text and "Concerns (" not in page.text


# ------------------------------------------------------------------ double submits at once


async def test_the_same_form_sent_twice_at_once_is_stored_once(world: World) -> None:
    store = world.site.node.store
    dsl = await world.actor(world.dsl)
    from schemas.records import NewAction, NewAmendment, NewTriage

    ref = "5b0e7d8e-8a52-4a63-9c1e-3f7b6f7f0a01"
    results = await asyncio.gather(
        *(
            store.triage_concern(
                dsl, world.mine, NewTriage(decision="monitor", reason="Watch."), record_id=ref
            )
            for _ in range(4)
        )
    )
    assert {r.id for r in results} == {ref}
    ref2 = "5b0e7d8e-8a52-4a63-9c1e-3f7b6f7f0a02"
    actions = await asyncio.gather(
        *(
            store.add_action(dsl, world.mine, NewAction(text="Call home."), record_id=ref2)
            for _ in range(4)
        )
    )
    assert {a.id for a in actions} == {ref2}
    ref3 = "5b0e7d8e-8a52-4a63-9c1e-3f7b6f7f0a03"
    await asyncio.gather(
        *(
            store.amend_concern(
                dsl, world.mine, NewAmendment(account="Corrected.", reason="Typo."), record_id=ref3
            )
            for _ in range(4)
        )
    )
    history = await store.concern_amendments(dsl, world.mine)
    assert [a.id for a in history] == [ref3]
    assert history[0].earlier_account == "Amara said older pupils took her lunch."
    lines = await store.chronology(dsl, world.amara.id)
    assert sum(1 for e in lines if e.kind == "triage") == 1
    assert sum(1 for e in lines if e.kind == "action") == 1
    # A reference used for another concern is refused, not taken for a repeat.
    with pytest.raises(Exception, match="used for something else"):
        await store.triage_concern(
            dsl, world.theirs, NewTriage(decision="monitor", reason="x"), record_id=ref
        )
