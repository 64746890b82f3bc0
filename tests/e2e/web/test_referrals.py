"""Referrals in the web app, in-process on each engine (aiohttp's TestServer over a test
node with a directory of agencies, the real Referrals service and pickup portal): each
agency's form with every problem at its field and no draft made, a draft resumed,
redacted and discarded, sending with a step-up code, the outcome recorded, the LADO
deadline shown, and a teacher refused on every referral page by its address."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from keys.keyfiles import KeyFiles
from keys.sealing import KekProtection
from receivers.portal import PickupPortal, PortalSettings
from schemas.records import NewConcern, NewPupil, PupilRecord
from schemas.referrals import LadoReferral, MashReferral, PoliceReferral
from tests.support.referrals import add_agency
from tests.support.web import WEB_KEY, Page, Site, web_config
from tests.unit.auth.support import KEK, URN, Person, open_node
from transfer.api import create_app
from transfer.auth import CHEAPEST
from transfer.config import Config
from transfer.directory.service import Directory
from transfer.exchange.outbox import Outbox
from transfer.referrals.reading import readable_referral
from transfer.referrals.service import Referrals
from transfer.store.permissions import Role
from transfer.transport.http import PeerClient
from transfer.web import WebServices
from transfer.web.referral_forms import row_counts

UPN = "H801200001001"
ACCOUNT = "Amara said Kai Smith hit her at the bus stop."


@dataclass
class World:
    site: Site
    referrals: Referrals
    dsl: Person
    teacher: Person
    amara: PupilRecord
    concern_id: str
    exports: Path

    def text(self, page: Page) -> str:
        return html.unescape(page.text)

    async def drafts(self) -> list[str]:
        actor = await self.site.node.store.actor_for(self.dsl.staff.id)
        return [r.id for r in await self.referrals.list(actor)]


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    from aiohttp.test_utils import TestClient, TestServer

    async with open_node(db_url, tmp_path / "data") as node:
        keys = KeyFiles.for_data_dir(node.data_dir, KekProtection(KEK))
        await keys.create(URN)
        node.clock.now = datetime.now(UTC) + timedelta(minutes=1)
        directory = Directory(node.store, keys=keys)
        await add_agency(
            directory, "mash-bristol", "Bristol MASH", "social_care", email="mash@bristol.example"
        )
        await add_agency(directory, "lado-bristol", "Bristol LADO", "lado")
        await add_agency(
            directory,
            "police-avon",
            "Avon and Somerset Police",
            "police",
            endpoint="https://127.0.0.1:9",
        )
        referrals = Referrals(node.store, keys, directory)
        portal = PickupPortal(
            node.store,
            keys,
            KEK,
            base_url="http://unset.invalid",
            acknowledgements=referrals,
            clock=node.clock,
            settings=PortalSettings(passcode_cost=CHEAPEST),
        )
        config = web_config()
        node.accounts.security = config.security
        peer = PeerClient(keys=keys, directory=directory, config=Config())
        outbox = Outbox(
            store=node.store,
            keys=keys,
            directory=directory,
            client=peer,
            config=config,
            data_dir=node.data_dir,
        )
        app = create_app(
            store=node.store,
            accounts=node.accounts,
            audit=node.audit,
            config=config,
            exports_dir=tmp_path / "exports",
            referrals=referrals,
            portal=portal,
            outbox=outbox,
            web_pages=WebServices(
                store=node.store,
                accounts=node.accounts,
                config=config,
                audit=node.audit,
                web_key=WEB_KEY,
            ),
        )
        dsl = await node.person("dsl", [Role.DSL])
        teacher = await node.person("teacher", [Role.STAFF])
        admin = await node.person("admin", [Role.ADMINISTRATOR])
        amara = await node.store.create_pupil(
            await node.store.actor_for(admin.staff.id),
            NewPupil(
                upn=UPN,
                surname="Okafor",
                forename="Amara",
                dob=date(2014, 11, 3),
                sex="F",
                year_group="6",
            ),
        )
        concern = await node.store.record_concern(
            await node.store.actor_for(dsl.staff.id),
            NewConcern(
                pupil_ids=(amara.id,),
                category="child_protection",
                happened_at=node.clock.now - timedelta(days=2),
                account=ACCOUNT,
            ),
        )
        try:
            async with TestClient(TestServer(app)) as client:
                portal.base_url = str(client.make_url("")).rstrip("/")
                site = Site(node, client)
                yield World(site, referrals, dsl, teacher, amara, concern.id, tmp_path / "exports")
        finally:
            await peer.close()


async def _as(world: World, who: Person) -> Page:
    site = world.site
    site.client.session.cookie_jar.clear()
    home = await site.sign_in(who)
    assert home.title == "Home - Handover", home.text[:300]
    return home


def _fields(page: Page) -> list[tuple[str, str]]:
    """The form's typed values as a browser would send them (text, textareas, checked)."""
    text = page.text
    out: list[tuple[str, str]] = []
    for tag in re.findall(r"<input\b[^>]*>", text):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if not name or 'type="hidden"' in tag:
            continue
        kind = re.search(r'type="([^"]+)"', tag)
        if kind and kind.group(1) in ("radio", "checkbox") and " checked" not in tag:
            continue
        out.append((name.group(1), html.unescape(value.group(1) if value else "")))
    for name, body in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', text, re.S):
        out.append((name, html.unescape(body.strip())))
    return out


def _with(base: list[tuple[str, str]], **typed: str | list[str]) -> list[tuple[str, str]]:
    """``base`` with some fields replaced (``child__address`` is ``child.address``)."""
    names = {k.replace("__", "."): v for k, v in typed.items()}
    out = [(k, v) for k, v in base if k not in names]
    for k, v in names.items():
        out += [(k, x) for x in v] if isinstance(v, list) else [(k, v)]
    return out


