"""Administration, retention: the pupils due for erasure by the policy, erasing one after a
confirmation, and what was erased shown as counts and a reference (never the content); the
DSL's alone, in-process on each engine."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from schemas.records import NewConcern, NewPupil
from tests.support.web import Page, Site, site_for
from tests.unit.auth.support import Person
from transfer.identifiers import upn_check_letter
from transfer.store.permissions import Role
from transfer.web.admin_retention import reference


@pytest.fixture
async def site(db_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    async with site_for(db_url, tmp_path) as s:
        yield s


async def _as(site: Site, who: Person) -> Page:
    if site.client.session.cookie_jar:
        site.client.session.cookie_jar.clear()
    return await site.sign_in(who)


def _text(page: Page) -> str:
    return html.unescape(re.sub(r"\s+", " ", page.text))


def _upn(serial: int) -> str:
    body = f"801200026{serial:03d}"
    return upn_check_letter(body) + body


async def test_the_dsl_erases_a_due_pupil_and_sees_what_went(site: Site) -> None:
    node = site.node
    dsl = await node.person("dsl", [Role.DSL])
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    teacher = await node.person("teacher", [Role.STAFF])
    admin_actor = await node.store.actor_for(admin.staff.id)
    today = node.clock.now.date()
    pupils = {}
    for n, (name, dob) in enumerate(
        (
            ("Old", date(today.year - 26, 1, 15)),
            (
                "Soon",
                date(today.year - 25, 12, 1) if today.month < 12 else date(today.year - 24, 6, 1),
            ),
            ("Young", date(2015, 5, 5)),
        )
    ):
        pupils[name] = await node.store.create_pupil(
            admin_actor,
            NewPupil(upn=_upn(101 + n), surname="Pupil", forename=name, dob=dob, sex="F"),
        )
    await node.store.record_concern(
        await node.store.actor_for(teacher.staff.id),
        NewConcern(
            pupil_ids=(pupils["Old"].id,),
            category="bullying",
            happened_at=node.clock.now - timedelta(days=3),
            account="Said a secret word: marmalade.",
        ),
    )
    await _as(site, dsl)
    page = await site.get("/admin/retention")
    assert page.status == 200
    now_part, _, rest = _text(page).partition("Due in the next year")
    assert "Old Pupil" in now_part and "Soon Pupil" not in now_part
    assert "Soon Pupil" in rest.split("Erased")[0] and "Young" not in _text(page)
    old = pupils["Old"]
    confirm = await site.get(f"/admin/retention/{old.id}/erase")
    assert confirm.title == "Erase Old Pupil's records? - Handover"
    fields = {"csrf": confirm.hidden("csrf"), "form_owner": confirm.hidden("form_owner")}
    unticked = await site.post(f"/admin/retention/{old.id}/erase", fields)
    assert unticked.status == 400 and "Tick the box to confirm" in _text(unticked)
    assert not await node.store.tombstones(await node.store.actor_for(dsl.staff.id))
    done = await site.post(f"/admin/retention/{old.id}/erase", {**fields, "confirm": "yes"})
    text = _text(done)
    ref = reference(old.id)
    assert f"The records of pupil {ref} have been erased" in text
    erased = text.split("Erased", 1)[1]
    assert ref in erased and "Dsl (DSL)" in erased and "Concerns: 1;" in erased
    assert "Old Pupil" not in text and "marmalade" not in text
    # Not twice, and not a pupil who is not due.
    assert (await site.get(f"/admin/retention/{old.id}/erase")).status == 404
    young = pupils["Young"].id
    page = await site.post(f"/admin/retention/{young}/erase", {**fields, "confirm": "yes"})
    assert page.status == 404
    # The administrator and a teacher are refused, whatever the page sends.
    for who in (admin, teacher):
        home = await _as(site, who)
        assert (await site.get("/admin/retention")).status == 403
        soon = pupils["Soon"].id
        refused = await site.post(
            f"/admin/retention/{soon}/erase", {"csrf": home.hidden("csrf"), "confirm": "yes"}
        )
        assert refused.status == 403
    assert len(await node.store.tombstones(await node.store.actor_for(dsl.staff.id))) == 1
