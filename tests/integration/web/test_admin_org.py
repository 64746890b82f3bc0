"""Administration, the organisation: keys with their fingerprint to read out, rotation with
a fresh code, the signed directory (import, its date, who is in it), categories and the
retention policy, each for whoever its service allows; in-process on each engine."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from keys import minisign
from keys.fingerprint import read_aloud
from tests.integration.directory.support import document, entry, keyset
from tests.support.web import Page, Site, site_for
from tests.unit.auth.support import URN, Person
from transfer.directory.administration import KeyAdministration
from transfer.directory.document import authority_fingerprint
from transfer.store.permissions import Role
from transfer.web.core import WEB_APP_KEY, WebApp


@pytest.fixture
async def site(db_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    async with site_for(db_url, tmp_path, keys=True) as s:
        yield s


def _key_admin(site: Site) -> KeyAdministration:
    app = site.client.app
    assert app is not None
    pages = app[WEB_APP_KEY]
    assert isinstance(pages, WebApp) and pages.services.key_admin is not None
    return pages.services.key_admin


async def _as(site: Site, who: Person) -> Page:
    if site.client.session.cookie_jar:
        site.client.session.cookie_jar.clear()
    return await site.sign_in(who)


def _text(page: Page) -> str:
    return html.unescape(re.sub(r"\s+", " ", page.text))


def _fields(page: Page) -> dict[str, str]:
    return {"csrf": page.hidden("csrf"), "form_owner": page.hidden("form_owner")}


async def _keys(site: Site) -> str:
    return str(_key_admin(site)._keys.load(URN).fingerprint)


async def test_the_administrator_reads_the_fingerprint_and_rotates_with_a_code(
    site: Site,
) -> None:
    first = await _keys(site)
    admin = await site.node.person("admin", [Role.ADMINISTRATOR])
    await _as(site, admin)
    page = await site.get("/admin/organisation")
    text = _text(page)
    assert page.status == 200 and first in text
    for group in read_aloud(first):
        assert group in text
    assert "The DSL adds categories" in text and "Retention policy" not in text
    form = await site.get("/admin/organisation/keys/new")
    assert form.title == "Make new keys for your school - Handover"
    wrong = await site.post("/admin/organisation/keys/new", {**_fields(form), "code": "000000"})
    assert wrong.status == 400 and "That code is not right" in _text(wrong)
    assert (
        await _key_admin(site).keys(await site.node.store.actor_for(admin.staff.id))
    ).fingerprint == first
    site.node.next_step()
    done = await site.post(
        "/admin/organisation/keys/new", {**_fields(form), "code": admin.code(site.node.clock.now)}
    )
    assert "New keys have been made" in _text(done)
    assert first not in done.text.split("Signing keys")[0]
    assert [e.outcome for e in site.node.events("key.rotate")] == ["ok"]


async def test_the_dsl_and_a_teacher_never_reach_the_keys(site: Site) -> None:
    await _keys(site)
    dsl = await site.node.person("dsl", [Role.DSL])
    teacher = await site.node.person("teacher", [Role.STAFF])
    home = await _as(site, dsl)
    page = await site.get("/admin/organisation")
    assert page.status == 200 and "Your school's keys" not in page.text
    assert "Categories of concern" in page.text and "Retention policy" in page.text
    for who, start in ((dsl, home), (teacher, None)):
        start = start or await _as(site, who)
        assert (await site.get("/admin/organisation/keys/new")).status == 403
        refused = await site.post(
            "/admin/organisation/keys/new", {"csrf": start.hidden("csrf"), "code": "123456"}
        )
        assert refused.status == 403
        refused = await site.post(
            "/admin/organisation/directory", {"csrf": start.hidden("csrf"), "signature": "x"}
        )
        assert refused.status == 403
    assert (await site.get("/admin/organisation")).status == 403  # the teacher
    refusals = [e for e in site.node.audit.events if e.action in ("key.read", "key.rotate")]
    assert refusals and all(e.outcome == "refused" for e in refusals)


async def _import(site: Site, page: Page, data: bytes, signature: str) -> Page:
    form = aiohttp.FormData()
    for k, v in _fields(page).items():
        form.add_field(k, v)
    form.add_field("signature", signature)
    form.add_field("directory", data, filename="directory.json", content_type="application/json")
    async with site.client.post("/admin/organisation/directory", data=form) as resp:
        return Page(resp.status, await resp.text(), resp.headers, str(resp.url))


async def test_a_signed_directory_is_imported_and_a_bad_one_refused(site: Site) -> None:
    await _keys(site)
    admin = await site.node.person("admin", [Role.ADMINISTRATOR])
    await _as(site, admin)
    authority = minisign.SecretKey.generate()
    riverside = keyset("100002")
    _, data, sig = document(authority, [entry(riverside)], now=site.node.clock.now)
    page = await site.get("/admin/organisation")
    assert "This node holds no signed directory yet" in _text(page)
    empty = await _import(site, page, b"", "")
    assert empty.status == 400 and "Paste the text of the directory" in _text(empty)
    unpinned = await _import(site, page, data, sig)
    assert "The directory was not imported: no directory authority is pinned" in _text(unpinned)
    directory = _key_admin(site)._directory
    await directory.pin_authority(
        authority.public_key,
        fingerprint=authority_fingerprint(authority.public_key),
        actor="cli:test",
    )
    forged = await _import(site, page, data.replace(b"Riverside", b"Rivershed"), sig)
    assert forged.status == 400 and "The directory was not imported" in _text(forged)
    assert await directory.held() is None
    done = await _import(site, page, data, sig)
    text = _text(done)
    assert "The directory has been imported: number 1, with 1 organisations" in text
    assert "Testshire County Council" in text and "Riverside Academy" in text
    assert riverside.fingerprint in text and "The signed directory" in text


async def test_the_dsl_adds_a_category_and_sets_the_retention_policy(site: Site) -> None:
    dsl = await site.node.person("dsl", [Role.DSL])
    admin = await site.node.person("admin", [Role.ADMINISTRATOR])
    await _as(site, dsl)
    page = await site.get("/admin/organisation")
    bad = await site.post("/admin/organisation/categories", {**_fields(page), "label": ""})
    assert bad.status == 400 and "Enter the category's name" in _text(bad)
    done = await site.post(
        "/admin/organisation/categories",
        {**_fields(page), "label": "Peer harassment", "restricted": "yes"},
    )
    assert "The category has been added" in _text(done)
    cats = await site.node.store.list_categories(await site.node.store.actor_for(dsl.staff.id))
    assert [(c.key, c.restricted) for c in cats if c.label == "Peer harassment"] == [
        ("peer_harassment", True)
    ]
    again = await site.post(
        "/admin/organisation/categories", {**_fields(page), "label": "Peer harassment"}
    )
    assert again.status == 400 and "already" in _text(again)
    bad = await site.post(
        "/admin/organisation/retention", {**_fields(page), "years": "0", "description": ""}
    )
    assert bad.status == 400
    assert "Enter the number of years" in _text(bad) and "Say where the policy" in _text(bad)
    done = await site.post(
        "/admin/organisation/retention",
        {**_fields(page), "years": "30", "description": "Our LA's rule"},
    )
    assert "erased 30 years after their date of birth (Our LA's rule)" in _text(done)
    # The administrator may neither, whatever the page sends.
    home = await _as(site, admin)
    for path, data in (
        ("/admin/organisation/categories", {"label": "Gangs"}),
        ("/admin/organisation/retention", {"years": "1", "description": "x"}),
    ):
        refused = await site.post(path, {"csrf": home.hidden("csrf"), **data})
        assert refused.status == 403, path
