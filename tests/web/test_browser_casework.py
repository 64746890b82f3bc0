"""Casework in Debian's Chromium against real ``handover serve`` processes (the demo's
world): a DSL at 375 px, keyboard only, finds a pupil by search, reads her chronology,
opens a concern, records a triage decision, adds an action, marks it done and changes
the concern's text; every page through :func:`checked` (headers, no inline script or
style, axe-core WCAG 2.2 A/AA). A teacher cannot reach the DSL's pages by address."""

from __future__ import annotations

import re

from playwright.async_api import Browser, Page, expect

from tests.web.browser_support import WebWorld, checked
from tests.web.test_browser import PRIMARY, _context, _sign_in
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


async def test_a_dsl_on_a_phone_opens_the_governors_report_and_downloads_it(
    browser: Browser, web_world: WebWorld
) -> None:
    """Issue 15: the report for this term by keyboard at 375 px, a chart with its table
    (the same figures), the governors' version, and its PDF and CSV downloaded."""
    import csv
    import html
    import io

    from pypdf import PdfReader

    context = await _context(browser, width=375)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "s.patel")
    await page.get_by_role("link", name="Reports").focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await expect(page.locator("h1")).to_have_text("Safeguarding reports")
    await page.get_by_label("Term or school year").focus()
    await page.get_by_label("Term or school year").select_option("autumn-2026")
    await _keyboard_submit(page, "Show the report")
    await expect(page.locator("h1")).to_have_text("Safeguarding report: Autumn 2026")
    await expect(page.get_by_text("not for sharing", exact=False).first).to_be_visible()
    # A chart, an image with its title, and beside it the table of the same figures.
    chart = page.locator("svg#chart-categories, svg[aria-labelledby^='chart-categories']")
    await expect(chart).to_have_attribute("role", "img")
    description = html.unescape(await page.locator("#chart-categories-desc").text_content() or "")
    table = page.locator("table", has=page.locator("caption", has_text="Concerns by category"))
    rows = await table.locator("tbody tr").all_inner_texts()
    figures = [r.split("\t") for r in rows if "All concerns" not in r]
    assert figures, rows
    for label, figure in figures:
        assert f"{label.strip()}: {figure.strip()}" in description, (label, description)
    # The governors' version, then its PDF and CSV.
    await page.get_by_role("link", name="See the governors' version").focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await expect(page.get_by_text("not for sharing", exact=False)).to_have_count(0)
    async with page.expect_download() as pdf_download:
        await page.get_by_role("link", name="Governors' report as PDF").focus()
        await page.keyboard.press("Enter")
    pdf = await (await pdf_download.value).path()
    text = " ".join(p.extract_text() or "" for p in PdfReader(pdf).pages)
    assert "Safeguarding report to governors" in " ".join(text.split())
    async with page.expect_download() as csv_download:
        await page.get_by_role("link", name="Governors' report as CSV (spreadsheet)").focus()
        await page.keyboard.press("Enter")
    path = await (await csv_download.value).path()
    got = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert got[0] == ["section", "item", "figure"] and ["Report", "Period"] == got[2][:2]
    wide = await page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 375, wide
    await context.close()