def _summary_links(page: Page) -> list[str]:
    box = re.search(r'govuk-error-summary__list">(.*?)</ul>', page.text, re.S)
    assert box, "no error summary"
    return re.findall(r'href="#([^"]+)"', box.group(1))


def _field_error(page: Page, fid: str) -> str:
    found = re.search(
        rf'id="{re.escape(fid)}-error"[^>]*>\s*<span class="govuk-visually-hidden">'
        r"Error:</span>\s*(.*?)</p>",
        page.text,
        re.S,
    )
    assert found, f"no error at {fid}"
    return html.unescape(found.group(1)).strip()


async def _form(world: World, agency: str) -> Page:
    page = await world.site.get(f"/pupils/{UPN}/referrals/new?agency={agency}")
    assert page.status == 200, page.text[:500]
    return page


async def _post(
    world: World,
    page: Page,
    fields: list[tuple[str, str]],
    path: str = f"/pupils/{UPN}/referrals/new",
) -> Page:
    data = [
        ("csrf", page.hidden("csrf")),
        ("form_owner", page.hidden("form_owner")),
        ("agency", page.hidden("agency")),
        *fields,
    ]
    return await world.site.post(path, data)


# ------------------------------------------------------------------ the forms


async def test_the_agency_is_chosen_by_name_and_the_form_is_prefilled(world: World) -> None:
    await _as(world, world.dsl)
    pupil = world.text(await world.site.get(f"/pupils/{UPN}"))
    assert "No referral has been made about this pupil" in pupil and "Make a referral" in pupil
    choose = await world.site.get(f"/pupils/{UPN}/referrals/new")
    assert choose.title == "Who are you referring to? - Handover"
    assert '<span class="govuk-caption-l">Referral about Amara Okafor, Year 6</span>' in choose.text
    shown = world.text(choose)
    for name in ("Bristol MASH", "Bristol LADO", "Avon and Somerset Police"):
        assert name in shown
    nothing = await world.site.get(f"/pupils/{UPN}/referrals/new?agency=")
    assert nothing.status == 400 and _summary_links(nothing) == ["agency"]
    page = await _form(world, "mash-bristol")
    values = dict(_fields(page))
    assert values["child.forename"] == "Amara" and values["child.surname"] == "Okafor"
    assert values["child.dob"] == "3/11/2014" and values["child.upn"] == UPN
    assert values["child.sex"] == "female" and values["child.school"] == "Harbourside Primary"
    assert values["referrer.name"] == "Dsl" and values["referrer.agency"] == "Harbourside Primary"
    lado = dict(_fields(await _form(world, "lado-bristol")))
    assert lado["children.0.forename"] == "Amara" and lado["children.0.upn"] == UPN
    assert lado["employer.organisation"] == "Harbourside Primary"


@pytest.mark.parametrize(
    ("agency", "expected"),
    [
        (
            "mash-bristol",
            [
                "request",
                "reason",
                "harm_types",
                "impact_on_child",
                "risk_rating",
                "risk_reasons",
                "child-address",
                "carers-0-name",
                "carers-0-relationship",
                "consent-parents_aware",
                "consent-consent_given",
                "referrer-phone",
            ],
        ),
        (
            "lado-bristol",
            [
                "allegation-category",
                "allegation-description",
                "allegation-happened_on",
                "allegation-place",
                "allegation-known_at",
                "allegation-made_by",
                "allegation-made_by_relationship",
                "criteria",
                "adult-forename",
                "adult-surname",
                "adult-sex",
                "adult-role",
                "adult-employment_basis",
                "employer-head_teacher",
                "actions_so_far",
                "consent-parents_aware",
                "consent-consent_given",
                "referrer-phone",
            ],
        ),
        (
            "police-avon",
            [
                "immediate_risk",
                "what_happened",
                "happened_at",
                "place",
                "child-address",
                "consent-parents_aware",
                "consent-consent_given",
                "referrer-phone",
            ],
        ),
    ],
)
async def test_every_problem_of_each_agencys_form_is_shown_at_its_field_and_no_draft_is_made(
    world: World, agency: str, expected: list[str]
) -> None:
    await _as(world, world.dsl)
    page = await _form(world, agency)
    answer = await _post(world, page, _fields(page))
    assert answer.status == 400 and answer.title.startswith("Error: Referral to ")
    assert _summary_links(answer) == expected
    for fid in expected:
        message = _field_error(answer, fid)
        assert message.startswith(("Enter", "Select", "Say", "Explain")), (fid, message)
    # What was typed is kept (the prefilled child), and nothing was saved.
    assert 'value="Amara"' in answer.text
    assert await world.drafts() == []
    assert not [e for e in world.site.node.events("referral.drafted") if e.outcome == "ok"]


async def test_malformed_answers_and_the_consent_rules_are_said_at_their_fields(
    world: World,
) -> None:
    await _as(world, world.dsl)
    page = await _form(world, "police-avon")
    typed = _with(
        _fields(page),
        child__upn="X12",
        child__nhs_number="12345",
        child__dob="31/2/2015",
        happened_at__date="yesterday",
        happened_at__time="25:00",
        immediate_risk="no",
        what_happened="Images were shared.",
        place="Online",
        child__address="1 Quay Street",
        consent__parents_aware="no",
        consent__consent_given="no",
        consent__no_consent_reason="other",
        referrer__phone="0117 496 0000",
    )
    answer = await _post(world, page, typed)
    assert answer.status == 400
    assert _summary_links(answer) == [
        "happened_at",
        "child-dob",
        "child-upn",
        "child-nhs_number",
        "consent-explanation",
    ]
    assert "real date" in _field_error(answer, "happened_at")
    assert "real date" in _field_error(answer, "child-dob")
    assert _field_error(answer, "child-upn").startswith("A UPN is")
    assert _field_error(answer, "child-nhs_number") == "An NHS number is 10 digits"
    assert _field_error(answer, "consent-explanation").startswith("Explain why")
    agreed = await _post(
        world,
        page,
        _with(
            typed,
            consent__parents_aware="no",
            consent__consent_given="yes",
            consent__no_consent_reason=[],
        ),
    )
    assert "cannot have agreed" in _field_error(agreed, "consent-consent_given")
    assert await world.drafts() == []


