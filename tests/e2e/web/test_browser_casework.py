"""Casework in Debian's Chromium against real ``handover serve`` processes (the demo's
world): a DSL at 375 px, keyboard only, finds a pupil by search, reads her chronology,
opens a concern, records a triage decision, adds an action, marks it done and changes
the concern's text; every page through :func:`checked` (headers, no inline script or
style, axe-core WCAG 2.2 A/AA). A teacher cannot reach the DSL's pages by address.

Administration (issue 15) shares this module's world, last (it changes Tom Wood's role):
an invitation by one-time link, the invitee's password and authenticator, the
administrator refused the DSL role for themselves, a role change a DSL approves, and a
CTF with a bad line, at 375 px and by keyboard.

Receiving (issue 14), in the same served world: Riverside Academy sends a pupil's file
through its staff API (its sending pages are another area's); Hillside's DSL, at 375 px
and with the keyboard only, reads the concern in the inbox's preview, accepts the file
into the pupil already on the roll and sees the records in her chronology with where they
came from; the file sent again adds nothing already held (the page says so); another file
is rejected with a reason, and Riverside's outbox record carries it in the signed
receipt.

Referrals (issue 14): a DSL makes a referral in the wizard and the MASH picks it up by its
link and passcode."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import pyotp
from playwright.async_api import Browser, Locator, Page, expect

from tests.e2e.web.browser_receiving import (
    ACCOUNT,
    REASON,
    Riverside,
    accept_into_amara,
    go,
    to_inbox,
)
from tests.e2e.web.test_browser import PRIMARY, SECONDARY, _context, _sign_in
from tests.support.browser import WebWorld, checked
from transfer.demo.scenario import PRIMARY as HILLSIDE
from transfer.demo.scenario import SECONDARY as RIVERSIDE
from transfer.demo.scenario import Timeline, portal_pickup, upn


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


async def test_the_dpo_finds_who_opened_a_chronology_checks_the_log_and_exports_it(
    browser: Browser, web_world: WebWorld
) -> None:
    """The DPO at 375 px, keyboard only: who opened Amara's chronology (a DSL just did),
    the log checked from the page, the export for an outside auditor downloaded."""
    dsl = await _context(browser)
    dsl_page = await dsl.new_page()
    await _sign_in(dsl_page, web_world, PRIMARY, "s.patel", check=False)
    await dsl_page.goto(web_world.url(PRIMARY, f"/pupils/{upn(101)}"))
    await expect(
        dsl_page.get_by_role("link", name="Who has looked at this pupil's file?")
    ).to_be_visible()
    await dsl.close()

    context = await _context(browser, width=375)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "d.price")
    await page.get_by_role("link", name="Who has looked at a child's file?").focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await _type(page, "Pupil's name or UPN", "Amara Okafor")
    await page.get_by_label("What was done").focus()
    await page.get_by_label("What was done").select_option(label="Read a pupil's chronology")
    await _keyboard_submit(page, "Show entries")
    await expect(page).to_have_title("Who has looked at Amara Okafor's file? - Handover")
    first = page.locator("tbody .govuk-table__row").first
    await expect(first).to_contain_text("Sam Patel (DSL)")
    await expect(first).to_contain_text("Read the pupil's chronology")
    await expect(first).to_contain_text("Amara Okafor, Year")
    # The log's integrity: checked from the page, then the export downloaded.
    await page.get_by_role("link", name="The log's integrity").focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await _keyboard_submit(page, "Check the log")
    await expect(page).to_have_title("The audit log is intact - Handover")
    await page.get_by_role("link", name="Back to the log's integrity").focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await page.get_by_role("button", name="Download the export").focus()
    async with page.expect_download() as download_info:
        await page.keyboard.press("Enter")
    download = await download_info.value
    assert re.fullmatch(r"audit-export-[a-z0-9-]+-\d{8}T\d{6}Z\.tar", download.suggested_filename)
    import tarfile

    with tarfile.open(await download.path()) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"log.vkey", "checkpoint.note", "entries.jsonl", "proofs.json"} <= names
    await context.close()


# ------------------------------------------------------------------ administration

NEW_PASSWORD = "copper meadow lantern ninety"


async def _press(page: Page, role: str, name: str) -> None:
    """Follow a link or press a button with the keyboard (focus, then Enter)."""
    target = page.get_by_role(role, name=name, exact=True)  # type: ignore[arg-type]
    await target.focus()
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)


async def _type_in(page: Page, label: str, text: str) -> None:
    await page.get_by_label(label, exact=True).focus()
    await page.keyboard.type(text)


async def _narrow(page: Page) -> None:
    wide = await page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 375, (page.url, wide)


async def test_a_dsl_receives_reads_accepts_and_rejects_files_by_keyboard_on_a_phone(
    browser: Browser, web_world: WebWorld
) -> None:
    async with aiohttp.ClientSession() as http:
        riverside = Riverside(web_world, http)
        # Riverside's file about Amara (who left them for Hillside, where she is on roll).
        amara = await riverside.pupil(101, "Amara", "Okafor", "2015-03-14")
        await riverside.call(
            "PATCH",
            f"/pupils/{amara}",
            {
                "leaving_date": date.today().isoformat(),
                "destination": {"kind": "school", "urn": HILLSIDE[0], "name": HILLSIDE[2]},
            },
        )
        concern = await riverside.call(
            "POST",
            "/concerns",
            {
                "pupil_ids": [amara],
                "category": "child_protection",
                "location": "Form room",
                "happened_at": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
                "account": ACCOUNT,
            },
        )
        await riverside.call(
            "POST",
            f"/concerns/{concern['id']}/triage",
            {"decision": "refer_social_care", "reason": "Fear of an adult at home; MASH called."},
        )
        first = await riverside.send(amara)
        await riverside.until(first, "delivered")

        context = await _context(browser, width=375)
        page = await context.new_page()
        await _sign_in(page, web_world, PRIMARY, "s.patel")
        done = await accept_into_amara(page)
        imported = re.search(r"(\d+) records imported, 0 already held", done)
        assert imported and int(imported.group(1)) >= 2, done  # the concern and its triage
        wide = await page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= 375, wide
        await go(page, "See Amara Okafor, Year 6's chronology")
        received = page.locator(".app-timeline__item", has_text=ACCOUNT)
        await expect(received).to_contain_text(f"Received from {RIVERSIDE[2]} on")
        await expect(page.locator(".app-timeline")).to_contain_text(
            "Triage decision: Refer to children's social care"
        )

        # Sent again (with the reason a second sending needs): nothing is imported twice.
        again = await riverside.send(amara, "Sent again after a query from Hillside.")
        await riverside.until(again, "delivered")
        done = await accept_into_amara(page, axe=False)
        # (What is new is only the sender's own notes about sending the file the first time.)
        assert re.search(rf"^\d+ records? imported, {imported.group(1)} already held", done), done
        await go(page, "See Amara Okafor, Year 6's chronology", axe=False)
        await expect(page.locator(".app-timeline__item", has_text=ACCOUNT)).to_have_count(1)

        # Another file, rejected with a reason (first without one: the form says so).
        mia = await riverside.pupil(130, "Mia", "Taylor", "2014-09-30")
        other = await riverside.send(mia, "Mia's family asked us to send her file.")
        await riverside.until(other, "delivered")
        await to_inbox(page)
        await go(page, f"Mia Taylor, born 30 September 2014 (file from {RIVERSIDE[2]})")
        await go(page, "Reject this file", role="button")
        await go(page, "Reject the file", role="button")
        await expect(page).to_have_title(re.compile("^Error: Reject this file"))
        await page.get_by_label("Why are you rejecting it?").focus()
        await page.keyboard.type(REASON)
        await go(page, "Reject the file", role="button")
        await expect(page.get_by_text("The file has been rejected.")).to_be_visible()
        await expect(page.locator("tbody tr").first).to_contain_text("Rejected")
        wide = await page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= 375, wide
        await context.close()

        record = await riverside.until(other, "rejected")
        reasons = [r["reason"] for r in record["receipts"] if r["kind"] == "rejected"]
        assert reasons == [REASON], record["receipts"]
        assert (await riverside.until(again, "accepted"))["state"] == "accepted"


async def _key(page: Page, selector: str, text: str = "") -> None:
    """Focus a field by its id and type (or, for a radio or checkbox, press Space)."""
    await page.locator(selector).focus()
    if text:
        await page.keyboard.type(text)
    else:
        await page.keyboard.press("Space")


async def _follow(page: Page, name: str, role: str = "link") -> None:
    await page.get_by_role(role, name=name, exact=True).focus()  # type: ignore[arg-type]
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)


async def test_a_dsl_refers_by_pickup_link_and_sees_the_agencys_acknowledgement(
    browser: Browser, web_world: WebWorld
) -> None:
    """Referral wizard on a phone by keyboard: the MASH from the directory, the form
    prefilled from the pupil record, an entry chosen, a name selected on the page and hidden,
    shown as sent,
    sent by pickup link with a code; the MASH opens it with the passcode (over HTTP, as the
    demo's agency worker does) and acknowledges; the DSL sees it and records the outcome."""
    context = await _context(browser, width=375)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "s.patel")
    await checked(page, await page.goto(web_world.url(PRIMARY, f"/pupils/{upn(101)}")))
    await expect(page.get_by_text("No referral has been made about this pupil")).to_be_visible()
    await _follow(page, "Make a referral", role="button")
    await _key(page, "#agency")  # the first agency: the MASH
    await expect(page.get_by_label("Bristol Children's Social Care (MASH)")).to_be_checked()
    await _keyboard_submit(page, "Continue")
    await expect(page.locator("h1")).to_have_text(
        "Referral to Bristol Children's Social Care (MASH)"
    )
    # Prefilled from the pupil record and the person signed in.
    await expect(page.locator("#child-forename")).to_have_value("Amara")
    await expect(page.locator("#child-dob")).to_have_value("14/3/2015")
    await expect(page.locator("#child-upn")).to_have_value(upn(101))
    await expect(page.locator("#referrer-name")).to_have_value("Sam Patel")
    await _keyboard_submit(page, "Save and continue")  # mostly empty: each problem at its field
    await expect(page).to_have_title(re.compile("^Error: Referral to"))
    await expect(page.locator("#reason-error")).to_contain_text("Say what has happened")
    await _key(page, "#request")
    await _key(page, "#reason", "Unexplained bruise; she did not want to go home.")
    await _key(page, "#harm_types")
    await _key(page, "#impact_on_child", "Withdrawn in class.")
    await _key(page, "#risk_rating-2")
    await _key(page, "#risk_reasons", "Injury unexplained; earlier attendance concerns.")
    await _key(page, "#child-address", "12 Elm Road, Bristol BS5 0AA")
    await _key(page, "#carers-0-name", "Grace Okafor")
    await _key(page, "#carers-0-relationship", "mother")
    await _key(page, "#consent-parents_aware")
    await _key(page, "#consent-consent_given")
    await _key(page, "#referrer-phone", "0117 496 0000")
    await _keyboard_submit(page, "Save and continue")
    await expect(page.locator("h1")).to_have_text("Which entries go with the referral?")
    await expect(page.get_by_text("Nothing is chosen yet")).to_be_visible()
    await _key(page, "#entry")  # the concern of 12 January 2026
    await _keyboard_submit(page, "Save and continue")
    await expect(page.locator("h1")).to_have_text("Hide names and other details")
    # Selecting the name in what goes puts it in "Words to hide" (typed without JavaScript).
    await page.evaluate(
        """() => {
          const p = [...document.querySelectorAll('.app-as-sent__text')]
            .find(e => e.textContent.includes('Darren Mills'));
          const node = p.firstChild, at = node.textContent.indexOf('Darren Mills');
          const range = document.createRange();
          range.setStart(node, at);
          range.setEnd(node, at + 'Darren Mills'.length);
          document.getSelection().removeAllRanges();
          document.getSelection().addRange(range);
        }"""
    )
    await expect(page.locator("#text")).to_have_value("Darren Mills")
    await _keyboard_submit(page, "Hide these words")
    as_sent = page.locator(".app-as-sent")
    await expect(as_sent).to_contain_text("at her uncle [redacted]' flat")
    await expect(as_sent).not_to_contain_text("Darren Mills")
    await _follow(page, "Continue", role="button")
    await expect(page.locator("h1")).to_have_text("Check the referral before sending it")
    await expect(page.locator(".app-readable")).to_contain_text("[redacted]")
    await _key(page, "#route")  # the pickup link (the MASH has no node)
    secret = web_world.account(PRIMARY, "s.patel")["totp_secret"]
    await _key(page, "#code", await web_world.codes.next(secret))
    await _keyboard_submit(page, "Send the referral")
    await expect(page.locator("h1")).to_have_text("Referral sent")
    passcode = (await page.locator("#passcode").inner_text()).strip()
    link = (await page.locator("#pickup-link").inner_text()).strip()
    assert passcode and link.startswith(web_world.url(PRIMARY, "/portal/"))
    wide = await page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 375, wide
    await _follow(page, "Go to the referral")
    referral_url = page.url
    await expect(page.locator(".govuk-summary-list")).to_contain_text("Sent")
    # The MASH, by telephone told the passcode, opens the link and acknowledges.
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    await portal_pickup(insecure, link, passcode, Timeline())
    # The DSL sees it acknowledged, with their reference, then records the outcome.
    await checked(page, await page.goto(referral_url))
    summary = page.locator(".govuk-summary-list").first
    await expect(summary).to_contain_text("Acknowledged")
    await expect(summary).to_contain_text("MASH-2026-0415")
    await expect(summary).to_contain_text("Priya Shah (MASH social worker)")
    await expect(page.locator(".app-timeline")).to_contain_text("Picked up by the agency")
    await _follow(page, "Record the outcome", role="button")
    await _key(page, "#rag-2")
    await _key(page, "#decision-2")
    await _keyboard_submit(page, "Record the outcome")
    await expect(page.get_by_text("The outcome has been recorded.")).to_be_visible()
    await expect(page.locator("#outcome + .govuk-summary-list")).to_contain_text(
        "Child in need (section 17)"
    )
    await checked(page, await page.goto(web_world.url(PRIMARY, "/referrals")))
    await expect(page.locator("tbody")).to_contain_text("Outcome recorded")


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


