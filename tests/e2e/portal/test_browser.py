"""The pickup portal in a real browser: Debian's chromium, headless, driven by Playwright.

The portal is served by a real aiohttp server on 127.0.0.1 and the link
arrives by e-mail through a real SMTP server (aiosmtpd). If chromium cannot
start, these tests fail; they are never skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright, expect

from receivers.portal import PortalSettings
from tests.support.browser import WCAG
from tests.support.portal import (
    AGENCY_EMAIL,
    CHROMIUM,
    CHROMIUM_ARGS,
    DOCUMENT,
    PortalWorld,
    portal_world,
    served,
    smtp_server,
)
from transfer.auth import CHEAPEST

_AXE = Axe()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


def _db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'portal.db'}"


async def _new_page(browser: Browser, *, phone: bool = False) -> tuple[Page, list[str]]:
    context = await browser.new_context(
        accept_downloads=True,
        viewport={"width": 375, "height": 812} if phone else {"width": 1280, "height": 900},
    )
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    return page, problems


async def _issue(world: PortalWorld) -> tuple[str | None, str]:
    path, _ = world.package()
    issued = await world.portal.create_pickup(
        world.dsl, package=path, referral_id="ref-1", email=AGENCY_EMAIL, agency_name="MASH"
    )
    return issued.link, issued.passcode


async def _sign_in(page: Page, link: str, passcode: str) -> None:
    await page.goto(link)
    await page.get_by_label("Passcode").fill(passcode)
    await page.get_by_role("button", name="Open the referral").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "Referral from Harbourside Primary"
    )


async def _accessible(page: Page) -> None:
    """axe-core finds no WCAG 2.2 A/AA violation on the page."""
    results = await _AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG}})
    assert results.violations_count == 0, f"{page.url}\n{results.generate_report()}"


async def test_full_pickup_on_a_phone(browser: Browser, tmp_path: Path) -> None:
    with smtp_server() as (inbox, port):
        async with portal_world(_db(tmp_path), tmp_path, smtp_port=port, inbox=inbox) as world:
            async with served(world):
                link, passcode = await _issue(world)
                assert link is None and len(inbox.messages) == 1
                page, problems = await _new_page(browser, phone=True)
                await page.goto(inbox.link())
                await expect(page).to_have_title("A referral from Harbourside Primary - Handover")
                await _accessible(page)
                await expect(page.get_by_text("Harbourside Primary has sent MASH")).to_be_visible()
                await page.get_by_label("Passcode").fill(passcode)
                await page.get_by_role("button", name="Open the referral").click()
                await expect(page.get_by_role("heading", level=1)).to_have_text(
                    "Referral from Harbourside Primary"
                )
                await _accessible(page)
                # The referral as the agency reads it: the form's sections in order, labels
                # and values in words, dates as dates, the chosen records as redacted.
                assert await page.locator("section.part h2").all_inner_texts() == [
                    "Reason for referral and risk",
                    "The child",
                    "Family and household",
                    "What is known",
                    "Consent",
                    "The school's contact",
                ]
                child = page.locator("section", has=page.get_by_role("heading", name="The child"))
                await expect(child.locator(".row", has_text="Date of birth")).to_contain_text(
                    "1 May 2016"
                )
                consent = page.locator("section", has=page.get_by_role("heading", name="Consent"))
                await expect(consent).to_contain_text(
                    "Not sought: seeking consent would put the child at greater risk of harm"
                )
                await expect(
                    page.get_by_role("heading", name="Concern, 7 September 2026")
                ).to_be_visible()
                await expect(page.get_by_text("Ellie was quiet in class")).to_be_visible()
                # Works on a phone: nothing wider than the screen.
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 375
                # The stylesheet loaded under the CSP (computed style from portal.css).
                colour = await page.evaluate(
                    "getComputedStyle(document.querySelector('.top')).backgroundColor"
                )
                assert colour == "rgb(29, 45, 68)"
                # On paper: the referral alone, black on white; no navigation, forms, buttons.
                await page.emulate_media(media="print")
                for hidden in (".top", ".bottom", "form", "button", ".documents"):
                    for element in await page.locator(hidden).all():
                        await expect(element).to_be_hidden()
                await expect(page.get_by_role("heading", name="The child")).to_be_visible()
                painted = await page.evaluate(
                    "[...document.querySelectorAll('body, body *')].filter(e => "
                    "!['rgba(0, 0, 0, 0)', 'transparent'].includes("
                    "getComputedStyle(e).backgroundColor)).length"
                )
                assert painted == 0
                await page.emulate_media(media="screen")
                # By keyboard: Tab from the top reaches "Download the referral as a PDF", with
                # a visible focus, and Enter downloads it.
                await page.locator("body").focus()
                for _ in range(10):
                    await page.keyboard.press("Tab")
                    if await page.evaluate("document.activeElement.textContent") == (
                        "Download the referral as a PDF"
                    ):
                        break
                assert await page.evaluate("document.activeElement.textContent") == (
                    "Download the referral as a PDF"
                )
                outline = await page.evaluate(
                    "getComputedStyle(document.activeElement).outlineStyle"
                )
                assert outline == "solid"
                async with page.expect_download() as info:
                    await page.keyboard.press("Enter")
                pdf = await info.value
                assert pdf.suggested_filename.startswith("referral-")
                saved_pdf = await pdf.path()
                assert saved_pdf.read_bytes().startswith(b"%PDF-")
                async with page.expect_download() as info:
                    await page.get_by_role("link", name="Download body-map.pdf").click()
                download = await info.value
                assert download.suggested_filename == "body-map.pdf"
                saved = await download.path()
                assert saved.read_bytes() == DOCUMENT
                await page.get_by_label("Your name").fill("Sam Jones")
                await page.get_by_label("Your agency's reference").fill("MASH-2026-0042")
                await page.get_by_role("button", name="Acknowledge receipt").click()
                await expect(page.get_by_role("status")).to_contain_text("Thank you")
                await expect(
                    page.get_by_text("Receipt was acknowledged by Sam Jones")
                ).to_be_visible()
                assert problems == []
                assert world.acks.calls[0]["reference"] == "MASH-2026-0042"
                info_ = await world.portal.get_pickup(world.dsl, world.pickup_ids()[0])
                assert [e.kind for e in info_.events] == [
                    "created",
                    "emailed",
                    "opened",
                    "printed",
                    "download",
                    "acknowledged",
                ]
                assert info_.events[3].ip == info_.events[4].ip == "127.0.0.1"


async def test_an_empty_acknowledgement_names_its_fields(browser: Browser, tmp_path: Path) -> None:
    async with portal_world(_db(tmp_path), tmp_path) as world:
        async with served(world):
            link, passcode = await _issue(world)
            assert link
            page, _ = await _new_page(browser)
            await _sign_in(page, link, passcode)
            await page.get_by_role("button", name="Acknowledge receipt").click()
            await expect(page.get_by_role("alert")).to_contain_text("Enter your name.")
            name = page.get_by_label("Your name")
            await expect(name).to_have_attribute("aria-invalid", "true")
            await expect(name).to_have_attribute("aria-describedby", "name-error")
            await expect(page.locator("#name-error")).to_have_text("Enter your name.")
            assert world.acks.calls == []


async def test_keyboard_only_acknowledgement(browser: Browser, tmp_path: Path) -> None:
    async with portal_world(_db(tmp_path), tmp_path) as world:
        async with served(world):
            link, passcode = await _issue(world)
            assert link
            page, _ = await _new_page(browser)
            await page.goto(link)
            # Sign in with the keyboard too: Tab to the passcode, type, Enter.
            for _ in range(10):
                await page.keyboard.press("Tab")
                if await page.evaluate("document.activeElement.id") == "passcode":
                    break
            await page.keyboard.type(passcode)
            await page.keyboard.press("Enter")
            await expect(page.get_by_role("heading", level=1)).to_have_text(
                "Referral from Harbourside Primary"
            )
            focused = ""
            for _ in range(30):
                await page.keyboard.press("Tab")
                focused = await page.evaluate("document.activeElement.id")
                if focused == "name":
                    break
            assert focused == "name"
            outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline == "solid"  # the keyboard focus is visible
            await page.keyboard.type("Alex Rivera")
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.id") == "reference"
            await page.keyboard.type("LADO-17")
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.textContent") == (
                "Acknowledge receipt"
            )
            await page.keyboard.press("Enter")
            await expect(page.get_by_role("status")).to_contain_text("Thank you")
            assert world.acks.calls[0]["name"] == "Alex Rivera"


async def test_links_that_do_not_work(browser: Browser, tmp_path: Path) -> None:
    async with portal_world(_db(tmp_path), tmp_path) as world:
        async with served(world) as base:
            page, _ = await _new_page(browser)
            good, _ = await _issue(world)
            assert good
            # Tampered (one character changed) and unknown: the same plain page.
            token = good.split("?t=", 1)[1]
            tampered = good[:-1] + ("A" if token[-1] != "A" else "B")
            pages = []
            for url in (tampered, f"{base}/portal/open?t={'Q' * 43}", f"{base}/portal/open"):
                response = await page.goto(url)
                assert response is not None and response.status == 404
                pages.append(await page.locator("main").inner_text())
            assert len(set(pages)) == 1 and "This link is not valid" in pages[0]
            # Revoked.
            await world.portal.revoke(world.dsl, world.pickup_ids()[0])
            response = await page.goto(good)
            assert response is not None and response.status == 410
            await expect(page.get_by_role("heading", level=1)).to_have_text(
                "This link has been withdrawn"
            )
            # Expired.
            later, _ = await _issue(world)
            assert later
            world.node.clock.advance(days=7, seconds=1)
            response = await page.goto(later)
            assert response is not None and response.status == 410
            await expect(page.get_by_role("heading", level=1)).to_have_text("This link has expired")


async def test_wrong_passcodes_lock_the_link(browser: Browser, tmp_path: Path) -> None:
    async with portal_world(_db(tmp_path), tmp_path) as world:
        async with served(world):
            link, passcode = await _issue(world)
            assert link
            page, _ = await _new_page(browser)
            await page.goto(link)
            for left in (4, 3, 2, 1):
                await page.get_by_label("Passcode").fill("123-123-123-123")
                await page.get_by_role("button", name="Open the referral").click()
                error = page.locator("#passcode-error")
                await expect(error).to_contain_text(f"{left} more tr")
                await expect(page.get_by_label("Passcode")).to_have_attribute(
                    "aria-invalid", "true"
                )
            await page.get_by_label("Passcode").fill("999-999-999-999")
            await page.get_by_role("button", name="Open the referral").click()
            await expect(page.get_by_role("heading", level=1)).to_have_text("This link is locked")
            # Even the right passcode does not open it now.
            await page.goto(link)
            await expect(page.get_by_role("heading", level=1)).to_have_text("This link is locked")
            actions = world.node.audit.actions()
            assert actions.count("portal.passcode_failed") == 5
            assert actions.count("portal.locked") == 1
            assert passcode  # never used


async def test_totp_enrolment_then_sign_in_with_it(browser: Browser, tmp_path: Path) -> None:
    async with portal_world(_db(tmp_path), tmp_path) as world:
        async with served(world):
            first, passcode = await _issue(world)
            assert first
            page, problems = await _new_page(browser)
            await _sign_in(page, first, passcode)
            await page.get_by_role("link", name="Set up an authenticator app").click()
            await expect(
                page.get_by_role("img", name="QR code for your authenticator app")
            ).to_be_visible()
            secret = (await page.locator("code.secret").inner_text()).strip()
            totp = pyotp.TOTP(secret)
            await page.get_by_label("Code from the app").fill("000000")
            await page.get_by_role("button", name="Finish setting up").click()
            await expect(page.locator("#code-error")).to_contain_text("not right")
            # After a wrong code the page shows the same secret (the app already has it).
            assert (await page.locator("code.secret").inner_text()).strip() == secret
            await page.get_by_label("Code from the app").fill(totp.at(world.node.clock.now))
            await page.get_by_role("button", name="Finish setting up").click()
            await expect(page.get_by_role("status")).to_contain_text("authenticator app is set up")
            await expect(
                page.get_by_role("link", name="Set up an authenticator app")
            ).to_have_count(0)
            # A second referral to the same address: sign in with the app, no passcode.
            second, _ = await _issue(world)
            assert second
            world.node.next_step()
            await page.goto(second)
            await page.get_by_label("Code from your authenticator app").fill(
                totp.at(world.node.clock.now)
            )
            await page.get_by_role("button", name="Sign in with the app code").click()
            await expect(page.get_by_role("heading", level=1)).to_have_text(
                "Referral from Harbourside Primary"
            )
            # The same code again (replay) is refused.
            other, _ = await _issue(world)
            assert other
            await page.goto(other)
            await page.get_by_label("Code from your authenticator app").fill(
                totp.at(world.node.clock.now)
            )
            await page.get_by_role("button", name="Sign in with the app code").click()
            await expect(page.locator("#totp-error")).to_contain_text("not right")
            # Wrong codes answer 400/401 (logged by chromium); nothing else went wrong.
            assert [p for p in problems if "Failed to load resource" not in p] == []
            assert "portal.totp_enrolled" in world.node.audit.actions()


async def test_replacing_the_authenticator_needs_the_old_app(
    browser: Browser, tmp_path: Path
) -> None:
    with smtp_server() as (inbox, port):
        async with portal_world(_db(tmp_path), tmp_path, smtp_port=port, inbox=inbox) as world:
            async with served(world):
                _, passcode = await _issue(world)
                page, problems = await _new_page(browser)
                await _sign_in(page, inbox.link(), passcode)
                await page.get_by_role("link", name="Set up an authenticator app").click()
                agency_app = pyotp.TOTP((await page.locator("code.secret").inner_text()).strip())
                await page.get_by_label("Code from the app").fill(
                    agency_app.at(world.node.clock.now)
                )
                await page.get_by_role("button", name="Finish setting up").click()
                await expect(page.get_by_role("status")).to_contain_text("is set up")
                world.node.next_step()
                # Someone with only the next referral's passcode tries to put their own app in.
                _, passcode = await _issue(world)
                other, _ = await _new_page(browser)
                await _sign_in(other, inbox.link(), passcode)
                await other.get_by_role("link", name="Replace the authenticator app").click()
                await expect(other.get_by_role("heading", level=1)).to_have_text(
                    "Replace your authenticator app"
                )
                shown = (await other.locator("code.secret").inner_text()).strip()
                theirs = pyotp.TOTP(shown)
                await other.get_by_label("Code from the new app").fill(
                    theirs.at(world.node.clock.now)
                )
                await other.get_by_role("button", name="Replace the app").click()
                await expect(other.locator("#current-error")).to_contain_text(
                    "app this address uses now"
                )
                await expect(other.get_by_label("Code from the app you use now")).to_have_attribute(
                    "aria-invalid", "true"
                )
                # The form keeps the same new secret (already scanned), and still needs the
                # code from the agency's app.
                assert (await other.locator("code.secret").inner_text()).strip() == shown
                await other.get_by_label("Code from the app you use now").fill("000000")
                await other.get_by_label("Code from the new app").fill(
                    theirs.at(world.node.clock.now)
                )
                await other.get_by_role("button", name="Replace the app").click()
                await expect(other.locator("#current-error")).to_contain_text("4 more tries")
                # The agency, with its own app, moves to a new one.
                await other.get_by_label("Code from the app you use now").fill(
                    agency_app.at(world.node.clock.now)
                )
                await other.get_by_label("Code from the new app").fill(
                    theirs.at(world.node.clock.now)
                )
                await other.get_by_role("button", name="Replace the app").click()
                await expect(other.get_by_role("status")).to_contain_text(
                    "the old one no longer works"
                )
                subjects = [str(m["Subject"]) for m in inbox.messages]
                assert subjects[-1] == "Your Handover authenticator app was replaced"
                assert "Your Handover authenticator app was set up" in subjects
                assert [p for p in problems if "Failed to load resource" not in p] == []
                assert world.node.audit.actions().count("portal.totp_replace_failed") == 1


async def test_acknowledging_closes_the_link(browser: Browser, tmp_path: Path) -> None:
    settings = PortalSettings(passcode_cost=CHEAPEST, ack_grace_minutes=0)
    async with portal_world(_db(tmp_path), tmp_path, settings=settings) as world:
        async with served(world) as base:
            link, passcode = await _issue(world)
            assert link
            page, _ = await _new_page(browser)
            await _sign_in(page, link, passcode)
            await expect(page.locator("#ack-closes")).to_contain_text(
                "When you acknowledge, this link closes"
            )
            await page.get_by_label("Your name").fill("Sam Jones")
            await page.get_by_label("Your agency's reference").fill("MASH-2026-0042")
            await page.get_by_role("button", name="Acknowledge receipt").click()
            await expect(page.get_by_role("heading", level=1)).to_have_text("Receipt acknowledged")
            await expect(page.get_by_text("This link is now closed")).to_be_visible()
            response = await page.goto(f"{base}/portal/referral")
            assert response is not None and response.status == 401
            response = await page.goto(link)
            assert response is not None and response.status == 410
            await expect(page.get_by_role("heading", level=1)).to_have_text("This link is closed")
            response = await page.goto(f"{base}/portal/documents/0")
            assert response is not None and response.status == 401


async def test_the_stated_grace_after_acknowledging(browser: Browser, tmp_path: Path) -> None:
    async with portal_world(_db(tmp_path), tmp_path) as world:
        async with served(world):
            link, passcode = await _issue(world)
            assert link
            page, _ = await _new_page(browser)
            await _sign_in(page, link, passcode)
            await expect(page.locator("#ack-closes")).to_contain_text(
                "keeps working for 15 minutes so you can finish downloading"
            )
            await page.get_by_label("Your name").fill("Sam Jones")
            await page.get_by_label("Your agency's reference").fill("MASH-2026-0042")
            await page.get_by_role("button", name="Acknowledge receipt").click()
            await expect(page.get_by_role("status")).to_contain_text("Thank you")
            await expect(page.locator(".done")).to_contain_text("This link closes at")
            world.node.clock.advance(minutes=15)
            await page.reload()
            await expect(page.get_by_role("heading", level=1)).to_have_text("This link is closed")