def _mash(page: Page) -> list[tuple[str, str]]:
    return _with(
        _fields(page),
        request="safeguarding",
        reason="Bruising seen on her arm.",
        harm_types=["physical", "emotional"],
        impact_on_child="Withdrawn in class.",
        risk_rating="high",
        risk_reasons="Unexplained injury.",
        child__address="1 Quay Street",
        carers__0__name="Grace Okafor",
        carers__0__relationship="mother",
        carers__0__parental_responsibility="yes",
        consent__parents_aware="yes",
        consent__consent_given="yes",
        referrer__phone="0117 496 0000",
    )


async def test_a_draft_is_made_whole_resumed_redacted_and_discarded(world: World) -> None:
    site = world.site
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    made = await _post(world, page, _mash(page))
    assert made.status == 200 and made.title == "Which entries go with the referral? - Handover"
    [rid] = await world.drafts()
    assert made.url.endswith(f"/referrals/{rid}/entries")
    assert "Nothing is chosen yet" in made.text  # the warning
    # The draft's page: a task list to finish it; the pupil page lists it.
    draft = world.text(await site.get(f"/referrals/{rid}"))
    assert "Finish the draft" in draft and "Nothing chosen" in draft
    assert '<strong class="govuk-tag govuk-tag--grey">Draft</strong>' in draft  # markup, as such
    assert f'<a class="govuk-link" href="/pupils/{UPN}">Amara Okafor, Year 6</a>' in draft
    assert "by Dsl (DSL)" in draft
    pupil = world.text(await site.get(f"/pupils/{UPN}"))
    assert "Children's social care (MASH) referral to Bristol MASH" in pupil
    # Choose the concern, then hide a name: a misspelt one is refused at the field.
    entries = await site.get(f"/referrals/{rid}/entries")
    value = re.search(r'name="entry" type="checkbox" value="([^"]+)"', entries.text)
    assert value and value.group(1) == f"concern:{world.concern_id}"
    redact = await site.post(
        f"/referrals/{rid}/entries", {"csrf": entries.hidden("csrf"), "entry": value.group(1)}
    )
    assert redact.title == "Hide names and other details - Handover"
    assert ACCOUNT in world.text(redact)
    wrong = await site.post(
        f"/referrals/{rid}/redact", {"csrf": redact.hidden("csrf"), "text": "kai smith"}
    )
    assert wrong.status == 400 and _summary_links(wrong) == ["text"]
    assert "check the spelling" in _field_error(wrong, "text")
    hidden = await site.post(
        f"/referrals/{rid}/redact", {"csrf": redact.hidden("csrf"), "text": "Kai Smith"}
    )
    shown = world.text(hidden)
    assert "Amara said [redacted] hit her at the bus stop." in shown
    assert "“Kai Smith”" in shown
    # The check page shows the form as the agency reads it and what goes, redacted.
    check = world.text(await site.get(f"/referrals/{rid}/check"))
    assert "Physical abuse\nEmotional abuse" in check and "3 November 2014" in check
    assert "[redacted] hit her" in check and ACCOUNT not in check
    # Shown again, then the form changed (every problem at its field there too).
    mark = re.search(r"/redactions/([0-9a-f-]{36})/remove", hidden.text)
    assert mark
    again = await site.post(
        f"/referrals/{rid}/redactions/{mark.group(1)}/remove", {"csrf": redact.hidden("csrf")}
    )
    assert ACCOUNT in world.text(again)
    change = await site.get(f"/referrals/{rid}/form")
    assert dict(_fields(change))["reason"] == "Bruising seen on her arm."
    bad = await _post(world, change, _with(_fields(change), reason=""), f"/referrals/{rid}/form")
    assert bad.status == 400 and _summary_links(bad) == ["reason"]
    # Discarded: gone, and the pupil page says so.
    confirm = await site.get(f"/referrals/{rid}/discard")
    assert confirm.title == "Discard this draft referral? - Handover"
    gone = await site.post(f"/referrals/{rid}/discard", {"csrf": confirm.hidden("csrf")})
    assert gone.url.endswith(f"/pupils/{UPN}?done=discarded")
    assert "The draft referral has been discarded." in gone.text
    assert await world.drafts() == []
    assert (await site.get(f"/referrals/{rid}")).status == 404


