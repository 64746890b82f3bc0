"""The staff web app in Debian's Chromium against real ``handover serve`` processes.

Each journey as a person does it: sign-in with an authenticator code, first sign-in
setting up the authenticator, a recovery code instead of the phone, the slow-down in
plain words, a form kept over an expired session, the timeout warning, a step-up code
for an API token, a form without its CSRF token refused; at 375 px, keyboard only and
with JavaScript off. Every page visited is checked by :func:`checked` (headers, no
inline script or style, axe-core WCAG 2.2 A/AA). If Chromium cannot start, these fail.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pyotp
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.e2e.web.screenshots import capture
from tests.support.browser import WCAG, WebWorld, checked
from transfer.demo.world import run_cli

PRIMARY, SECONDARY = "primary", "secondary"


async def _context(browser: Browser, *, width: int = 1280, js: bool = True) -> BrowserContext:
    return await browser.new_context(
        viewport={"width": width, "height": 900},
        ignore_https_errors=True,
        java_script_enabled=js,
    )


async def _sign_in(
    page: Page, site: WebWorld, node: str, username: str, *, check: bool = True
) -> None:
    account = site.account(node, username)
    response = await page.goto(site.url(node, "/sign-in"))
    if check:
        await checked(page, response)
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(account["password"])
    code = await site.codes.next(account["totp_secret"])
    await page.get_by_label("Code from your authenticator app").fill(code)
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Sign in").click()
    if check:
        await checked(page, await nav.value)
    await expect(page).to_have_url(site.url(node, "/"))


async def _new_person(site: WebWorld, node: str, org: str, username: str, role: str) -> str:
    return await asyncio.to_thread(_create_person, site, node, org, username, role)


def _create_person(site: WebWorld, node: str, org: str, username: str, role: str) -> str:
    password = "blue harbour seven lanterns"
    import os

    os.environ["HANDOVER_PASSWORD"] = password
    try:
        run_cli(
            [
                "account",
                "create",
                "--data-dir",
                str(site.data_dirs[node]),
                "--org",
                org,
                "--user",
                username,
                "--name",
                username.title(),
                "--role",
                role,
            ]
        )
    finally:
        del os.environ["HANDOVER_PASSWORD"]
    return password


async def test_a_dsl_signs_in_and_sees_the_dashboard(browser: Browser, web_world: WebWorld) -> None:
    context = await _context(browser)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    # The node's root is the sign-in page now (not a JSON 404).
    response = await page.goto(web_world.url(PRIMARY, "/"))
    assert response is not None and response.status == 200
    await expect(page).to_have_url(web_world.url(PRIMARY, "/sign-in"))
    await _sign_in(page, web_world, PRIMARY, "s.patel")
    await expect(page).to_have_title("Home - Handover")
    banner = page.locator(".app-identity")
    await expect(banner).to_contain_text("Hillside Primary School")
    await expect(banner).to_contain_text("Sam Patel, Designated safeguarding lead")
    triage = page.locator("table", has_text="Neglect")
    await expect(triage).to_contain_text("Ellie Hughes (Year 6)")
    await expect(triage).to_contain_text("less than a minute")
    await expect(
        page.get_by_role("heading", name=re.compile("New concerns awaiting triage"))
    ).to_be_visible()
    await expect(page.locator("table", has_text="Check in with Amara")).to_contain_text("Overdue")
    await expect(page.get_by_text("For your security, you will be signed out at")).to_be_visible()
    # The session cookie: __Host-, HttpOnly, Secure, SameSite=Strict, Path=/, no expiry.
    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["__Host-handover_session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    assert session["path"] == "/" and session["expires"] == -1
    for path in ("/account", "/account/password", "/account/tokens/new"):
        await checked(page, await page.goto(web_world.url(PRIMARY, path)))
    missing = await page.goto(web_world.url(PRIMARY, "/pupils/not-a-page"))
    assert missing is not None and missing.status == 404
    await checked(page, missing)
    await expect(page.locator(".app-reference__id")).to_have_text(missing.headers["x-request-id"])
    # Static files: fingerprinted, immutable, compressed.
    css = page.locator("link[rel=stylesheet]").first
    href = await css.get_attribute("href")
    assert href and re.fullmatch(r"/static/[0-9a-f]{16}/govuk/govuk-frontend\.min\.css", href)
    asset = await context.request.get(
        web_world.url(PRIMARY, href), headers={"Accept-Encoding": "gzip, br"}
    )
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert asset.headers["content-encoding"] in ("br", "gzip")
    stale = await context.request.get(web_world.url(PRIMARY, href.replace("/static/", "/static/0")))
    assert stale.status == 404
    # The API and the portal keep their own answers.
    api = await context.request.get(web_world.url(PRIMARY, "/api/v1/no-such-route"))
    assert api.status == 404
    assert api.headers["content-type"].startswith("application/problem+json")
    portal = await context.request.get(web_world.url(PRIMARY, "/portal/"))
    assert portal.status == 200 and "style-src 'self'" in portal.headers["content-security-policy"]
    assert problems == [
        "Failed to load resource: the server responded with a status of 404 (Not Found)"
    ]
    await context.close()


async def test_first_sign_in_sets_up_the_authenticator_then_a_recovery_code_works(
    browser: Browser, web_world: WebWorld
) -> None:
    password = await _new_person(web_world, PRIMARY, "123456", "n.first", "administrator")
    context = await _context(browser)
    page = await context.new_page()
    await page.goto(web_world.url(PRIMARY, "/sign-in"))
    await page.get_by_label("Username").fill("n.first")
    await page.get_by_label("Password").fill(password)
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Sign in").click()
    await checked(page, await nav.value)
    await expect(page).to_have_url(web_world.url(PRIMARY, "/sign-in/authenticator"))
    # Nothing else is open until the authenticator is set up.
    await page.goto(web_world.url(PRIMARY, "/account"))
    await expect(page).to_have_url(web_world.url(PRIMARY, "/sign-in/authenticator"))
    await checked(page, await page.reload())
    qr = page.get_by_role("img", name="QR code to scan with your authenticator app")
    await expect(qr).to_be_visible()
    key = await page.locator("#totp-key").inner_text()
    assert re.fullmatch(r"([A-Z2-7]{4} ){7}[A-Z2-7]{4}", key), key
    secret = key.replace(" ", "")
    # A wrong code keeps the same key on the page.
    await page.get_by_label("Code from your authenticator app").fill("000000")
    await page.get_by_role("button", name="Continue").click()
    await expect(page).to_have_title(re.compile("^Error: Set up your authenticator app"))
    await expect(page.locator("#totp-key")).to_have_text(key)
    await page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).now())
    web_world.codes.used(secret)
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Continue").click()
    await checked(page, await nav.value)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Save your recovery codes")
    recovery = await page.locator("#recovery-codes li").all_inner_texts()
    assert len(recovery) == 10
    await page.get_by_role("button", name="I have saved my recovery codes").click()
    await expect(page).to_have_title("Home - Handover")
    await page.get_by_role("button", name="Sign out").first.click()
    await expect(page.get_by_text("You have signed out.")).to_be_visible()
    # Without the phone: a recovery code instead of the app's code.
    await page.get_by_label("Username").fill("n.first")
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Code from your authenticator app").fill(recovery[3])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_title("Home - Handover")
    await context.close()


async def test_failed_sign_ins_slow_down_in_plain_words(
    browser: Browser, web_world: WebWorld
) -> None:
    await _new_person(web_world, PRIMARY, "123456", "w.rong", "staff")
    context = await _context(browser)
    page = await context.new_page()
    await page.goto(web_world.url(PRIMARY, "/sign-in"))
    slow_down = re.compile(r"Too many failed attempts\. Wait \d+ seconds?, then try again\.")
    messages: list[str] = []
    # After 3 failures each attempt must wait 1 s, 2 s, 4 s, 8 s after the last one; on a
    # loaded machine a round trip can take more than the first waits, so try until the
    # wait is longer than a round trip, but stop before the 8th failure, which locks.
    for _ in range(7):
        await page.get_by_label("Username").fill("w.rong")
        await page.get_by_label("Password").fill("not the password at all")
        async with page.expect_navigation() as nav:
            await page.get_by_role("button", name="Sign in").click()
        messages.append(await page.locator(".govuk-error-summary__list").inner_text())
        if slow_down.fullmatch(messages[-1]):
            break
    await checked(page, await nav.value)
    wrong = "The username, password or code is not right. Check them and try again."
    assert messages[:3] == [wrong] * 3, messages
    assert slow_down.fullmatch(messages[-1]), messages
    await expect(page.get_by_label("Username")).to_have_value("w.rong")
    await expect(page.get_by_label("Password")).to_have_value("")
    await context.close()


async def test_keyboard_only_sign_in_on_a_phone(browser: Browser, web_world: WebWorld) -> None:
    account = web_world.account(PRIMARY, "r.clarke")
    context = await _context(browser, width=375)
    page = await context.new_page()
    await checked(page, await page.goto(web_world.url(PRIMARY, "/sign-in")))
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    await page.keyboard.press("Enter")
    for field, value in (
        ("Username", "r.clarke"),
        ("Password", account["password"]),
        ("Code from your authenticator app", await web_world.codes.next(account["totp_secret"])),
    ):
        for _ in range(6):
            await page.keyboard.press("Tab")
            if await page.get_by_label(field).evaluate("e => e === document.activeElement"):
                break
        await page.keyboard.type(value)
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)
    await expect(page).to_have_title("Home - Handover")
    await expect(page.locator(".app-identity")).to_contain_text("Rachel Clarke, Head teacher")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await expect(
        page.get_by_role("heading", name="The school's concerns, most recent first")
    ).to_be_visible()
    await context.close()


async def test_with_javascript_off_everything_works(browser: Browser, web_world: WebWorld) -> None:
    context = await _context(browser, js=False)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "t.wood", check=False)
    await expect(page).to_have_title("Home - Handover")
    assert "js-enabled" not in (await page.locator("body").get_attribute("class") or "")
    await expect(page.get_by_role("heading", name="Concerns you logged")).to_be_visible()
    await expect(page.locator("table", has_text="Amara Okafor")).to_contain_text("Under review")
    await expect(page.get_by_text("For your security, you will be signed out at")).to_be_visible()
    await page.goto(web_world.url(PRIMARY, "/account/password"))
    await page.get_by_role("button", name="Change password").click()
    await expect(page.locator(".govuk-error-summary")).to_contain_text(
        "Enter your current password"
    )
    await expect(page).to_have_title("Error: Change your password - Handover")
    await context.close()


async def test_an_expired_session_keeps_the_form(browser: Browser, web_world: WebWorld) -> None:
    """The secondary node signs people out after one idle minute."""
    context = await _context(browser, js=False)
    page = await context.new_page()
    await _sign_in(page, web_world, SECONDARY, "m.hughes", check=False)
    await page.goto(web_world.url(SECONDARY, "/account/tokens/new"))
    await page.get_by_label("Name").fill("Nightly pupil import")
    await page.get_by_label("Read pupils' details").check()
    await page.get_by_label("1 year").check()
    await asyncio.sleep(62)
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Continue").click()
    response = await nav.value
    assert response is not None
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to Handover")
    await expect(page.get_by_text("What you had typed has been kept")).to_be_visible()
    kept = await page.locator("input[name=kept_form]").get_attribute("value")
    assert kept and "Nightly" not in kept and "pupil" not in kept
    assert "Nightly" not in page.url and "kept" not in page.url
    account = web_world.account(SECONDARY, "m.hughes")
    await page.get_by_label("Username").fill("m.hughes")
    await page.get_by_label("Password").fill(account["password"])
    await page.get_by_label("Code from your authenticator app").fill(
        await web_world.codes.next(account["totp_secret"])
    )
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Create an API token")
    await expect(page.get_by_text("What you typed has been kept")).to_be_visible()
    await expect(page.get_by_label("Name")).to_have_value("Nightly pupil import")
    await expect(page.get_by_label("Read pupils' details")).to_be_checked()
    await expect(page.get_by_label("1 year")).to_be_checked()
    await context.close()


async def test_the_timeout_warning_lets_the_person_stay_signed_in(
    browser: Browser, web_world: WebWorld
) -> None:
    context = await _context(browser)
    page = await context.new_page()
    await _sign_in(page, web_world, SECONDARY, "l.brown", check=False)
    await checked(page, await page.reload())
    # One idle minute on this node: the warning comes after half of it.
    dialog = page.get_by_role("dialog", name="You are about to be signed out")
    await expect(dialog).to_be_hidden()
    await expect(dialog).to_be_visible(timeout=45_000)
    await expect(dialog.get_by_role("button", name="Stay signed in")).to_be_focused()
    results = await Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG}})
    assert results.violations_count == 0, results.generate_report()
    async with page.expect_response(lambda r: r.url.endswith("/session/keep-alive")) as kept:
        await dialog.get_by_role("button", name="Stay signed in").click()
    assert (await kept.value).status == 200
    await expect(dialog).to_be_hidden()
    await context.close()


async def test_an_api_token_needs_a_fresh_code(browser: Browser, web_world: WebWorld) -> None:
    account = web_world.account(PRIMARY, "j.okoro")
    context = await _context(browser, width=375)
    page = await context.new_page()
    await _sign_in(page, web_world, PRIMARY, "j.okoro")
    await page.goto(web_world.url(PRIMARY, "/account/tokens/new"))
    await page.get_by_label("Name").fill("Chronology reader")
    await page.get_by_label("Read chronologies").check()
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Continue").click()
    await checked(page, await nav.value)
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "Check the token before it is created"
    )
    await page.get_by_label("Code from your authenticator app").fill("123456")
    await page.get_by_role("button", name="Create the token").click()
    await expect(page.locator("#code-error")).to_contain_text("That code is not right")
    await page.get_by_label("Code from your authenticator app").fill(
        await web_world.codes.next(account["totp_secret"])
    )
    async with page.expect_navigation() as nav:
        await page.get_by_role("button", name="Create the token").click()
    await checked(page, await nav.value)
    token = await page.locator("#new-token").inner_text()
    assert token.startswith("hot_")
    api = await context.request.get(
        web_world.url(PRIMARY, "/api/v1/session"), headers={"Authorization": f"Bearer {token}"}
    )
    assert api.status == 200
    await page.goto(web_world.url(PRIMARY, "/account"))
    await page.get_by_role("button", name="Revoke Chronology reader").click()
    await expect(page.get_by_text("The API token has been revoked")).to_be_visible()
    api = await context.request.get(
        web_world.url(PRIMARY, "/api/v1/session"), headers={"Authorization": f"Bearer {token}"}
    )
    assert api.status == 401
    await context.close()


async def test_a_form_without_its_csrf_token_is_refused(
    browser: Browser, web_world: WebWorld
) -> None:
    context = await _context(browser)
    page = await context.new_page()
    await _sign_in(page, web_world, SECONDARY, "p.singh", check=False)
    refused = await context.request.post(
        web_world.url(SECONDARY, "/account/tokens/new"),
        form={"name": "sneaky", "scopes": "pupil.read", "lifetime": "30"},
    )
    assert refused.status == 403
    assert "not sent from a page of this service" in await refused.text()
    forged = await context.request.post(
        web_world.url(SECONDARY, "/sign-out"), form={"csrf": "0" * 64}
    )
    assert forged.status == 403
    await page.goto(web_world.url(SECONDARY, "/account"))
    await expect(page).to_have_title("Your account - Handover")
    await context.close()


async def test_screenshots_of_the_main_pages(
    browser: Browser, web_world: WebWorld, tmp_path: Path
) -> None:
    written = await capture(browser, web_world, tmp_path)
    assert {p.name for p in written} >= {
        "sign-in-desktop.png",
        "dashboard-dsl-phone.png",
        "dashboard-teacher-desktop.png",
    }
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
