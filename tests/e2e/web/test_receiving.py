"""Receiving in the browser, in-process on each engine: the inbox, a received file's
preview (the content as a DSL reads it, audited), accepting into a pupil chosen from
suggestions whose match is said in words, accepting the same file twice (nothing
imported twice, and the page says so), rejecting with a reason that goes back in the
signed receipt, and requests for files (asked and answered). Every new address refused
to a teacher. A second school on the same node sends the files, sealed and signed as
between two nodes, through the inbox's own upload steps."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from schemas.records import NewPupil, PupilRecord
from tests.support.receiving import SENDER_NAME, Receiving, receiving
from tests.support.receiving import upn as _upn
from tests.support.web import WEB_KEY, Page, Site, web_config
from tests.unit.auth.support import OTHER_URN, URN, Person, open_node
from transfer.api import create_app
from transfer.exchange.inbox import Inbox
from transfer.exchange.tables import IssuedReceipt
from transfer.receipts import SignedReceipt
from transfer.store.permissions import Role
from transfer.store.service import Store
from transfer.web import WebServices
from transfer.web.inbox import Described, explain_match


@dataclass
class World:
    site: Site
    rx: Receiving
    dsl: Person
    teacher: Person
    ours: dict[str, PupilRecord] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.site.node.store

    @property
    def inbox(self) -> Inbox:
        return self.rx.inbox

    async def deliver(self) -> str:
        return await self.rx.deliver()

    async def state(self, pid: str) -> str:
        items = await self.inbox.list(await self.store.actor_for(self.dsl.staff.id))
        return next(i.state for i in items if i.package_id == pid)


def text(page: Page) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.text)).split())


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with open_node(db_url, tmp_path / "data") as node:
        store = node.store
        config = web_config()
        node.accounts.security = config.security
        rx = await receiving(node, config, tmp_path)
        dsl = await node.person("dsl", [Role.DSL])
        teacher = await node.person("teacher", [Role.STAFF])
        admin = await store.actor_for((await node.person("admin", [Role.ADMINISTRATOR])).staff.id)
        ours = {}
        for key, serial, forename, dob in (
            ("same", 101, "Amara", date(2014, 11, 3)),
            ("twin", 150, "Amara", date(2014, 11, 3)),
            ("upn_only", 151, "Leon", date(2015, 1, 1)),
        ):
            ours[key] = await store.create_pupil(
                admin,
                NewPupil(
                    upn=_upn(serial),
                    surname="Okafor" if key != "upn_only" else "Nowak",
                    forename=forename,
                    dob=dob,
                    sex="F",
                    year_group="7",
                ),
            )
        app = create_app(
            store=store,
            accounts=node.accounts,
            audit=node.audit,
            config=config,
            web_pages=WebServices(
                store=store,
                accounts=node.accounts,
                config=config,
                audit=node.audit,
                web_key=WEB_KEY,
                inbox=rx.inbox,
                transfer_requests=rx.requests,
                directory=rx.directory,
                alerts=rx.requests.alerts,
            ),
        )
        async with TestClient(TestServer(app)) as client:
            yield World(Site(node, client), rx, dsl, teacher, ours)


# ------------------------------------------------------------------ wording (pure)


def _pupil(upn: str | None, forename: str, surname: str, dob: date | None) -> PupilRecord:
    now = datetime(2026, 9, 1, tzinfo=UTC)
    return PupilRecord(
        id=str(uuid.uuid4()),
        org_id=URN,
        upn=upn,
        surname=surname,
        forename=forename,
        dob=dob,
        sex="F",
        created_at=now,
        updated_at=now,
    )


def test_the_match_is_explained_in_words() -> None:
    theirs = Described("Amara", "Okafor", date(2014, 11, 3), _upn(101))
    same = _pupil(_upn(101), "amara", "OKAFOR", date(2014, 11, 3))
    assert explain_match(same, theirs) == "Same UPN; same name and date of birth."
    twin = _pupil(_upn(150), "Amara", "Okafor", date(2014, 11, 3))
    assert explain_match(twin, theirs) == (
        f"Same name and date of birth; UPN differs: {_upn(150)} here, {_upn(101)} in the file."
    )
    renamed = _pupil(_upn(101), "Amara", "Okafor-Mills", date(2014, 11, 4))
    assert explain_match(renamed, theirs) == (
        "Same UPN; name differs: Amara Okafor-Mills here, Amara Okafor in the file; date of "
        "birth differs: 4 November 2014 here, 3 November 2014 in the file."
    )
    no_upn = _pupil(None, "Amara", "Okafor", date(2014, 11, 3))
    assert explain_match(no_upn, theirs) == (
        "Same name and date of birth; no UPN is recorded here."
    )
    assert explain_match(_pupil(_upn(150), "Amara", "Okafor", None), theirs) is None
    assert explain_match(_pupil(None, "Leon", "Okafor", date(2014, 11, 3)), theirs) is None


# ------------------------------------------------------------------ the inbox and preview


async def test_the_inbox_lists_a_file_and_its_preview_reads_as_the_sender_wrote_it(
    world: World,
) -> None:
    pid = await world.deliver()
    site = world.site
    await site.sign_in(world.dsl)
    inbox = await site.get("/inbox")
    assert inbox.status == 200 and inbox.title == "Inbox - Handover"
    assert '<a class="govuk-service-navigation__link" href="/inbox"' in inbox.text
    row = text(inbox)
    assert f"Amara Okafor, born 3 November 2014 (file from {SENDER_NAME})" in row
    assert re.search(r"\d+ KiB", row) and "New: not opened yet" in row
    preview = await site.get(f"/inbox/{pid}")
    assert preview.status == 200, preview.text
    words = text(preview)
    assert "Amara said she is scared to go home when her uncle visits." in words
    assert "What it holds 1 concern, 1 triage decision, 1 action" in words
    assert "Concern: Child protection" in words and "Where: Playground" in words
    assert "Triage decision: Refer to children's social care" in words
    assert "Disclosure of fear at home." in words
    assert "Call the MASH duty desk." in words and "Rita Dee (DSL)" in words
    assert not re.search(r"/concerns/[0-9a-f-]{36}", preview.text)  # the sender's ids
    viewed = [e for e in site.node.events("transfer.viewed") if e.outcome == "ok"]
    assert viewed and viewed[-1].detail.get("via") == "web"
    assert "Opened, not decided" in text(await site.get("/inbox"))


# ------------------------------------------------------------------ accepting


async def test_accepting_needs_a_pupil_from_the_list_and_says_why_each_is_suggested(
    world: World,
) -> None:
    pid = await world.deliver()
    site = world.site
    await site.sign_in(world.dsl)
    form = await site.get(f"/inbox/{pid}/accept")
    assert form.status == 200
    words = text(form)
    assert "Same UPN; same name and date of birth." in words
    assert f"Same name and date of birth; UPN differs: {_upn(150)} here" in words
    assert "Leon Nowak" not in words  # neither the UPN nor the name and birth date agree
    csrf = form.hidden("csrf")
    for data, field_name, message in (
        ({}, "pupil", "Choose the pupil this file is about, or a new pupil"),
        ({"pupil": world.ours["upn_only"].id}, "pupil", "Choose one of the pupils listed"),
        ({"pupil": str(uuid.uuid4())}, "pupil", "Choose one of the pupils listed"),
        ({"pupil": "other"}, "other_upn", "Enter the UPN of the pupil on your roll"),
        ({"pupil": "other", "other_upn": _upn(199)}, "other_upn", "No pupil on your roll"),
        ({"pupil": "other", "other_upn": "not a upn"}, "other_upn", "No pupil on your roll"),
    ):
        page = await site.post(f"/inbox/{pid}/accept", {"csrf": csrf, **data})
        assert page.status == 400, data
        assert page.title.startswith("Error: Which pupil is this file about?")
        assert f'href="#{field_name}"' in page.text and message in text(page), data
    assert await world.state(pid) == "viewed"  # nothing was imported


async def test_accepting_twice_imports_nothing_twice_and_says_so(world: World) -> None:
    site = world.site
    await site.sign_in(world.dsl)
    same = world.ours["same"]
    first = await world.deliver()
    form = await site.get(f"/inbox/{first}/accept")
    done = await site.post(
        f"/inbox/{first}/accept", {"csrf": form.hidden("csrf"), "pupil": same.id}
    )
    assert done.status == 200 and done.title == "File accepted - Handover", done.text
    words = text(done)
    assert "Into Amara Okafor, Year 7's record" in words
    assert re.search(r"(\d+) records imported, 0 already held", words), words
    imported = int(re.search(r"(\d+) records imported", words).group(1))  # type: ignore[union-attr]
    assert imported >= 3
    # The form sent twice (the back button), or the preview opened again: the confirmation.
    twice = await site.post(
        f"/inbox/{first}/accept", {"csrf": form.hidden("csrf"), "pupil": same.id}
    )
    assert twice.title == "File accepted - Handover"
    assert "records imported" not in text(twice) and first not in text(twice)
    assert (await site.get(f"/inbox/{first}")).title == "File accepted - Handover"
    pupil = await site.get(f"/pupils/{same.upn}")
    assert f"Received from {SENDER_NAME} on" in text(pupil)
    assert "Amara said she is scared to go home" in text(pupil)
    # The same file sent again: accepted into the same pupil, nothing imported twice.
    again = await world.deliver()
    form = await site.get(f"/inbox/{again}/accept")
    done = await site.post(
        f"/inbox/{again}/accept", {"csrf": form.hidden("csrf"), "pupil": same.id}
    )
    words = text(done)
    assert "0 records imported" in words and f"{imported} already held" in words, words
    assert "0 changed records kept as amendments" in words
    dsl = await world.store.actor_for(world.dsl.staff.id)
    concerns = [e for e in await world.store.chronology(dsl, same.id) if e.kind == "concern"]
    assert len(concerns) == 1
    listed = text(await site.get("/inbox"))
    assert listed.count(f"Amara Okafor (file from {SENDER_NAME}) Cliff") == 2, listed
    assert listed.count("Accepted") == 2


async def test_a_new_pupil_is_made_when_asked(world: World) -> None:
    pid = await world.deliver()
    site = world.site
    await site.sign_in(world.dsl)
    form = await site.get(f"/inbox/{pid}/accept")
    done = await site.post(f"/inbox/{pid}/accept", {"csrf": form.hidden("csrf"), "pupil": "new"})
    assert "a new pupil on your roll" in text(done)


# ------------------------------------------------------------------ rejecting


async def test_rejecting_needs_a_reason_which_goes_back_in_the_signed_receipt(
    world: World,
) -> None:
    pid = await world.deliver()
    site = world.site
    await site.sign_in(world.dsl)
    form = await site.get(f"/inbox/{pid}/reject")
    assert form.status == 200
    page = await site.post(f"/inbox/{pid}/reject", {"csrf": form.hidden("csrf"), "reason": "  "})
    assert page.status == 400 and 'href="#reason"' in page.text
    assert "Say why you are rejecting the file" in text(page)
    assert await world.state(pid) == "delivered"
    done = await site.post(
        f"/inbox/{pid}/reject",
        {"csrf": form.hidden("csrf"), "reason": "This pupil never joined our school."},
    )
    assert done.status == 200 and "The file has been rejected" in text(done)
    assert "Rejected" in text(done)
    async with world.store.sessions() as s:
        data = await s.scalar(
            select(IssuedReceipt.data).where(
                IssuedReceipt.package_id == pid, IssuedReceipt.kind == "rejected"
            )
        )
    assert data is not None
    body = SignedReceipt.from_json(bytes(data)).body
    assert body.reason == "This pupil never joined our school."
    again = await site.get(f"/inbox/{pid}/reject")
    assert "That file has already been rejected" in text(again) and pid not in text(again)


async def test_a_rejection_sent_after_the_session_expired_is_kept(world: World) -> None:
    pid = await world.deliver()
    site = world.site
    await site.sign_in(world.dsl)
    form = await site.get(f"/inbox/{pid}/reject")
    site.node.clock.advance(minutes=16)
    page = await site.post(
        f"/inbox/{pid}/reject",
        {
            "csrf": form.hidden("csrf"),
            "form_owner": form.hidden("form_owner"),
            "reason": "Not our pupil.",
        },
    )
    assert "What you had typed has been kept" in page.text
    page = await site.post(
        "/sign-in",
        {
            "csrf": page.hidden("csrf"),
            "org": URN,
            "username": "dsl",
            "password": world.dsl.password,
            "code": world.dsl.code(site.node.clock.now),
            "kept_form": page.hidden("kept_form"),
        },
    )
    assert page.title == "Reject this file - Handover"
    assert "Not our pupil.</textarea>" in page.text
    assert await world.state(pid) == "delivered"


async def test_who_a_file_is_about_is_read_for_the_dsl_team_only(world: World) -> None:
    """The inbox's list of names: from the signed manifests of open files only; refused
    (and audited) for anyone outside the DSL team."""
    from transfer.store.permissions import PermissionDenied

    open_one, accepted = await world.deliver(), await world.deliver()
    dsl = await world.store.actor_for(world.dsl.staff.id)
    await world.inbox.accept(dsl, accepted, pupil_id=world.ours["same"].id)
    about = await world.inbox.subjects(dsl, [open_one, accepted, str(uuid.uuid4())])
    assert list(about) == [open_one]
    assert (about[open_one].forename, about[open_one].dob) == ("Amara", date(2014, 11, 3))
    teacher = await world.store.actor_for(world.teacher.staff.id)
    with pytest.raises(PermissionDenied):
        await world.inbox.subjects(teacher, [open_one])
    refused = [
        e for e in world.site.node.events("transfer.inbox.subjects") if e.outcome == "refused"
    ]
    assert len(refused) == 1


# ------------------------------------------------------------------ requests for files


async def test_asking_a_previous_school_for_a_file(world: World) -> None:
    site = world.site
    await site.sign_in(world.dsl)
    same = world.ours["same"]
    form = await site.get(f"/requests/new?pupil={same.upn}")
    assert form.status == 200
    assert "This is Amara Okafor, Year 7." in text(form)
    pupil_page = await site.get(f"/pupils/{same.upn}")
    assert f'href="/requests/new?pupil={same.upn}"' in pupil_page.text
    assert f'<option value="{OTHER_URN}">{SENDER_NAME} (URN {OTHER_URN})</option>' in form.text
    assert f'<option value="{URN}"' not in form.text  # not our own school
    csrf = form.hidden("csrf")
    for data, name, message in (
        ({"school": OTHER_URN}, "upn", "Enter the pupil's UPN"),
        ({"upn": _upn(199), "school": OTHER_URN}, "upn", "No pupil on your roll has this UPN"),
        ({"upn": same.upn or ""}, "school", "Choose the school the pupil came from"),
        ({"upn": same.upn or "", "school": "999999"}, "school", "Choose a school from the list"),
        ({"upn": same.upn or "", "school": URN}, "school", "Choose a school from the list"),
    ):
        page = await site.post("/requests/new", {"csrf": csrf, **data})
        assert page.status == 400 and f'href="#{name}"' in page.text, data
        assert message in text(page), data
    assert world.rx.peer.sent == []
    done = await site.post(
        "/requests/new",
        {"csrf": csrf, "upn": same.upn or "", "school": OTHER_URN, "note": "Joined in Year 7."},
    )
    assert done.status == 200 and "Your request has been sent" in text(done)
    assert world.rx.peer.sent == [(URN, OTHER_URN, "/peer/v1/transfer-requests")]
    assert f"Amara Okafor, born 3 November 2014, UPN {same.upn}" in text(done)
    assert "Waiting for their answer" in text(done)
    twice = await site.post(
        "/requests/new", {"csrf": csrf, "upn": same.upn or "", "school": OTHER_URN}
    )
    assert twice.status == 400 and "You have already asked this school" in text(twice)
    assert len(world.rx.peer.sent) == 1


async def _received_request(world: World, upn: str) -> str:
    return await world.rx.received_request(upn)


async def test_answering_a_request_sends_the_file_with_a_code_or_declines_with_a_reason(
    world: World,
) -> None:
    site = world.site
    await site.sign_in(world.dsl)
    same = world.ours["same"]
    rid = await _received_request(world, same.upn or "")
    listed = text(await site.get("/requests"))
    assert f"Amara Okafor, born 3 November 2014, UPN {same.upn}" in listed
    assert "Waiting for your answer" in listed and SENDER_NAME in listed
    page = await site.get(f"/requests/{rid}")
    assert "Amara Okafor, Year 7 on your roll has this UPN." in text(page)
    wrong = await site.post(f"/requests/{rid}/send", {"csrf": page.hidden("csrf"), "code": ""})
    assert wrong.status == 400 and 'href="#code"' in wrong.text
    assert world.rx.outbox.queued == []
    node = site.node
    code = world.dsl.code(node.clock.now)
    node.next_step()
    sent = await site.post(f"/requests/{rid}/send", {"csrf": page.hidden("csrf"), "code": code})
    assert sent.status == 200 and "the file is on its way" in text(sent)
    assert world.rx.outbox.queued == [(same.id, OTHER_URN)]
    # Another request, declined: a reason is needed.
    other = await _received_request(world, _upn(199))
    alerts = await site.get("/alerts")  # the alert of a request opens the request
    assert f'<a class="govuk-link" href="/requests/{other}">Open the request</a>' in alerts.text
    page = await site.get(f"/requests/{other}")
    assert "No pupil on your roll has this UPN." in text(page)
    form = await site.get(f"/requests/{other}/decline")
    empty = await site.post(f"/requests/{other}/decline", {"csrf": form.hidden("csrf")})
    assert empty.status == 400 and "Say why you are declining" in text(empty)
    done = await site.post(
        f"/requests/{other}/decline",
        {"csrf": form.hidden("csrf"), "reason": "Amara was never on our roll."},
    )
    assert "The school will read your reason" in text(done)
    assert "Amara was never on our roll." in text(done)
    assert world.rx.peer.sent[-1] == (
        URN,
        OTHER_URN,
        f"/peer/v1/transfer-requests/{other}/decision",
    )


# ------------------------------------------------------------------ permissions by address


async def test_a_teacher_is_refused_every_receiving_page(world: World) -> None:
    pid = await world.deliver()
    rid = await _received_request(world, world.ours["same"].upn or "")
    site = world.site
    await site.sign_in(world.teacher)
    home = await site.get("/")
    assert 'href="/inbox"' not in home.text
    csrf = home.hidden("csrf")
    for path in (
        "/inbox",
        f"/inbox/{pid}",
        f"/inbox/{pid}/accept",
        f"/inbox/{pid}/accepted",
        f"/inbox/{pid}/reject",
        "/requests",
        "/requests/new",
        f"/requests/{rid}",
        f"/requests/{rid}/decline",
    ):
        page = await site.get(path)
        assert page.status == 403, (path, page.status)
    for path, data in (
        (f"/inbox/{pid}/accept", {"pupil": "new"}),
        (f"/inbox/{pid}/reject", {"reason": "No."}),
        ("/requests/new", {"upn": _upn(101), "school": OTHER_URN}),
        (f"/requests/{rid}/send", {"code": "123456"}),
        (f"/requests/{rid}/decline", {"reason": "No."}),
    ):
        page = await site.post(path, {"csrf": csrf, **data})
        assert page.status == 403, (path, page.status)
    assert await world.state(pid) == "delivered"
    assert world.rx.outbox.queued == [] and world.rx.peer.sent == []