async def test_sending_needs_a_code_and_the_outcome_closes_it(world: World) -> None:
    site = world.site
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    await _post(world, page, _mash(page))
    [rid] = await world.drafts()
    check = await site.get(f"/referrals/{rid}/check")
    assert "Nothing is chosen: the agency will get the form alone." in check.text
    routes = re.findall(r'name="route" type="radio" value="([a-z]+)"', check.text)
    assert routes == ["portal", "offline"]  # MASH has no node here
    # Nothing chosen and no confirmation, no code: each said at its field; still a draft.
    refused = await site.post(
        f"/referrals/{rid}/send", {"csrf": check.hidden("csrf"), "route": "offline"}
    )
    assert refused.status == 400 and _summary_links(refused) == ["form_only"]
    no_code = await site.post(
        f"/referrals/{rid}/send",
        {"csrf": check.hidden("csrf"), "route": "offline", "form_only": "yes", "code": "000000"},
    )
    assert no_code.status == 400 and _summary_links(no_code) == ["code"]
    world.site.node.next_step()
    code = world.dsl.code(world.site.node.clock.now)
    sent = await site.post(
        f"/referrals/{rid}/send",
        {"csrf": check.hidden("csrf"), "route": "offline", "form_only": "yes", "code": code},
    )
    assert sent.status == 200 and sent.title == "Referral sent - Handover", sent.text[:800]
    bundle = await site.client.get(f"/referrals/{rid}/bundle")
    assert bundle.status == 200 and bundle.headers["Content-Type"] == "application/zip"
    assert (await bundle.read())[:2] == b"PK"
    # Handed over, then acknowledged by telephone: each recorded on the referral's page.
    page_ = await site.get(f"/referrals/{rid}")
    assert "Download the offline bundle" in page_.text and "Record the hand-over" in page_.text
    empty = await site.post(f"/referrals/{rid}/handover", {"csrf": page_.hidden("csrf")})
    assert empty.status == 400 and _summary_links(empty) == ["to_whom", "how"]
    handed = await site.post(
        f"/referrals/{rid}/handover",
        {"csrf": page_.hidden("csrf"), "to_whom": "MASH duty desk", "how": "by hand"},
    )
    assert "The hand-over has been recorded." in handed.text
    assert "Picked up" in handed.text and "Record the hand-over" not in handed.text
    empty = await site.post(f"/referrals/{rid}/acknowledgement", {"csrf": page_.hidden("csrf")})
    assert empty.status == 400 and _summary_links(empty) == ["ack_name", "reference"]
    acked = await site.post(
        f"/referrals/{rid}/acknowledgement",
        {"csrf": page_.hidden("csrf"), "ack_name": "Jo Reed", "reference": "MASH-77"},
    )
    shown = world.text(acked)
    assert "The agency's acknowledgement has been recorded." in shown
    assert "Acknowledged" in shown and "MASH-77" in shown and "Jo Reed" in shown
    assert "Record the outcome" in shown
    form = await site.get(f"/referrals/{rid}/outcome")
    empty = await site.post(f"/referrals/{rid}/outcome", {"csrf": form.hidden("csrf")})
    assert empty.status == 400 and _summary_links(empty) == ["rag", "decision"]
    done = await site.post(
        f"/referrals/{rid}/outcome",
        {
            "csrf": form.hidden("csrf"),
            "rag": "amber",
            "decision": "section_17",
            "notes": "Family support offered.",
        },
    )
    shown = world.text(done)
    assert "The outcome has been recorded." in shown and "Outcome recorded" in shown
    assert "Child in need (section 17)" in shown and "Amber" in shown
    listing = world.text(await site.get("/referrals"))
    assert "Amara Okafor" in listing and "Outcome recorded" in listing


async def test_the_lado_deadline_is_shown_on_the_referral_the_list_and_the_pupil_page(
    world: World,
) -> None:
    site = world.site
    await _as(world, world.dsl)
    page = await _form(world, "lado-bristol")
    known = world.site.node.clock.now - timedelta(days=10)
    typed = _with(
        _fields(page),
        allegation__category="physical",
        allegation__description="Grabbed her arm.",
        allegation__happened_on=f"{known.day}/{known.month}/{known.year}",
        allegation__place="Classroom 4",
        allegation__known_at__date=f"{known.day}/{known.month}/{known.year}",
        allegation__known_at__time="10:00",
        allegation__made_by="Amara Okafor",
        allegation__made_by_relationship="the pupil",
        criteria=["harmed_child"],
        adult__forename="Sam",
        adult__surname="Teacher",
        adult__sex="male",
        adult__role="Class teacher",
        adult__employment_basis="permanent",
        employer__head_teacher="Mr Head",
        actions_so_far="Sent home pending advice.",
        consent__parents_aware="yes",
        consent__consent_given="yes",
        referrer__phone="0117 496 0000",
    )
    made = await _post(world, page, typed)
    assert made.status == 200, made.text[:1000]
    [rid] = await world.drafts()
    record = await world.referrals.get(await site.node.store.actor_for(world.dsl.staff.id), rid)
    assert record.due_on is not None and record.due_on < known.date() + timedelta(days=5)
    for path in (f"/referrals/{rid}", "/referrals", f"/pupils/{UPN}"):
        text = world.text(await site.get(path))
        assert "Overdue" in text, path
    detail = world.text(await site.get(f"/referrals/{rid}"))
    assert f"had to be sent by the end of {record.due_on:%A} " in detail


async def test_a_teacher_is_refused_every_referral_page(world: World) -> None:
    site = world.site
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    await _post(world, page, _mash(page))
    [rid] = await world.drafts()
    home = await _as(world, world.teacher)
    assert 'href="/referrals"' not in home.text
    csrf = home.hidden("csrf")
    gets = [
        "/referrals",
        f"/pupils/{UPN}/referrals/new",
        f"/pupils/{UPN}/referrals/new?agency=mash-bristol",
        f"/referrals/{rid}",
        f"/referrals/{rid}/form",
        f"/referrals/{rid}/entries",
        f"/referrals/{rid}/redact",
        f"/referrals/{rid}/check",
        f"/referrals/{rid}/bundle",
        f"/referrals/{rid}/discard",
        f"/referrals/{rid}/outcome",
    ]
    for path in gets:
        answer = await site.get(path)
        assert answer.status == 403, (path, answer.status)
        assert answer.title == "You cannot do this - Handover"
    posts = [
        f"/pupils/{UPN}/referrals/new",
        f"/referrals/{rid}/form",
        f"/referrals/{rid}/entries",
        f"/referrals/{rid}/redact",
        f"/referrals/{rid}/redactions/{rid}/remove",
        f"/referrals/{rid}/send",
        f"/referrals/{rid}/discard",
        f"/referrals/{rid}/outcome",
    ]
    for path in posts:
        answer = await site.post(
            path, {"csrf": csrf, "agency": "mash-bristol", "text": "Kai Smith", "route": "offline"}
        )
        assert answer.status == 403, (path, answer.status)
    # The draft is untouched, and the refusals are in the audit log.
    assert await world.drafts() == [rid]
    assert [
        e
        for e in site.node.audit.events
        if e.action.startswith("referral.") and e.outcome == "refused"
    ]


