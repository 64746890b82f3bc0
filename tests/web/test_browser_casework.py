"""Casework in Debian's Chromium against real ``handover serve`` processes (the demo's
world): a DSL at 375 px, keyboard only, finds a pupil by search, reads her chronology,
opens a concern, records a triage decision, adds an action, marks it done and changes
the concern's text; every page through :func:`checked` (headers, no inline script or
style, axe-core WCAG 2.2 A/AA). A teacher cannot reach the DSL's pages by address. A DSL
makes a referral in the wizard and the MASH picks it up by its link and passcode."""

from __future__ import annotations

import re
import ssl

from playwright.async_api import Browser, Page, expect

from tests.web.browser_support import WebWorld, checked
from tests.web.test_browser import PRIMARY, _context, _sign_in
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
    await expect(page.locator(".app-as-sent")).to_contain_text("[redacted]")
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
    wide = await page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 375, wide
    await context.close()
