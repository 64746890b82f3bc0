"""Administration, pupils: the CTF upload (every problem by line, nothing imported when
anything is wrong, a warning for a file addressed to another school) and a pupil's basic
details, in-process on each engine."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.web import Page, Site, site_for
from tests.unit.auth.support import Person
from transfer.store.permissions import Actor, Role

SAMPLE = Path(__file__).resolve().parents[2] / "assets" / "ctf" / "leavers_801_2000.xml"


@pytest.fixture
async def site(db_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    async with site_for(db_url, tmp_path) as s:
        yield s


async def _as(site: Site, who: Person) -> Page:
    if site.client.session.cookie_jar:
        site.client.session.cookie_jar.clear()
    return await site.sign_in(who)


async def _upload(site: Site, data: bytes | None, *, force: bool = False) -> Page:
    page = await site.get("/admin/pupils")
    form = aiohttp.FormData()
    form.add_field("csrf", page.hidden("csrf"))
    form.add_field("form_owner", page.hidden("form_owner"))
    if force:
        form.add_field("force", "yes")
    if data is not None:
        form.add_field("ctf", data, filename="roll.xml", content_type="application/xml")
    async with site.client.post("/admin/pupils/ctf", data=form) as resp:
        return Page(resp.status, await resp.text(), resp.headers, str(resp.url))


def _text(page: Page) -> str:
    return html.unescape(re.sub(r"\s+", " ", page.text))


async def _actor(site: Site, who: Person) -> Actor:
    return await site.node.store.actor_for(who.staff.id)


async def test_every_bad_line_is_shown_and_nothing_is_imported(site: Site) -> None:
    admin = await site.node.person("admin", [Role.ADMINISTRATOR])
    await _as(site, admin)
    text = SAMPLE.read_text()
    bad = text.replace("<DOB>", "<DOB>20X", 1)
    upns = re.findall(r"<UPN>([^<]+)</UPN>", text)
    bad = bad.replace(f"<UPN>{upns[2]}</UPN>", "<UPN>A80120001400Q</UPN>")
    page = await _upload(site, bad.encode())
    assert page.status == 400 and page.title.startswith("Error: Pupils")
    shown = _text(page)
    assert "Nothing was imported: the file has 2 problems" in shown
    lines = [
        n
        for n, line in enumerate(bad.splitlines(), start=1)
        if "<DOB>20X" in line or "A80120001400Q" in line
    ]
    for n in lines:
        assert f"Line {n}" in shown, n
    assert not await site.node.store.list_pupils(await _actor(site, admin))
    # No file, and an empty one.
    assert "Select the CTF file" in _text(await _upload(site, None))
    assert "The file is empty" in _text(await _upload(site, b""))


async def test_a_file_for_another_school_is_a_warning_until_confirmed(site: Site) -> None:
    admin = await site.node.person("admin", [Role.ADMINISTRATOR])
    await _as(site, admin)
    page = await _upload(site, SAMPLE.read_bytes())
    assert page.status == 409
    assert "This file is addressed to another school, not to your school" in _text(page)
    assert not await site.node.store.list_pupils(await _actor(site, admin))
    page = await _upload(site, SAMPLE.read_bytes(), force=True)
    assert page.status == 200
    assert "The file was imported: 4 pupils added, 0 pupils updated" in _text(page)
    assert "leaving dates and destinations were recorded" in _text(page)
    assert len(await site.node.store.list_pupils(await _actor(site, admin))) == 4


async def test_a_pupils_details_are_changed_with_mistakes_by_their_fields(site: Site) -> None:
    admin = await site.node.person("admin", [Role.ADMINISTRATOR])
    await _as(site, admin)
    await _upload(site, SAMPLE.read_bytes(), force=True)
    pupil = (await site.node.store.list_pupils(await _actor(site, admin)))[0]
    path = f"/admin/pupils/{pupil.upn}/edit"
    form = await site.get(path)
    assert form.status == 200 and pupil.surname in form.text
    fields = {"csrf": form.hidden("csrf"), "form_owner": form.hidden("form_owner")}
    page = await site.post(
        path,
        {
            **fields,
            "forename": "",
            "surname": "x" * 201,
            "dob": "31/2/2015",
            "sex": "Q",
            "year_group": "6",
        },
    )
    assert page.status == 400
    shown = _text(page)
    for message in (
        "Enter the pupil's first name",
        "The last name must be 200 characters",
        "Date of birth must be a real date",
        "Select the pupil's sex",
    ):
        assert message in shown
    page = await site.post(
        path,
        {
            **fields,
            "forename": "Amara",
            "surname": "Okafor-Reid",
            "dob": "27/3/2015",
            "sex": "F",
            "year_group": "7",
        },
    )
    assert "The pupil's details have been changed" in _text(page)
    changed = await site.node.store.find_pupil(await _actor(site, admin), str(pupil.upn))
    assert (changed.forename, changed.surname, str(changed.dob), changed.year_group) == (
        "Amara",
        "Okafor-Reid",
        "2015-03-27",
        "7",
    )
    assert (await site.get("/admin/pupils/not-a-upn/edit")).status == 404


async def test_a_teacher_is_refused_the_pupil_pages_by_address(site: Site) -> None:
    teacher = await site.node.person("teacher", [Role.STAFF])
    home = await _as(site, teacher)
    assert (await site.get("/admin/pupils")).status == 403
    assert (await site.get("/admin/pupils/H801200001001/edit")).status == 403
    page = await site.post(
        "/admin/pupils/H801200001001/edit", {"csrf": home.hidden("csrf"), "forename": "X"}
    )
    assert page.status == 403
    refused = await _upload_as_form(site, home)
    assert refused.status == 403


async def _upload_as_form(site: Site, home: Page) -> Page:
    form = aiohttp.FormData()
    form.add_field("csrf", home.hidden("csrf"))
    form.add_field("ctf", SAMPLE.read_bytes(), filename="roll.xml")
    async with site.client.post("/admin/pupils/ctf", data=form) as resp:
        return Page(resp.status, await resp.text(), resp.headers, str(resp.url))