async def test_a_referral_form_sent_after_the_session_expired_is_kept(world: World) -> None:
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    world.site.node.clock.advance(minutes=16)
    typed = _with(_fields(page), reason="Bruising seen on her arm.", risk_rating="high")
    answer = await _post(world, page, typed)
    assert answer.title == "Sign in to Handover - Handover"
    assert "What you had typed has been kept" in answer.text
    back = await world.site.post(
        "/sign-in",
        {
            "csrf": answer.hidden("csrf"),
            "org": URN,
            "username": "dsl",
            "password": world.dsl.password,
            "code": world.dsl.code(world.site.node.clock.now),
            "kept_form": answer.hidden("kept_form"),
        },
    )
    assert back.title == "Referral to Bristol MASH - Handover", back.title
    assert "What you typed has been kept" in back.text
    values = dict(_fields(back))
    assert values["reason"] == "Bruising seen on her arm." and values["risk_rating"] == "high"
    assert values["child.forename"] == "Amara"
    assert await world.drafts() == []


async def test_a_changed_draft_form_sent_after_the_session_expired_is_kept(
    world: World,
) -> None:
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    await _post(world, page, _mash(page))
    [rid] = await world.drafts()
    change = await world.site.get(f"/referrals/{rid}/form")
    world.site.node.clock.advance(minutes=16)
    typed = _with(_fields(change), reason="She said it happened again.")
    answer = await _post(world, change, typed, f"/referrals/{rid}/form")
    assert answer.title == "Sign in to Handover - Handover"
    back = await world.site.post(
        "/sign-in",
        {
            "csrf": answer.hidden("csrf"),
            "org": URN,
            "username": "dsl",
            "password": world.dsl.password,
            "code": world.dsl.code(world.site.node.clock.now),
            "kept_form": answer.hidden("kept_form"),
        },
    )
    assert back.title == "Referral to Bristol MASH - Handover", back.title
    assert f'action="/referrals/{rid}/form"' in back.text
    assert dict(_fields(back))["reason"] == "She said it happened again."
    actor = await world.site.node.store.actor_for(world.dsl.staff.id)
    record = await world.referrals.get(actor, rid)
    assert isinstance(record.form, MashReferral)
    assert record.form.reason == "Bruising seen on her arm."  # nothing saved yet


async def test_a_police_referral_goes_to_the_forces_node_by_the_outbox(world: World) -> None:
    site = world.site
    await _as(world, world.dsl)
    page = await _form(world, "police-avon")
    typed = _with(
        _fields(page),
        immediate_risk="no",
        what_happened="Images were shared online.",
        happened_at__date="1/12/2026",
        happened_at__time="19:30",
        place="Online",
        child__address="1 Quay Street",
        consent__parents_aware="no",
        consent__consent_given="no",
        consent__no_consent_reason="greater_risk",
        referrer__phone="0117 496 0000",
    )
    made = await _post(world, page, typed)
    assert made.status == 200, made.text[:800]
    [rid] = await world.drafts()
    check = await site.get(f"/referrals/{rid}/check")
    assert re.findall(r'name="route" type="radio" value="([a-z]+)"', check.text) == [
        "node",
        "offline",
    ]
    assert "goes without the parents' or carers' consent" in world.text(check)
    world.site.node.next_step()
    sent = await site.post(
        f"/referrals/{rid}/send",
        {
            "csrf": check.hidden("csrf"),
            "route": "node",
            "form_only": "yes",
            "code": world.dsl.code(world.site.node.clock.now),
        },
    )
    assert sent.title == "Referral sent - Handover", sent.text[:800]
    assert "It is in the outbox" in world.text(sent)
    page_ = world.text(await site.get(f"/referrals/{rid}"))
    assert "To the agency's Handover node" in page_ and "Sent without the parents'" in page_
    assert "Record their acknowledgement" in page_


# ------------------------------------------------------------------ every field


def _row_counts(page: Page) -> dict[str, str]:
    return dict(re.findall(r'name="rows\.([a-z_]+)" value="(\d+)"', page.text))


async def _add(
    world: World,
    page: Page,
    fields: list[tuple[str, str]],
    part: str,
    path: str = f"/pupils/{UPN}/referrals/new",
) -> Page:
    """Press "Add another" for ``part`` with the page's rows and what is typed."""
    rows = [(f"rows.{k}", v) for k, v in _row_counts(page).items()]
    return await _post(world, page, [*rows, *fields, ("add", part)], path)


