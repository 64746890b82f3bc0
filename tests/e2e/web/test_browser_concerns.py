"""Logging a concern and the alerts in Debian's Chromium against real ``handover serve``
processes (issue 13, items 3 and 7): at 375 px with the keyboard only, with JavaScript
off (the pupil found with the search form, the body map from the region list, a mistake
kept), with a click on the body map, and the DSL's bell and alerts page. Every page
visited goes through :func:`checked` (headers, no inline script or style, axe-core WCAG
2.2 A/AA)."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from playwright.async_api import Browser, Locator, Page, expect

from tests.e2e.web.test_browser import PRIMARY, _context, _sign_in
from tests.support.browser import WebWorld, checked


async def _tab_to(page: Page, target: Locator, *, limit: int = 80) -> None:
    """Press Tab until ``target`` has the focus (as a keyboard user moves through a page)."""
    for _ in range(limit):
        if await target.evaluate("e => e === document.activeElement"):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"could not reach {target} with the Tab key")


async def _enter(page: Page) -> None:
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)


async def test_log_a_concern_on_a_phone_with_the_keyboard_only(
    browser: Browser, web_world: WebWorld
) -> None:
    context = await _context(browser, width=375)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "t.wood")
    # "Log a concern" comes first on a teacher's home page.
    await _tab_to(page, page.locator("main a.govuk-button--start"))
    await _enter(page)
    await expect(page).to_have_title("Log a concern - Handover")
    await _tab_to(page, page.get_by_label("Find a pupil by name or UPN"))
    await page.keyboard.type("okafor")
    await _enter(page)
    await _tab_to(page, page.get_by_role("link", name=re.compile("Select Amara Okafor")))
    await _enter(page)
    await expect(page.get_by_label(re.compile("Amara Okafor"))).to_be_checked()
    # Into the radio group with Tab, then along it with the arrow keys.
    await _tab_to(page, page.locator("input[name=category]").first)
    await page.keyboard.press("Space")
    bullying = page.get_by_label("Bullying")
    for _ in range(20):
        if await bullying.is_checked():
            break
        await page.keyboard.press("ArrowDown")
    await expect(bullying).to_be_checked()
    await _tab_to(page, page.get_by_label("Where did it happen? (optional)"))
    await page.keyboard.type("Cloakroom")
    await _tab_to(page, page.get_by_label("What did you see or hear?"))
    await page.keyboard.type("Amara said an older pupil took her coat and pushed her.")
    where = page.locator("#mark_1_where")
    await _tab_to(page, where)
    await page.keyboard.type("Chest")
    await expect(where).to_have_value("front-chest")
    await _tab_to(page, page.locator("#mark_1_note"))
    await page.keyboard.type("Red mark, 2 cm")
    await _tab_to(page, page.get_by_role("button", name="Save the concern"))
    await _enter(page)
    await expect(page).to_have_title("Concern logged - Handover")
    await expect(page.locator(".govuk-summary-list")).to_contain_text("Cloakroom")
    await expect(page.locator("main")).to_contain_text("Chest: Red mark, 2 cm")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await context.close()


async def test_log_a_concern_with_javascript_off(browser: Browser, web_world: WebWorld) -> None:
    context = await _context(browser, js=False)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "t.wood", check=False)
    # axe-core cannot run with scripts off: the same pages go through it in the tests
    # with JavaScript on; here the headers and the absence of inline script and style.
    await checked(page, await page.goto(web_world.url(PRIMARY, "/concerns/new")), axe=False)
    await expect(page.locator("#bodymap-help")).to_be_hidden()
    await page.get_by_label("Find a pupil by name or UPN").fill("Leon")
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Find pupil").click()
    await checked(page, await nav.value, axe=False)
    async with page.expect_navigation() as nav:
        await page.get_by_role("link", name=re.compile("Select Leon Nowak")).click()
    await checked(page, await nav.value, axe=False)
    # A second pupil, found with the form again, keeps the first.
    await page.get_by_label("Find a pupil by name or UPN").fill("Yusuf")
    await page.get_by_role("button", name="Find pupil").click()
    await page.get_by_role("link", name=re.compile("Select Yusuf Begum")).click()
    await expect(page.get_by_label(re.compile("Leon Nowak"))).to_be_checked()
    await expect(page.get_by_label(re.compile("Yusuf Begum"))).to_be_checked()
    # A mistake: no account, a date in the future. Everything typed comes back.
    await page.get_by_label("Online safety").check()
    await page.get_by_label("Year", exact=True).fill("2099")
    await page.get_by_label("Where did it happen? (optional)").fill("ICT suite")
    await page.locator("#mark_1_where").select_option(label="Left hand (palm)")
    await page.locator("#mark_1_pupil").select_option(index=1)  # Yusuf, chosen second
    await page.locator("#mark_1_note").fill("Small cut")
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Save the concern").click()
    await checked(page, await nav.value, axe=False)
    await expect(page).to_have_title("Error: Log a concern - Handover")
    summary = page.locator(".govuk-error-summary")
    await expect(summary).to_contain_text("The date and time it happened must be in the past")
    await expect(summary).to_contain_text("Enter what you saw or were told")
    await expect(page.get_by_label("Where did it happen? (optional)")).to_have_value("ICT suite")
    await expect(page.locator("#mark_1_where")).to_have_value("front-left-hand")
    await expect(page.get_by_label("Online safety")).to_be_checked()
    await page.get_by_label("Year", exact=True).fill("2026")
    await page.get_by_label("Month", exact=True).fill("1")
    await page.get_by_label("What did you see or hear?").fill("Both shared a video of a pupil.")
    sent = await page.evaluate(
        "() => [...new FormData(document.querySelector('.app-concern-form'))]"
    )
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Save the concern").click()
    await checked(page, await nav.value, axe=False)
    await expect(page).to_have_title("Concern logged - Handover")
    main = page.locator("main")
    await expect(main).to_contain_text("Leon Nowak")
    await expect(main).to_contain_text("Left hand (palm): Small cut (Yusuf Begum)")
    # The same form sent again (a second press, a resubmit): the same concern, not another.
    again = await context.request.post(
        web_world.url(PRIMARY, "/concerns/new"),
        data=urlencode([(k, v) for k, v in sent]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert again.ok and again.url == page.url
    await context.close()


async def test_pupils_suggested_as_you_type_and_a_click_on_the_body_map(
    browser: Browser, web_world: WebWorld
) -> None:
    context = await _context(browser)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    await _sign_in(page, web_world, PRIMARY, "t.wood", check=False)
    await checked(page, await page.goto(web_world.url(PRIMARY, "/concerns/new")))
    # Suggested as the name is typed, without sending the search form.
    await page.get_by_label("Find a pupil by name or UPN").press_sequentially("Mia T", delay=50)
    suggested = page.get_by_role("link", name=re.compile("Select Mia Taylor"))
    await expect(suggested).to_be_visible()
    assert page.url == web_world.url(PRIMARY, "/concerns/new")
    await suggested.click()
    await expect(page.locator("#bodymap-help")).to_be_visible()
    back = page.locator("svg[data-side=back]")
    box = await back.bounding_box()
    assert box is not None
    await back.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.3})
    where = page.locator("#mark_1_where")
    await expect(where).to_have_value(re.compile(r"^back@0\.5\d*,0\.3\d*$"))
    await expect(page.locator("#mark_1_note")).to_be_focused()
    await page.keyboard.type("Bruise between the shoulder blades")
    await expect(back.locator(".app-bodymap__mark")).to_have_count(1)
    await page.get_by_label("Behaviour").check()
    await page.get_by_label("What did you see or hear?").fill("Noticed while changing for PE.")
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Save the concern").click()
    await checked(page, await nav.value)
    await expect(page.locator("main")).to_contain_text("Bruise between the shoulder blades")
    await expect(page.locator("main svg[data-side=back] .app-bodymap__mark")).to_have_count(1)
    assert problems == []
    await context.close()


async def test_the_dsl_sees_the_bell_and_the_alerts(browser: Browser, web_world: WebWorld) -> None:
    context = await _context(browser, width=375)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "s.patel")
    bell = page.locator("a.app-bell")
    await expect(bell).to_contain_text(re.compile(r"Alerts \d+ open"))
    async with page.expect_navigation() as nav:
        await bell.click()
    await checked(page, await nav.value)
    await expect(page).to_have_title("Alerts - Handover")
    assert "/api/v1/" not in await page.locator("main").inner_text()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await context.close()