async def test_a_dsl_on_a_phone_sends_a_leavers_file_and_checks_its_receipt(
    browser: Browser, web_world: WebWorld, tmp_path: Path
) -> None:
    """Issue 14's journey at 375 px, keyboard only, between the demo's two real nodes: mark
    Leon as leaving for Riverside Academy (found by its town with the form's own search), the KCSIE
    deadline at once, send with a fresh code, the outbox shows it delivered and then
    accepted (Riverside's DSL accepts through its API), and the signed receipt, its
    signature and Riverside's key download and Debian's ``minisign`` checks them."""
    context = await _context(browser, width=375)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "s.patel")
    await checked(page, await page.goto(web_world.url(PRIMARY, f"/pupils/{upn(102)}")))
    await _follow_link(page, "Mark as leaving")
    today = date.today()
    await _type(page, "Leaving date", f"{today.day}/{today.month}/{today.year}")
    await _type(page, "Find the school by name, town or URN", "keynsham")
    await _keyboard_submit(page, "Find schools")
    await page.get_by_label("Riverside Academy, Keynsham (URN 654321)").focus()
    await page.keyboard.press("Space")
    await _keyboard_submit(page, "Save")
    await expect(
        page.get_by_text("The leaving date and next school have been saved.")
    ).to_be_visible()
    await expect(page.locator("#leaving")).to_contain_text(
        re.compile(r"Due by \w+day \d+ \w+ \d{4}: within 5 school days of leaving")
    )
    await _follow_link(page, "Send the leaver's file")
    await expect(page.locator("main")).to_contain_text("Riverside Academy, Keynsham")
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
        minisign,
        *command.split()[1:],
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await run.communicate()
    assert run.returncode == 0, err.decode()
    assert f"handover-receipt-v1 accepted {package_id}" in out.decode()
    wide = await page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 375, wide
    await context.close()