async def test_every_mash_field_round_trips_into_the_sealed_draft(world: World) -> None:
    """The child's ethnicity, religion, GP, disability and interpreter; a third carer (by
    "Add another"), household members, significant adults and disclosures: typed on the
    page, sealed in the draft, and given back when the form is changed."""
    site = world.site
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    assert _row_counts(page) == {
        "disclosures": "1",
        "carers": "2",
        "household": "1",
        "significant_adults": "1",
    }
    assert "Add another parent or carer" in page.text and 'id="carers-1"' in page.text
    typed = _with(
        _mash(page),
        child__ethnicity="Black British - African",
        child__religion="Christian",
        child__gp="Quay Surgery, 2 Dock Road",
        child__disability="Hearing impairment",
        child__interpreter_needed="yes",
        carers__1__name="Ade Okafor",
        carers__1__relationship="father",
        carers__1__dob="2/2/1985",
        carers__1__alleged_perpetrator="yes",
        household__0__name="Tomi Okafor",
        household__0__relationship="brother",
        household__0__dob="5/6/2010",
        significant_adults__0__name="Rita Bell",
        significant_adults__0__relationship="aunt",
        significant_adults__0__phone="0117 496 0101",
        disclosures__0__by="Amara",
        disclosures__0__to="Ms Reid, class teacher",
        disclosures__0__at__date="1/12/2026",
        disclosures__0__at__time="09:15",
        disclosures__0__summary="She said her dad grabbed her arm.",
    )
    more = await _add(world, page, typed, "carers")
    assert more.status == 200 and "There is a problem" not in more.text
    assert _row_counts(more)["carers"] == "3" and 'id="carers-2"' in more.text
    assert await world.drafts() == []
    third = _with(
        _fields(more),
        carers__2__name="Joy Adeyemi",
        carers__2__relationship="foster carer",
        carers__2__parental_responsibility="no",
    )
    made = await _post(world, more, [("rows.carers", "3"), *third])
    assert made.status == 200, made.text[:800]
    [rid] = await world.drafts()
    actor = await site.node.store.actor_for(world.dsl.staff.id)
    form = (await world.referrals.get(actor, rid)).form
    assert isinstance(form, MashReferral)
    child = form.child
    assert (child.ethnicity, child.religion, child.gp, child.disability) == (
        "Black British - African",
        "Christian",
        "Quay Surgery, 2 Dock Road",
        "Hearing impairment",
    )
    assert child.interpreter_needed is True
    assert [(c.name, c.relationship) for c in form.carers] == [
        ("Grace Okafor", "mother"),
        ("Ade Okafor", "father"),
        ("Joy Adeyemi", "foster carer"),
    ]
    assert form.carers[1].dob == date(1985, 2, 2) and form.carers[1].alleged_perpetrator
    assert form.carers[0].parental_responsibility and not form.carers[2].parental_responsibility
    assert [(p.name, p.relationship, p.dob) for p in form.household] == [
        ("Tomi Okafor", "brother", date(2010, 6, 5))
    ]
    assert [(p.name, p.phone) for p in form.significant_adults] == [("Rita Bell", "0117 496 0101")]
    [said] = form.disclosures
    assert (said.by, said.to, said.summary) == (
        "Amara",
        "Ms Reid, class teacher",
        "She said her dad grabbed her arm.",
    )
    assert said.at == datetime(2026, 12, 1, 9, 15, tzinfo=UTC)  # GMT in December
    # Changing the draft gives every answer back, with a row for each carer.
    change = await site.get(f"/referrals/{rid}/form")
    back = dict(_fields(change))
    assert _row_counts(change)["carers"] == "3"
    assert (
        back["carers.2.name"] == "Joy Adeyemi" and back["child.gp"] == "Quay Surgery, 2 Dock Road"
    )
    assert back["disclosures.0.at.date"] == "1/12/2026" and back["disclosures.0.at.time"] == "09:15"
    assert back["child.interpreter_needed"] == "yes" and back["household.0.dob"] == "5/6/2010"


async def test_the_lado_adults_optional_details_round_trip(world: World) -> None:
    await _as(world, world.dsl)
    page = await _form(world, "lado-bristol")
    typed = _with(
        _fields(page),
        allegation__category="physical",
        allegation__description="Grabbed her.",
        allegation__happened_on="1/12/2026",
        allegation__place="Classroom 4",
        allegation__known_at__date="1/12/2026",
        allegation__known_at__time="10:00",
        allegation__made_by="Amara Okafor",
        allegation__made_by_relationship="the pupil",
        criteria=["harmed_child"],
        adult__forename="Sam",
        adult__surname="Teacher",
        adult__sex="male",
        adult__role="Class teacher",
        adult__employment_basis="permanent",
        adult__dob="3/4/1980",
        adult__ethnicity="White British",
        adult__address="9 Hill Road",
        adult__length_of_service="6 years",
        adult__previous_allegations="None known.",
        adult__other_contact_with_children="Coaches a junior football team.",
        employer__head_teacher="Mr Head",
        employer__hr_lead="Pat Jones",
        allegation__incidents="2",
        allegation__after_restraint="yes",
        children__1__forename="Leo",
        children__1__surname="Reed",
        children__1__dob="9/9/2014",
        actions_so_far="Sent home pending advice.",
        consent__parents_aware="yes",
        consent__consent_given="yes",
        referrer__phone="0117 496 0000",
    )
    made = await _post(world, page, [("rows.children", "2"), *typed])
    assert made.status == 200, made.text[:800]
    [rid] = await world.drafts()
    actor = await world.site.node.store.actor_for(world.dsl.staff.id)
    form = (await world.referrals.get(actor, rid)).form
    assert isinstance(form, LadoReferral)
    assert [(c.forename, c.upn) for c in form.children] == [("Amara", UPN), ("Leo", None)]
    assert form.allegation.incidents == 2 and form.allegation.after_restraint is True
    adult = form.adult
    assert (adult.dob, adult.ethnicity, adult.address, adult.length_of_service) == (
        date(1980, 4, 3),
        "White British",
        "9 Hill Road",
        "6 years",
    )
    assert adult.previous_allegations == "None known."
    assert adult.other_contact_with_children == "Coaches a junior football team."
    assert form.employer.hr_lead == "Pat Jones"
    back = dict(_fields(await world.site.get(f"/referrals/{rid}/form")))
    assert back["adult.dob"] == "3/4/1980" and back["employer.hr_lead"] == "Pat Jones"
    assert back["children.1.forename"] == "Leo" and back["allegation.incidents"] == "2"


async def test_the_police_forms_evidence_and_offender_round_trip(world: World) -> None:
    await _as(world, world.dsl)
    page = await _form(world, "police-avon")
    typed = _with(
        _fields(page),
        immediate_risk="no",
        what_happened="Images were shared online.",
        happened_at__date="1/12/2026",
        happened_at__time="19:30",
        place="Online",
        child__address="1 Quay Street",
        consent__parents_aware="yes",
        consent__consent_given="yes",
        referrer__phone="0117 496 0000",
        alleged_offender__name="Kai Smith",
        alleged_offender__dob="1/1/2005",
        alleged_offender__address="4 Mill Lane",
        evidence__0__description="Screenshots",
        evidence__0__kind="image",
        evidence__0__held_by="The DSL",
        evidence__1__kind="device",
    )
    refused = await _post(world, page, [("rows.evidence", "2"), *typed])
    assert refused.status == 400
    assert _summary_links(refused) == ["evidence-1-description", "evidence-1-held_by"]
    assert _field_error(refused, "evidence-1-description") == "Describe evidence 2"
    typed = _with(typed, evidence__1__description="Her phone", evidence__1__held_by="Mum")
    made = await _post(world, refused, [("rows.evidence", "2"), *typed])
    assert made.status == 200, made.text[:800]
    [rid] = await world.drafts()
    actor = await world.site.node.store.actor_for(world.dsl.staff.id)
    form = (await world.referrals.get(actor, rid)).form
    assert isinstance(form, PoliceReferral) and form.alleged_offender is not None
    assert (form.alleged_offender.dob, form.alleged_offender.address) == (
        date(2005, 1, 1),
        "4 Mill Lane",
    )
    assert [(e.description, e.kind, e.held_by) for e in form.evidence] == [
        ("Screenshots", "image", "The DSL"),
        ("Her phone", "device", "Mum"),
    ]


