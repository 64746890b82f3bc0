"""Casework in Debian's Chromium against real ``handover serve`` processes (the demo's
world): a DSL at 375 px, keyboard only, finds a pupil by search, reads her chronology,
opens a concern, records a triage decision, adds an action, marks it done and changes
the concern's text; every page through :func:`checked` (headers, no inline script or
style, axe-core WCAG 2.2 A/AA). A teacher cannot reach the DSL's pages by address."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import time
from datetime import date
from pathlib import Path

import aiohttp
from playwright.async_api import Browser, Locator, Page, expect

from tests.web.browser_support import WebWorld, checked
from tests.web.test_browser import PRIMARY, SECONDARY, _context, _sign_in
from transfer.demo.scenario import upn


async def _keyboard_submit(page: Page, button: str) -> None:
    """Submit with the keyboard: focus the button and press Enter (no mouse)."""
    await page.get_by_role("button", name=button).focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)


async def _type(page: Page, label: str, text: str) -> None:
    await page.get_by_label(label, exact=True).focus()
    await page.keyboard.type(text)


async def test_a_dsl_on_a_phone_does_the_days_casework_by_keyboard(
    browser: Browser, web_world: WebWorld
) -> None:
    context = await _context(browser, width=375)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "s.patel")
    # Search, then the pupil's page.
    await checked(page, await page.goto(web_world.url(PRIMARY, "/search?q=Amara")))
    await expect(page.get_by_role("link", name="Amara Okafor, Year 6", exact=True)).to_be_visible()
    await page.get_by_role("link", name="Amara Okafor, Year 6", exact=True).focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await expect(page).to_have_title("Amara Okafor, Year 6 - Handover")
    timeline = page.locator(".app-timeline")
    await expect(timeline).to_contain_text("recorded by Tom Wood (Staff)")
    await expect(timeline).to_contain_text("Triage decision: Refer to children's social care")
    # Filters work as a plain form.
    await page.get_by_label("Category").select_option(label="Online safety")
    await _keyboard_submit(page, "Show entries")
    await expect(page.locator(".app-timeline__title").first).to_contain_text("Online safety")
    # A concern's page, then triage.
    await checked(page, await page.goto(web_world.url(PRIMARY, f"/pupils/{upn(101)}")))
    await page.locator(".app-timeline__title a").first.focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await expect(page.locator("h1")).to_have_text("Concern: Child protection")
    await expect(page.get_by_text("Front of the body: bruise")).to_be_visible()
    concern_url = page.url
    await page.get_by_role("button", name="Record a triage decision").focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await _keyboard_submit(page, "Save the decision")  # nothing chosen: errors, kept
    await expect(page).to_have_title(re.compile("^Error: Record a triage decision"))
    await page.get_by_label("Monitor", exact=True).focus()
    await page.keyboard.press("Space")
    await _type(page, "Why?", "Strategy discussion agreed to monitor at school.")
    await _keyboard_submit(page, "Save the decision")
    await expect(page.get_by_text("The triage decision has been recorded.")).to_be_visible()
    # An action, given to the deputy by name, then done.
    await page.get_by_role("button", name="Add an action").focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await _type(page, "What needs to be done?", "Meet Amara's aunt after school.")
    await page.get_by_label("Who will do it?").select_option(label="Jo Okoro (Deputy DSL)")
    await _keyboard_submit(page, "Add the action")
    await expect(page.get_by_text("Owner: Jo Okoro (Deputy DSL)").first).to_be_visible()
    await page.get_by_role("button", name=re.compile("Mark as done.*Meet Amara")).focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await expect(page.get_by_text("The action has been marked as done.")).to_be_visible()
    # The concern's text changed, the earlier text kept.
    await page.get_by_role("link", name="Change the text of this concern").focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await page.get_by_label("Where", exact=True).fill("")
    await _type(page, "Where", "Year 6 classroom, before registration")
    await _type(page, "Why are you changing it?", "The teacher told me the time.")
    await _keyboard_submit(page, "Save the change")
    await expect(page.get_by_text(re.compile("Amended by Sam Patel \\(DSL\\)"))).to_be_visible()
    await expect(page.get_by_text("The text before this change")).to_be_visible()
    # Nothing on the page is wider than the phone.
    wide = await page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 375, wide
    assert page.url.startswith(concern_url)
    await context.close()


async def test_a_teacher_cannot_reach_the_dsls_pages_by_address(
    browser: Browser, web_world: WebWorld
) -> None:
    context = await _context(browser)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "s.patel", check=False)
    await page.goto(web_world.url(PRIMARY, f"/pupils/{upn(104)}"))  # Yusuf: logged by the head
    href = await page.locator(".app-timeline__title a").first.get_attribute("href")
    assert href is not None
    await context.close()
    context = await _context(browser)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "t.wood", check=False)
    for path in (href, href + "/triage", href + "/amend"):
        response = await page.goto(web_world.url(PRIMARY, path))
        assert response is not None and response.status in (403, 404), path
        await checked(page, response)
        await expect(page.get_by_text("Third unexplained absence")).to_have_count(0)
    response = await page.goto(web_world.url(PRIMARY, f"/pupils/{upn(104)}"))
    await checked(page, response)
    none = page.get_by_text("You have not logged a concern about this pupil.")
    await expect(none).to_be_visible()
    await context.close()


async def test_a_dsl_on_a_phone_sends_a_leavers_file_and_checks_its_receipt(
    browser: Browser, web_world: WebWorld, tmp_path: Path
) -> None:
    """Issue 14's journey at 375 px, keyboard only, between the demo's two real nodes: mark
    Leon as leaving for Riverside Academy (found by the form's own search), the KCSIE
    deadline at once, send with a fresh code, the outbox shows it delivered and then
    accepted (Riverside's DSL accepts through its API), and the signed receipt, its
    signature and Riverside's key download and Debian's ``minisign`` checks them."""
    context = await _context(browser, width=375)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "s.patel")
    await checked(page, await page.goto(web_world.url(PRIMARY, f"/pupils/{upn(102)}")))
    await _follow(page, "Mark as leaving")
    today = date.today()
    await _type(page, "Leaving date", f"{today.day}/{today.month}/{today.year}")
    await _type(page, "Find the school by name or URN", "riverside")
    await _keyboard_submit(page, "Find schools")
    await page.get_by_label("Riverside Academy (URN 654321)").focus()
    await page.keyboard.press("Space")
    await _keyboard_submit(page, "Save")
    await expect(
        page.get_by_text("The leaving date and next school have been saved.")
    ).to_be_visible()
    await expect(page.locator("#leaving")).to_contain_text(re.compile(
        r"Due by \w+day \d+ \w+ \d{4}: within 5 school days of leaving"))  # fmt: skip
    await _follow(page, "Send the leaver's file")
    await expect(page.locator("main")).to_contain_text("Riverside Academy")
    await expect(page.locator("code.app-key")).to_have_text(
        re.compile(r"^[0-9A-Z]{4}(-[0-9A-Z]{4}){3}$")
    )
    await expect(page.locator("main")).to_contain_text("Concern: 1")
    secret = web_world.account(PRIMARY, "s.patel")["totp_secret"]
    await _type(page, "Code from your authenticator app", await web_world.codes.next(secret))
    await _keyboard_submit(page, "Send the file")
    await expect(page.get_by_text("The file has been sealed and queued.")).to_be_visible()
    card = page.locator(".govuk-summary-card", has_text="Leon Nowak")
    package_id = (await card.get_attribute("id") or "")[len("package-") :]
    # The nodes sweep every second: delivered, then accepted at Riverside (its API).
    await _reload_until(page, card, "Delivered")
    await _accept_at_secondary(web_world, package_id)
    await _reload_until(page, card, "Accepted")
    await checked(page, await page.reload())
    await expect(card).to_contain_text("Accepted by Riverside Academy by Aisha Khan")
    # The receipt, its signature and the school's key, by keyboard; minisign checks them.
    folder = tmp_path / "receipts"
    folder.mkdir()
    for link in await card.locator("a[download]").all():
        await link.focus()
        async with page.expect_download() as download:
            await page.keyboard.press("Enter")
        got = await download.value
        await got.save_as(folder / got.suggested_filename)
    command = await card.locator("code").last.text_content()
    assert command is not None and command.startswith("minisign -Vm receipt-accepted-")
    minisign = shutil.which("minisign")
    assert minisign is not None
    run = await asyncio.create_subprocess_exec(
        minisign, *command.split()[1:], cwd=folder, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await run.communicate()
    assert run.returncode == 0, err.decode()
    assert f"handover-receipt-v1 accepted {package_id}" in out.decode()
    wide = await page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 375, wide
    await context.close()


async def _follow(page: Page, link: str) -> None:
    """Follow a link with the keyboard (focus, Enter), the new page checked."""
    await page.get_by_role("link", name=link).focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)


async def _reload_until(page: Page, card: Locator, state: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while state not in (await card.locator(".govuk-tag").text_content() or ""):
        assert time.monotonic() < deadline, f"not {state} within {within} s"
        await asyncio.sleep(0.5)
        await page.reload()


async def _accept_at_secondary(web_world: WebWorld, package_id: str) -> None:
    """Riverside's DSL accepts the file as a new pupil (its inbox pages are elsewhere)."""
    node = web_world.node(SECONDARY)
    account = web_world.account(SECONDARY, "a.khan")
    ctx = ssl.create_default_context(cafile=node["ca_file"])
    api = web_world.url(SECONDARY, "/api/v1")
    async with aiohttp.ClientSession() as http:
        body = {"org": account["org"], "username": "a.khan", "password": account["password"],
                "totp": await web_world.codes.next(account["totp_secret"])}  # fmt: skip
        async with http.post(f"{api}/session", json=body, ssl=ctx) as resp:
            assert resp.status in (200, 201), await resp.text()
            token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(120):  # delivered here a moment ago: in the inbox
            async with http.post(f"{api}/inbox/{package_id}/accept", json={"create_new": True},
                                 headers=headers, ssl=ctx) as resp:  # fmt: skip
                if resp.status != 404:
                    assert resp.status == 200, await resp.text()
                    return
            await asyncio.sleep(0.5)
        raise AssertionError("the file never reached Riverside's inbox")
