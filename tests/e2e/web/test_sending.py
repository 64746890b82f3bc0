"""Sending a leaver's file in the browser (issue 14, "Sending a leaver's file"), in-process
on each engine against a tiny real receiving node: mark as leaving with the KCSIE deadline
at once, the send page's preview and step-up code, the reason rule in its three cases,
the outbox's states, cancel and resend, receipts that Debian's ``minisign`` checks, and
every new address refused to a teacher."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from schemas.records import Destination, NewConcern, NewPupil, PupilChanges, PupilRecord
from tests.e2e.web.sending_support import ELM_PARK, MASH, OTHER_URN, URN, SendingSite, sending_site
from tests.support.web import Page
from tests.unit.auth.support import Node, Person
from transfer.exchange.tables import outgoing_packages
from transfer.identifiers import upn_check_letter
from transfer.store.permissions import Actor, Role


def _upn(serial: int) -> str:
    body = f"801200026{serial:03d}"
    return upn_check_letter(body) + body


@dataclass
class World:
    s: SendingSite
    dsl: Person
    teacher: Person
    head: Person
    admin: Person
    amara: PupilRecord

    @property
    def node(self) -> Node:
        return self.s.site.node

    async def actor(self, p: Person) -> Actor:
        return await self.node.store.actor_for(p.staff.id)

    def code(self, p: Person) -> str:
        code = p.code(self.node.clock.now)
        self.node.next_step()
        return code


@pytest.fixture
async def w(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with sending_site(db_url, tmp_path) as s:
        node = s.site.node
        dsl = await node.person("dsl", [Role.DSL])
        teacher = await node.person("teacher", [Role.STAFF])
        head = await node.person("head", [Role.HEAD_TEACHER])
        admin = await node.person("admin", [Role.ADMINISTRATOR])
        admin_actor = await node.store.actor_for(admin.staff.id)
        amara = await node.store.create_pupil(
            admin_actor,
            NewPupil(
                upn=_upn(101),
                surname="Okafor",
                forename="Amara",
                dob=date(2014, 11, 3),
                sex="F",
                year_group="6",
            ),
        )
        teacher_actor = await node.store.actor_for(teacher.staff.id)
        for category, account in (
            ("bullying", "Amara said older pupils took her lunch."),
            ("domestic_abuse", "Amara spoke of shouting at home."),
        ):
            await node.store.record_concern(
                teacher_actor,
                NewConcern(
                    pupil_ids=(amara.id,),
                    category=category,
                    account=account,
                    happened_at=datetime(2026, 6, 1, 10, 0, tzinfo=UTC),
                    location="Playground",
                ),
            )

        async def minutes() -> AsyncIterator[bytes]:
            yield b"Strategy discussion minutes.\n" * 50

        await node.store.add_document(
            await node.store.actor_for(dsl.staff.id),
            amara.id,
            minutes(),
            filename="strategy-minutes.txt",
        )
        yield World(s, dsl, teacher, head, admin, amara)


async def _as(w: World, who: Person) -> Page:
    site = w.s.site
    site.client.session.cookie_jar.clear()
    home = await site.sign_in(who)
    assert home.title == "Home - Handover", home.text[:500]
    return home


def _text(page: Page) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page.text)))


async def _packages(w: World) -> list[tuple[str, str]]:
    async with w.node.store.sessions() as sess:
        rows = (
            await sess.execute(sa.select(outgoing_packages.c.to_org_id, outgoing_packages.c.state))
        ).all()
    return [(r[0], r[1]) for r in rows]


async def _mark_leaving(w: World, to: str = OTHER_URN) -> None:
    await w.node.store.update_pupil(
        await w.actor(w.admin),
        w.amara.id,
        PupilChanges(
            leaving_date=date(2026, 10, 5),
            destination=Destination(kind="school", urn=to, name="Cliff Road Academy"),
        ),
    )


async def _send(w: World, to: str = "", reason: str = "", code: str | None = None) -> Page:
    path = f"/pupils/{w.amara.upn}/send"
    form = await w.s.site.get(path + (f"?to={to}" if to else ""))
    data = {
        "csrf": form.hidden("csrf"),
        "to": to or form.hidden("to"),
        "reason": reason,
        "code": w.code(w.dsl) if code is None else code,
    }
    return await w.s.site.post(path, data)


# ------------------------------------------------------------------ mark as leaving


async def test_marking_a_pupil_as_leaving_shows_the_kcsie_deadline_at_once(w: World) -> None:
    site = w.s.site
    await _as(w, w.dsl)
    pupil = await site.get(f"/pupils/{w.amara.upn}")
    assert 'href="/pupils/' + str(w.amara.upn) + '/leaving">Mark as leaving' in pupil.text
    path = f"/pupils/{w.amara.upn}/leaving"
    form = await site.get(path)
    assert form.status == 200 and form.title == "Mark Amara Okafor as leaving - Handover"
    text = _text(form)
    # Schools from the signed directory, by name, town and URN (an entry without a town, as
    # directories signed before towns were listed, by name and URN); never the agency nor
    # our own.
    assert "Cliff Road Academy, Weston-super-Mare (URN 199002)" in text
    assert "Elm Park School (URN 199003)" in text
    assert "Bristol MASH" not in text and "Harbourside Primary (URN" not in text
    assert "Not known yet" in text
    csrf = form.hidden("csrf")
    # The search is part of the form (no JavaScript): it keeps the date typed.
    found = await site.post(
        path, {"csrf": csrf, "leaving": "5/10/2026", "q": "elm", "action": "search"}
    )
    assert found.status == 200 and 'value="5/10/2026"' in found.text
    assert "Elm Park School" in _text(found) and "Cliff Road Academy" not in _text(found)
    assert "1 school matches 'elm'." in _text(found)
    nothing = await site.post(path, {"csrf": csrf, "q": "zzz", "action": "search"})
    assert "No school matches 'zzz'. Check the spelling, or search by URN." in _text(nothing)
    by_urn = await site.post(path, {"csrf": csrf, "q": "199002", "action": "search"})
    assert "Cliff Road Academy" in _text(by_urn) and "Elm Park School" not in _text(by_urn)
    # By town too: any case, part of a word.
    by_town = await site.post(path, {"csrf": csrf, "q": "WESTON-SUPER", "action": "search"})
    assert "1 school matches 'WESTON-SUPER'." in _text(by_town)
    assert "Cliff Road Academy, Weston-super-Mare (URN 199002)" in _text(by_town)
    assert "Elm Park School" not in _text(by_town)
    no_town = await site.post(path, {"csrf": csrf, "q": "Taunton", "action": "search"})
    assert "No school matches 'Taunton'." in _text(no_town)
    assert "Cliff Road Academy" not in _text(no_town) and "Elm Park School" not in _text(no_town)
    # Mistakes by their fields, what was typed kept, nothing saved.
    bad = await site.post(path, {"csrf": csrf, "leaving": "31/02/2026", "action": "save"})
    assert bad.status == 400 and bad.title.startswith("Error: Mark Amara Okafor as leaving")
    assert 'href="#leaving">The leaving date must be a real date' in bad.text
    assert 'href="#destination">Choose the next school' in bad.text
    assert 'value="31/02/2026"' in bad.text
    stranger = await site.post(
        path, {"csrf": csrf, "leaving": "5/10/2026", "destination": MASH, "action": "save"}
    )
    assert stranger.status == 400 and "Choose a school from the list" in stranger.text
    assert (await w.node.store.get_pupil(await w.actor(w.dsl), w.amara.id)).leaving_date is None
    # Saved: the pupil's page shows the KCSIE deadline at once, in school days, with the date.
    saved = await site.post(
        path, {"csrf": csrf, "leaving": "5/10/2026", "destination": OTHER_URN, "action": "save"}
    )
    assert saved.status == 200 and saved.url.endswith(f"/pupils/{w.amara.upn}?done=leaving")
    text = _text(saved)
    assert "The leaving date and next school have been saved." in text
    # Leaving on Monday 5 October (in term): due on the 5th school day after it; "today"
    # is the test clock's Monday 7 September.
    assert (
        "Due by Monday 12 October 2026: within 5 school days of leaving, or of the start "
        "of the next term (KCSIE). That is 25 school days from today."
    ) in text
    assert "Cliff Road Academy" in text and "5 October 2026" in text
    record = await w.node.store.get_pupil(await w.actor(w.dsl), w.amara.id)
    assert record.destination == Destination(
        kind="school", urn=OTHER_URN, name="Cliff Road Academy"
    )
    # "Not known yet": recorded as unknown, and the page says the file waits.
    unknown = await site.post(
        path, {"csrf": csrf, "leaving": "17/7/2026", "destination": "unknown", "action": "save"}
    )
    text = _text(unknown)
    assert "The next school is not known yet" in text
    # Leaving on Friday 17 July, three school days before the summer term ends: in-year,
    # so due on the 5th school day after it, the 2nd of the autumn term; two days late now.
    assert "Due by Thursday 3 September 2026" in text and "Overdue by 2 school days." in text


async def test_a_teacher_and_a_head_cannot_mark_a_pupil_as_leaving(w: World) -> None:
    site = w.s.site
    for who in (w.teacher, w.head):
        home = await _as(w, who)
        page = await site.get(f"/pupils/{w.amara.upn}")
        assert "Mark as leaving" not in page.text and "Send the leaver" not in page.text
        assert (await site.get(f"/pupils/{w.amara.upn}/leaving")).status == 403
        refused = await site.post(
            f"/pupils/{w.amara.upn}/leaving",
            {
                "csrf": home.hidden("csrf"),
                "leaving": "5/10/2026",
                "destination": OTHER_URN,
                "action": "save",
            },
        )
        assert refused.status == 403
    assert (await w.node.store.get_pupil(await w.actor(w.dsl), w.amara.id)).leaving_date is None
    assert [e for e in w.node.events("store.pupil.update") if e.outcome == "refused"]


# ------------------------------------------------------------------ send


async def test_the_send_page_previews_what_goes_and_asks_a_fresh_code(w: World) -> None:
    site = w.s.site
    await _mark_leaving(w)
    await _as(w, w.dsl)
    page = await site.get(f"/pupils/{w.amara.upn}/send")
    assert page.status == 200 and page.title == "Send Amara Okafor's file - Handover"
    text = _text(page)
    # The recorded next school, by name and town, with its key fingerprint; no reason asked.
    entry = await w.s.directory.entry(OTHER_URN)
    assert "School Cliff Road Academy, Weston-super-Mare URN 199002" in text
    assert f'<code class="app-key">{entry.fingerprint}</code>' in page.text
    assert "A reason is needed" not in text and 'name="reason"' not in page.text
    # Leaving on 5 October; "today" is 7 September: sending now is possible, with a warning.
    assert (
        "Amara has not left yet (leaving date 5 October 2026). KCSIE says the file goes "
        "once the pupil has left."
    ) in text
    # Exactly what goes: counts, each record, the document, the restricted one flagged.
    assert "Concern: 2" in text and "Document: 1" in text
    assert "Concern: Bullying" in text and "Concern: Domestic abuse Restricted" in text
    assert "Document: strategy-minutes.txt (1 KB)" in text
    assert "1 record is in a restricted category" in text
    # No code, a wrong code: nothing is made.
    none = await _send(w, code="")
    assert none.status == 400 and 'href="#code">Enter the 6-digit code' in none.text
    wrong = await _send(w, code="000000")
    assert wrong.status == 400 and 'href="#code">That code is not right' in wrong.text
    assert await _packages(w) == []
    # The right code: sealed and queued, then the outbox says so in words.
    sent = await _send(w)
    assert sent.status == 200 and sent.url.split("#")[0].endswith("/outbox?done=sent")
    text = _text(sent)
    assert "The file has been sealed and queued." in text
    assert "Leaver's file: Amara Okafor to Cliff Road Academy Queued" in text
    assert "Waiting to be delivered to Cliff Road Academy. Next try:" in text
    assert "Sent by Dsl (DSL)" in text
    assert await _packages(w) == [(OTHER_URN, "queued")]
    (queued,) = [e for e in w.node.events("transfer.queued") if e.outcome == "ok"]
    assert queued.detail["via"] == "web"


async def test_a_reason_is_asked_and_kept_in_the_three_cases(w: World) -> None:
    site = w.s.site
    await _mark_leaving(w)
    await _as(w, w.dsl)
    # 1. Not the recorded next school: the page says why; without a reason nothing goes,
    # and no code is spent on it.
    page = await site.get(f"/pupils/{w.amara.upn}/send?to={ELM_PARK}")
    text = _text(page)
    assert "A reason is needed" in text
    assert (
        "Elm Park School is not Amara Okafor's recorded next school (the recorded "
        "destination is Cliff Road Academy)" in text
    )
    refused = await _send(w, to=ELM_PARK, code="")
    assert refused.status == 400 and 'href="#reason">Give the reason for sending it' in refused.text
    assert "#code" not in refused.text.split("govuk-error-summary__list")[1].split("</ul>")[0]
    assert await _packages(w) == []
    sent = await _send(w, to=ELM_PARK, reason="Her mother moved her to Elm Park last week.")
    assert sent.status == 200
    assert (
        "Reason given Her mother moved her to Elm Park last week. (needed because: not "
        "the pupil's recorded next school)"
    ) in _text(sent)
    event = [e for e in w.node.events("transfer.queued") if e.outcome == "ok"][-1]
    assert event.detail["reasons_needed"] == "not_destination"
    assert "Elm Park last week" not in str(event.detail)  # the audit keeps the codes only
    # 2. A second time to the same school, once it reached it.
    assert await _send(w) is not None
    assert await w.s.outbox.deliver_due() >= 1
    again = await site.get(f"/pupils/{w.amara.upn}/send")
    assert "Amara Okafor's file was already sent to Cliff Road Academy" in _text(again)
    refused = await _send(w)
    assert refused.status == 400 and 'href="#reason">' in refused.text
    sent = await _send(w, reason="Cliff Road lost their copy in a system failure.")
    assert "(needed because: sent to this school before)" in _text(sent)
    states = sorted(s for to, s in await _packages(w) if to == OTHER_URN)
    assert states == ["delivered", "queued"]
    # 3. An agency: a leaver's file goes to a school; no reason makes it go.
    page = await site.get(f"/pupils/{w.amara.upn}/send?to={MASH}")
    text = _text(page)
    assert (
        "Bristol MASH is not a school. A leaver's file goes only to the pupil's next "
        "school; to share information with an agency, make a referral" in text
    )
    assert "Send the file" not in text
    before = await _packages(w)
    refused = await _send(w, to=MASH, reason="They asked for it.")
    assert refused.status == 400 and 'href="#to">Bristol MASH is not a school' in refused.text
    assert await _packages(w) == before


async def test_the_outbox_follows_a_file_to_delivery_with_receipts_minisign_checks(
    w: World, tmp_path: Path
) -> None:
    site = w.s.site
    await _mark_leaving(w)
    await _as(w, w.dsl)
    await _send(w)
    assert await w.s.outbox.deliver_due() == 1
    page = await site.get("/outbox")
    text = _text(page)
    assert "Delivered" in text and "Delivered to Cliff Road Academy on" in text
    assert "Cancel it" not in text and "Send again" not in text
    (pid,) = re.findall(r'id="package-([0-9a-f-]{36})"', page.text)
    record = await w.s.outbox.get(await w.actor(w.dsl), pid)
    accepted = w.s.peer.receipt(pid, "accepted", manifest_sha256=record.manifest_sha256)
    await w.s.outbox.record_receipt(accepted)
    page = await site.get("/outbox")
    text = _text(page)
    assert "Accepted by Cliff Road Academy by Dee Ess (DSL) on" in text
    links = re.findall(r'href="(/outbox/[^"]+)" download', page.text)
    assert len(links) == 5  # two receipts and their signatures, and the school's key
    folder = tmp_path / "evidence"
    folder.mkdir()
    for link in links:
        async with site.client.get(link) as resp:
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
            name = re.search(r'filename="([^"]+)"', resp.headers["Content-Disposition"])
            assert name is not None
            (folder / name.group(1)).write_bytes(await resp.read())
    command = re.search(r"<code>minisign (-Vm [^<]+)</code>", page.text)
    assert command is not None
    minisign = shutil.which("minisign")
    assert minisign is not None
    done = await asyncio.create_subprocess_exec(
        minisign,
        *command.group(1).split(),
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    assert "Signature and comment signature verified" in out.decode()
    assert f"handover-receipt-v1 accepted {pid}" in out.decode()


async def test_cancel_and_resend_from_the_outbox(w: World) -> None:
    site = w.s.site
    await _mark_leaving(w)
    home = await _as(w, w.dsl)
    csrf = home.hidden("csrf")
    await _send(w)
    ((pid,),) = [re.findall(r'id="package-([0-9a-f-]{36})"', (await site.get("/outbox")).text)]
    cancelled = await site.post(f"/outbox/{pid}/cancel", {"csrf": csrf})
    assert cancelled.status == 200 and "The file has been cancelled." in _text(cancelled)
    assert "Cancelled on" in _text(cancelled) and await _packages(w) == [(OTHER_URN, "cancelled")]
    # Refused by the receiving node: failed, with why; then sent again.
    await _send(w)
    w.s.peer.refuse = (403, "this school does not take files from you")
    assert await w.s.outbox.deliver_due() == 1
    page = await site.get("/outbox")
    text = _text(page)
    assert "Failed" in text and "this school does not take files from you" in text
    new = [p for p in re.findall(r'id="package-([0-9a-f-]{36})"', page.text) if p != pid]
    (failed,) = new
    assert f'action="/outbox/{failed}/resend"' in page.text
    assert f'action="/outbox/{pid}/resend"' not in page.text  # a cancelled one is not resent
    w.s.peer.refuse = None
    resent = await site.post(f"/outbox/{failed}/resend", {"csrf": csrf})
    assert "The file has been queued again." in _text(resent)
    assert await w.s.outbox.deliver_due() == 1
    assert sorted(s for _, s in await _packages(w)) == ["cancelled", "delivered"]
    # Nothing else: a delivered file cannot be cancelled, nor a form without the token sent.
    late = await site.post(f"/outbox/{failed}/cancel", {"csrf": csrf})
    assert late.status == 409 and "it cannot be cancelled" in late.text
    forged = await site.post(f"/outbox/{failed}/resend", {"csrf": "nonsense"})
    assert forged.status == 403


async def test_a_teacher_is_refused_every_sending_address(w: World) -> None:
    site = w.s.site
    await _mark_leaving(w)
    await _as(w, w.dsl)
    assert 'href="/outbox"' in (await site.get("/")).text
    await _send(w)
    await w.s.outbox.deliver_due()
    page = await site.get("/outbox")
    (pid,) = re.findall(r'id="package-([0-9a-f-]{36})"', page.text)
    receipt = re.findall(r'href="(/outbox/[^"]+\.json)" download', page.text)[0]
    upn = w.amara.upn
    for who in (w.teacher, w.head, w.admin):
        home = await _as(w, who)
        assert 'href="/outbox"' not in home.text
        csrf = home.hidden("csrf")
        gets = [
            f"/pupils/{upn}/send",
            f"/pupils/{upn}/send?to={OTHER_URN}",
            "/outbox",
            receipt,
            receipt + ".minisig",
            f"/outbox/{pid}/receiver.pub",
        ]
        if who is not w.admin:  # the administrator keeps pupils' details (pupil.manage)
            gets.append(f"/pupils/{upn}/leaving")
        for path in gets:
            got = await site.get(path)
            assert got.status == 403, (who.username, path, got.status)
            assert "You cannot do this" in got.text and "Cliff Road" not in got.text
        posts = [
            (f"/pupils/{upn}/send", {"to": OTHER_URN, "code": "123456"}),
            (f"/outbox/{pid}/cancel", {}),
            (f"/outbox/{pid}/resend", {}),
        ]
        for path, data in posts:
            got = await site.post(path, {"csrf": csrf, **data})
            assert got.status == 403, (who.username, path, got.status)
    assert await _packages(w) == [(OTHER_URN, "delivered")]
    refusals = [
        e
        for e in w.node.audit.events
        if e.outcome == "refused" and e.action.startswith("transfer.")
    ]
    assert {e.action for e in refusals} >= {
        "transfer.read",
        "transfer.cancelled",
        "transfer.resent",
    }


async def test_the_same_send_twice_at_once_makes_one_package(w: World) -> None:
    """A double click without JavaScript, or two tabs: the form's code is accepted once, so
    one file is made; the other request is refused, by the code's message, or (when the
    first had already started the file) by "a file is already waiting" (its draft is found
    first) or the rule that a second sending needs a reason (it was queued)."""
    site = w.s.site
    await _mark_leaving(w)
    await _as(w, w.dsl)
    path = f"/pupils/{w.amara.upn}/send"
    form = await site.get(path)
    data = {"csrf": form.hidden("csrf"), "to": OTHER_URN, "code": w.code(w.dsl)}
    pages = await asyncio.gather(site.post(path, data), site.post(path, data))
    assert sorted(p.status for p in pages) == [200, 400], [p.status for p in pages]
    refused = next(p for p in pages if p.status == 400)
    assert (
        'href="#code">That code is not right, or it has been used already' in refused.text
        or 'href="#to">A file for this pupil is already waiting to go to' in refused.text
        or 'href="#reason">' in refused.text
    ), refused.text
    assert await _packages(w) == [(OTHER_URN, "queued")]


async def test_the_outbox_says_each_state_in_words(w: World) -> None:
    site = w.s.site
    await _mark_leaving(w)
    await _as(w, w.dsl)
    await _send(w)
    # Taken by a delivery sweep: "Sending", and it cannot be cancelled meanwhile.
    (pid,) = await w.s.outbox.claim(1)
    text = _text(await site.get("/outbox"))
    assert "Sending Being sent to Cliff Road Academy now." in text and "Cancel it" not in text
    w.node.clock.advance(seconds=300)  # that sweep's process died: its lease runs out
    assert await w.s.outbox.deliver_due() == 1
    viewed = w.s.peer.receipt(pid, "viewed")
    await w.s.outbox.record_receipt(viewed)
    text = _text(await site.get("/outbox"))
    assert "Opened Opened at Cliff Road Academy by Dee Ess (DSL) on" in text
    assert "not accepted yet" in text
    rejected = w.s.peer.receipt(pid, "rejected", reason="Amara is not on our roll.")
    await w.s.outbox.record_receipt(rejected)
    text = _text(await site.get("/outbox"))
    assert "Rejected Rejected by Cliff Road Academy by Dee Ess (DSL) on" in text
    assert "Their reason: Amara is not on our roll." in text
    assert "Rejected by the receiving school" in text  # the step in the list


async def test_the_outbox_comes_in_pages_and_by_pupil(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transfer.web import outbox

    site = w.s.site
    await _mark_leaving(w)
    await _as(w, w.dsl)
    await _send(w)
    await _send(w, to=ELM_PARK, reason="Her mother moved her to Elm Park last week.")
    monkeypatch.setattr(outbox, "OUTBOX_PAGE", 1)
    first = await site.get("/outbox")
    assert "Page 1 of 2 (2 files in all)" in _text(first) and "to Elm Park School" in first.text
    assert 'href="/outbox?page=2" rel="next"' in first.text
    second = await site.get("/outbox?page=2")
    assert "to Cliff Road Academy" in second.text and "to Elm Park School" not in second.text
    assert (await site.get("/outbox?page=nonsense")).status == 200
    mine = await site.get(f"/outbox?pupil={w.amara.upn}")
    assert "Files sent from Harbourside Primary about Amara Okafor" in _text(mine)
    assert f'href="/outbox?pupil={w.amara.upn}&amp;page=2"' in mine.text
    assert "Nothing has been sent yet" in (await site.get("/outbox?pupil=nonsense")).text


async def test_send_and_leaving_forms_sent_after_the_session_expired_are_kept(w: World) -> None:
    """The reason typed (never the code) and the leaving date come back after signing in
    again; nothing was sent or saved."""
    site, node = w.s.site, w.node
    await _mark_leaving(w)
    for path, fields, shown in (
        (
            f"/pupils/{w.amara.upn}/send",
            {"to": ELM_PARK, "reason": "Moved to Elm Park.", "code": "123456"},
            ("Send Amara Okafor's file", "Moved to Elm Park.</textarea>"),
        ),
        (
            f"/pupils/{w.amara.upn}/leaving",
            {"leaving": "9/10/2026", "destination": ELM_PARK, "action": "save"},
            ("Mark Amara Okafor as leaving", 'value="9/10/2026"'),
        ),
    ):
        await _as(w, w.dsl)
        form = await site.get(path)
        node.clock.advance(minutes=16)
        page = await site.post(
            path, {"csrf": form.hidden("csrf"), "form_owner": form.hidden("form_owner"), **fields}
        )
        assert "What you had typed has been kept" in page.text
        back = await site.post(
            "/sign-in",
            {
                "csrf": page.hidden("csrf"),
                "org": URN,
                "username": "dsl",
                "password": w.dsl.password,
                "code": w.code(w.dsl),
                "kept_form": page.hidden("kept_form"),
            },
        )
        assert back.title == f"{shown[0]} - Handover" and shown[1] in back.text
        assert "What you typed has been kept" in back.text and "123456" not in back.text
    assert await _packages(w) == []
    record = await node.store.get_pupil(await w.actor(w.dsl), w.amara.id)
    assert record.leaving_date == date(2026, 10, 5)


async def test_enter_in_a_text_field_saves_the_leaving_form(w: World) -> None:
    """A browser's Enter in a text field presses the form's first submit button: Save."""
    await _as(w, w.dsl)
    form = await w.s.site.get(f"/pupils/{w.amara.upn}/leaving")
    inside = form.text.split(f'action="/pupils/{w.amara.upn}/leaving"', 1)[1]
    first = re.search(r"<button[^>]*>", inside)
    assert first is not None
    assert 'name="action"' in first.group(0) and 'value="save"' in first.group(0)
    assert 'tabindex="-1"' in first.group(0)  # out of the tab order: the visible Save is there


async def test_the_pupil_page_names_the_next_school_from_the_directory(w: World) -> None:
    """A CTF records only the next school's URN: the pupil page names it from the signed
    directory, and says plainly when the directory does not list it."""
    store = w.node.store
    admin = await w.actor(w.admin)
    await _as(w, w.dsl)
    await store.update_pupil(
        admin, w.amara.id, PupilChanges(destination=Destination(kind="school", urn=OTHER_URN))
    )
    text = _text(await w.s.site.get(f"/pupils/{w.amara.upn}"))
    assert re.search(rf"Next school\s+Cliff Road Academy, [A-Za-z-]+ \(URN {OTHER_URN}\)", text)
    await store.update_pupil(
        admin, w.amara.id, PupilChanges(destination=Destination(kind="school", urn="999999"))
    )
    text = _text(await w.s.site.get(f"/pupils/{w.amara.upn}"))
    assert "URN 999999 (not in the signed directory)" in text