async def test_add_another_keeps_everything_typed_on_a_new_form_and_a_draft(
    world: World,
) -> None:
    site = world.site
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    typed = _with(
        _fields(page),
        reason="Bruising seen on her arm.",
        risk_rating="high",
        harm_types=["neglect"],
        household__0__name="Tomi Okafor",
        disclosures__0__at__date="1/12/2026",
    )
    answer = await _add(world, page, typed, "household")
    assert answer.status == 200 and answer.title == "Referral to Bristol MASH - Handover"
    assert "There is a problem" not in answer.text  # adding a row is not sending the form
    assert _row_counts(answer)["household"] == "2"
    assert 'id="household-1"' in answer.text and "Household member 2" in answer.text
    assert 'formaction="/pupils/H801200001001/referrals/new#household-2"' in answer.text
    kept = dict(_fields(answer))
    assert kept["reason"] == "Bruising seen on her arm." and kept["risk_rating"] == "high"
    assert kept["harm_types"] == "neglect" and kept["household.0.name"] == "Tomi Okafor"
    assert kept["disclosures.0.at.date"] == "1/12/2026" and kept["household.1.name"] == ""
    assert kept["child.forename"] == "Amara"
    assert await world.drafts() == []
    # On a draft's form too: a row added, nothing saved, nothing lost.
    await _post(world, page, _mash(page))
    [rid] = await world.drafts()
    change = await site.get(f"/referrals/{rid}/form")
    edited = _with(_fields(change), reason="She said it happened again.")
    again = await _add(world, change, edited, "significant_adults", f"/referrals/{rid}/form")
    assert again.status == 200 and _row_counts(again)["significant_adults"] == "2"
    assert dict(_fields(again))["reason"] == "She said it happened again."
    actor = await site.node.store.actor_for(world.dsl.staff.id)
    form = (await world.referrals.get(actor, rid)).form
    assert isinstance(form, MashReferral) and form.reason == "Bruising seen on her arm."


async def test_a_bad_value_in_a_repeated_row_is_shown_at_that_rows_field(world: World) -> None:
    """Rows left empty are left out of what is sent, yet each problem is said at the row on
    the page: the second disclosure (the first empty), the third carer, a household member's
    date; and a row with only a yes or no is no row."""
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    typed = _with(
        _mash(page),
        disclosures__1__by="Amara",
        disclosures__1__to="Ms Reid",
        disclosures__1__at__date="1/12/2026",
        disclosures__1__at__time="9:15",
        carers__2__relationship="grandmother",
        household__0__name="Tomi Okafor",
        household__0__relationship="brother",
        household__0__dob="31/2/2010",
        significant_adults__0__alleged_perpetrator="no",
        carers__1__phone="x" * 41,
    )
    answer = await _post(world, page, [("rows.disclosures", "2"), ("rows.carers", "3"), *typed])
    assert answer.status == 400
    assert _summary_links(answer) == [
        "disclosures-1-summary",
        "carers-1-name",
        "carers-1-relationship",
        "carers-1-phone",
        "carers-2-name",
        "household-0-dob",
    ]
    assert _field_error(answer, "disclosures-1-summary") == "Say what was said in disclosure 2"
    assert _field_error(answer, "carers-2-name") == "Enter the name of parent or carer 3"
    assert _field_error(answer, "carers-1-phone").startswith("Telephone number (optional): ")
    assert "real date" in _field_error(answer, "household-0-dob")
    kept = dict(_fields(answer))
    assert kept["carers.2.relationship"] == "grandmother" and kept["disclosures.1.by"] == "Amara"
    assert _row_counts(answer)["carers"] == "3"
    assert await world.drafts() == []


async def test_the_check_page_is_the_referral_as_the_agency_reads_it(world: World) -> None:
    """The check page shows readable_referral (the agency's pickup page's model) over what
    would be sealed: every section, group and row, the chosen entry redacted."""
    site = world.site
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    await _post(
        world,
        page,
        _with(_mash(page), household__0__name="Tomi Okafor", household__0__relationship="brother"),
    )
    [rid] = await world.drafts()
    entries = await site.get(f"/referrals/{rid}/entries")
    await site.post(
        f"/referrals/{rid}/entries",
        {"csrf": entries.hidden("csrf"), "entry": f"concern:{world.concern_id}"},
    )
    await site.post(
        f"/referrals/{rid}/redact", {"csrf": entries.hidden("csrf"), "text": "Kai Smith"}
    )
    check = world.text(await site.get(f"/referrals/{rid}/check"))
    actor = await site.node.store.actor_for(world.dsl.staff.id)
    record = await world.referrals.get(actor, rid)
    preview = await world.referrals.preview(actor, rid)
    readable = readable_referral(
        record.form.model_dump(mode="json"),
        chronology=[e.model_dump(mode="json") for e in preview],
        people=[{"id": world.dsl.staff.id, "name": "Dsl", "role": "dsl"}],
    )
    assert [s.key for s in readable.sections] == [
        "reason",
        "child",
        "family",
        "known",
        "consent",
        "contact",
    ]
    for section in readable.sections:
        assert f'id="part-{section.key}">{section.title}</h2>' in check
        for group in section.groups:
            assert f">{group.title}</h3>" in check
        for row in (*section.rows, *(r for g in section.groups for r in g.rows)):
            assert row.label in check and row.value in check, row
    assert "Household member" in check and "Tomi Okafor" in check
    shown = check[check.index('<div class="app-readable">') : check.index("Hidden in what")]
    assert "Amara said [redacted] hit her at the bus stop." in shown and "Kai Smith" not in shown
    assert "Recorded by" in check and "Dsl (designated safeguarding lead)" in check