async def _follow_link(page: Page, link: str) -> None:
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
        body = {
            "org": account["org"],
            "username": "a.khan",
            "password": account["password"],
            "totp": await web_world.codes.next(account["totp_secret"]),
        }
        async with http.post(f"{api}/session", json=body, ssl=ctx) as resp:
            assert resp.status in (200, 201), await resp.text()
            token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(120):  # delivered here a moment ago: in the inbox
            async with http.post(
                f"{api}/inbox/{package_id}/accept",
                json={"create_new": True},
                headers=headers,
                ssl=ctx,
            ) as resp:
                if resp.status != 404:
                    assert resp.status == 200, await resp.text()
                    return
            await asyncio.sleep(0.5)
        raise AssertionError("the file never reached Riverside's inbox")


# Last in the module: it changes Tom Wood's role in the shared world.
async def test_an_administrator_invites_changes_roles_and_imports_a_ctf(
    browser: Browser, web_world: WebWorld
) -> None:
    admin_ctx = await _context(browser, width=375)
    admin = await admin_ctx.new_page()
    await _sign_in(admin, web_world, PRIMARY, "admin")
    await _press(admin, "link", "Administration")
    await expect(admin).to_have_title("Staff accounts - Handover")
    await expect(admin.get_by_text("Sam Patel")).to_be_visible()
    await _narrow(admin)
    # Invite: a mistake first, then the person's name, username and role.
    await _press(admin, "button", "Invite someone")
    await _press(admin, "button", "Make the invitation link")
    await expect(admin).to_have_title(re.compile("^Error: Invite someone"))
    await _type_in(admin, "Full name", "Chris Lee")
    await _type_in(admin, "Username", "c.lee")
    await admin.get_by_label("Administrator", exact=True).focus()
    await admin.keyboard.press("Space")
    await admin.get_by_label("Staff", exact=True).focus()
    await admin.keyboard.press("Space")
    await _press(admin, "button", "Make the invitation link")
    await expect(admin.get_by_role("heading", level=1)).to_have_text("Invitation for Chris Lee")
    link = await admin.locator("#invitation-link").inner_text()
    assert "/invitation/hoi_" in link
    await _narrow(admin)

    # The invitee: their own password, then their authenticator app.
    invitee_ctx = await _context(browser, width=375)
    invitee = await invitee_ctx.new_page()
    await checked(invitee, await invitee.goto(link))
    await expect(invitee.get_by_text("Welcome, Chris Lee.")).to_be_visible()
    await _type_in(invitee, "Password", NEW_PASSWORD)
    await _type_in(invitee, "Password again", NEW_PASSWORD)
    await _press(invitee, "button", "Set my password")
    await expect(invitee).to_have_title("Set up your authenticator app - Handover")
    secret = (await invitee.locator("#totp-key").inner_text()).replace(" ", "")
    await _type_in(invitee, "Code from your authenticator app", pyotp.TOTP(secret).now())
    web_world.codes.used(secret)
    await _press(invitee, "button", "Continue")
    await expect(invitee.get_by_role("heading", level=1)).to_have_text("Save your recovery codes")
    # The link works once.
    again = await invitee.goto(link)
    assert again is not None and again.status == 410
    await checked(invitee, again)
    await invitee_ctx.close()

    # The administrator cannot give themselves the DSL role: no form, and refused by address.
    await checked(admin, await admin.goto(web_world.url(PRIMARY, "/admin/staff")))
    await _press(admin, "link", "Administrator")
    await expect(admin.get_by_text("Nobody can change their own roles")).to_be_visible()
    own_roles = admin.url + "/roles"
    csrf = await admin.locator("input[name=csrf]").first.get_attribute("value")
    refused = await admin.request.post(own_roles, form={"csrf": csrf or "", "roles": "dsl"})
    assert refused.status == 403
    assert "Nobody may change their own roles" in await refused.text()

    # A role change that needs a DSL: Tom Wood becomes a deputy DSL, waiting.
    await checked(admin, await admin.goto(web_world.url(PRIMARY, "/admin/staff")))
    await _press(admin, "link", "Tom Wood")
    for role in ("Deputy designated safeguarding lead", "Staff"):
        await admin.get_by_label(role, exact=True).focus()
        await admin.keyboard.press("Space")
    await _press(admin, "button", "Save roles")
    await expect(admin.get_by_text("This change is waiting for a DSL's approval.")).to_be_visible()

    # The DSL approves it in the browser.
    dsl_ctx = await _context(browser, width=375)
    dsl = await dsl_ctx.new_page()
    await _sign_in(dsl, web_world, PRIMARY, "s.patel")
    await _press(dsl, "link", "Administration")
    await expect(dsl).to_have_title("Account changes waiting for approval - Handover")
    await expect(
        dsl.get_by_text(re.compile("asked to change the roles of Tom Wood"))
    ).to_be_visible()
    await _press(dsl, "button", "Approve the change for Tom Wood")
    await expect(dsl.get_by_text("The change has been approved and made.")).to_be_visible()
    await _narrow(dsl)
    await dsl_ctx.close()

    # A CTF with a bad line: the line is shown and nothing is imported.
    await checked(admin, await admin.goto(web_world.url(PRIMARY, "/admin/staff")))
    await _press(admin, "link", "Pupils")
    bad = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<CTfile>\n  <Header>\n'
        "    <SourceSchool><LEA>801</LEA><Estab>2001</Estab></SourceSchool>\n"
        "  </Header>\n  <CTFpupilData>\n    <Pupil>\n      <UPN>A80120001400Q</UPN>\n"
        "    </Pupil>\n  </CTFpupilData>\n</CTfile>\n"
    )
    await admin.get_by_label("CTF file").set_input_files(
        {"name": "roll.xml", "mimeType": "application/xml", "buffer": bad.encode()}
    )
    await _press(admin, "button", "Import the file")
    await expect(admin).to_have_title(re.compile("^Error: Pupils"))
    await expect(admin.locator("#ctf-problems")).to_contain_text("Line 8")
    await expect(admin.locator("#ctf-error")).to_contain_text("Nothing was imported")
    await _narrow(admin)
    await admin_ctx.close()