async def test_a_teacher_refused_the_agency_choice_and_a_new_form_is_audited(
    world: World,
) -> None:
    """The first steps of a new referral ask the service (``Referrals.may_start``), which
    refuses a teacher and records it, as every other referral page's refusal is."""
    site = world.site
    home = await _as(world, world.teacher)
    refused = [
        await site.get(f"/pupils/{UPN}/referrals/new"),
        await site.get(f"/pupils/{UPN}/referrals/new?agency=mash-bristol"),
        await site.post(
            f"/pupils/{UPN}/referrals/new", {"csrf": home.hidden("csrf"), "agency": "mash-bristol"}
        ),
    ]
    assert [r.status for r in refused] == [403, 403, 403]
    events = [e for e in site.node.events("referral.drafted") if e.outcome == "refused"]
    assert [(e.actor, e.targets) for e in events] == [
        (world.teacher.staff.id, {"pupil": world.amara.id})
    ] * 3
    assert await world.drafts() == []


async def _send_offline(world: World, rid: str) -> Page:
    check = await world.site.get(f"/referrals/{rid}/check")
    world.site.node.next_step()
    sent = await world.site.post(
        f"/referrals/{rid}/send",
        {
            "csrf": check.hidden("csrf"),
            "route": "offline",
            "form_only": "yes",
            "code": world.dsl.code(world.site.node.clock.now),
        },
    )
    assert sent.title == "Referral sent - Handover", sent.text[:800]
    return sent


async def test_a_sent_referral_not_yet_with_the_agency_is_taken_back_with_a_reason(
    world: World,
) -> None:
    site = world.site
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    await _post(world, page, _mash(page))
    [rid] = await world.drafts()
    await _send_offline(world, rid)
    bundles = list((world.exports / "referrals").glob("*.zip"))
    assert len(bundles) == 1
    sent = await site.get(f"/referrals/{rid}")
    assert "Take it back" in sent.text and 'action="/referrals/' + rid + '/withdraw"' in sent.text
    empty = await site.post(f"/referrals/{rid}/withdraw", {"csrf": sent.hidden("csrf")})
    assert empty.status == 400
    assert _summary_links(empty) == ["withdraw_reason", "not_handed_over"]
    unconfirmed = await site.post(
        f"/referrals/{rid}/withdraw",
        {"csrf": sent.hidden("csrf"), "withdraw_reason": "The wrong carer was named."},
    )
    assert unconfirmed.status == 400 and _summary_links(unconfirmed) == ["not_handed_over"]
    assert 'value="The wrong carer was named."' in unconfirmed.text  # kept
    assert not site.node.events("referral.withdrawn")
    back = await site.post(
        f"/referrals/{rid}/withdraw",
        {
            "csrf": sent.hidden("csrf"),
            "withdraw_reason": "The wrong carer was named.",
            "not_handed_over": "yes",
        },
    )
    assert back.url.endswith(f"/referrals/{rid}?done=withdrawn")
    shown = world.text(back)
    assert "The referral has been taken back: it is a draft again" in shown
    assert '<strong class="govuk-tag govuk-tag--grey">Draft</strong>' in back.text
    assert "Taken back to draft" in shown and "Take it back" not in shown
    assert not bundles[0].exists()  # the copy on the server is gone
    actor = await site.node.store.actor_for(world.dsl.staff.id)
    assert (await world.referrals.get(actor, rid)).state == "draft"
    assert [e.outcome for e in site.node.events("referral.withdrawn")] == ["ok"]
    # Sent again and handed over: it is the agency's now, and cannot be taken back.
    await _send_offline(world, rid)
    handed = await site.get(f"/referrals/{rid}")
    await site.post(
        f"/referrals/{rid}/handover",
        {"csrf": handed.hidden("csrf"), "to_whom": "MASH duty desk", "how": "by hand"},
    )
    late = await site.post(
        f"/referrals/{rid}/withdraw",
        {"csrf": handed.hidden("csrf"), "withdraw_reason": "Too late.", "not_handed_over": "yes"},
    )
    assert late.status == 400 and _summary_links(late) == ["withdraw_reason"]
    assert _field_error(late, "withdraw_reason").startswith(
        "It was not taken back: this referral is delivered"
    )
    assert (await world.referrals.get(actor, rid)).state == "delivered"


def test_add_another_stops_at_the_schemas_most_rows_and_still_saves_nothing() -> None:
    counts, added = row_counts(
        "social_care",
        {"rows.household": "30", "add": "household", "rows.carers": "999", "rows.disclosures": "x"},
    )
    assert added == "household"  # given back, not taken as "Save and continue"
    assert counts == {"disclosures": 1, "carers": 20, "household": 30, "significant_adults": 1}
    assert row_counts("social_care", {"rows.carers": "20", "add": "carers"})[0]["carers"] == 20


async def test_enter_in_a_text_field_saves_the_referral_form(world: World) -> None:
    """A browser's Enter in a text field presses the form's first submit button: it saves
    and continues, not "Add another"."""
    await _as(world, world.dsl)
    page = await _form(world, "mash-bristol")
    inside = next(f for f in page.text.split("<form")[1:] if 'name="agency"' in f)
    first = re.search(r"<button[^>]*>([^<]*)</button>", inside)
    assert first is not None
    assert first.group(1).strip() == "Save and continue" and 'name="add"' not in first.group(0)
