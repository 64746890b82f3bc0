"""Screenshots of the web app's main pages, desktop (1280 px) and phone (375 px).

``make screenshots`` runs this module: it builds the demo's world (two schools, their
people, a chronology), serves it with real ``handover serve`` processes, signs in as the
demo people in Chromium and writes PNGs to ``docs/screenshots/``. The browser tests call
:func:`capture` too, so the pages photographed are the pages tested.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, WebWorld
from transfer.demo.scenario import upn

WIDTHS = {"desktop": 1280, "phone": 375}
#: Stands for the page of Amara's first concern (its id is only known once seeded).
CONCERN = "/concerns/first"


async def sign_in(page: Page, site: WebWorld, node: str, username: str) -> None:
    account = site.account(node, username)
    await page.goto(site.url(node, "/sign-in"))
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(account["password"])
    for attempt in range(2):
        code = await site.codes.next(account["totp_secret"])
        await page.get_by_label("Code from your authenticator app").fill(code)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_load_state()
        if page.url == site.url(node, "/") or attempt:
            break
        # The node took this step's code already (another sign-in of the same person in
        # this 30-second step): like a person, type the next code the phone shows.
        await page.get_by_label("Password").fill(account["password"])
    await page.wait_for_url(site.url(node, "/"))


async def _log_a_concern(page: Page, site: WebWorld, node: str, out: Path, kind: str) -> list[Path]:
    """The log-a-concern page: a pupil found, a mistake shown, then filled in and saved."""
    shots = []

    async def shot(name: str) -> None:
        target = out / f"{name}-{kind}.png"
        await page.screenshot(path=target, full_page=True)
        shots.append(target)

    await page.goto(site.url(node, "/concerns/new?q=Okafor"))
    await shot("find-a-pupil")
    await page.get_by_role("link", name=re.compile("Select Amara Okafor")).click()
    await page.get_by_label("Bullying").check()
    await page.get_by_label("Where did it happen? (optional)").fill("Cloakroom, after lunch")
    account = page.get_by_label("What did you see or hear?")
    await account.fill(
        "Amara was crying by the pegs. She said an older pupil took her coat and pushed "
        "her against the wall."
    )
    await page.get_by_label("Who else was involved or there? (optional)").fill(
        "Two Year 6 pupils; Mrs Shah (teaching assistant)"
    )
    front = page.locator("svg[data-side=front]")
    box = await front.bounding_box()
    if box is not None:
        await front.click(position={"x": box["width"] * 0.77, "y": box["height"] * 0.3})
        await page.keyboard.type("Red mark on the upper arm, about 3 cm")
    await page.locator("#mark_2_where").select_option("back-upper")
    await page.locator("#mark_2_note").fill("Graze, fresh")
    await shot("log-a-concern")
    kept = await account.input_value()
    await account.fill("")
    await page.get_by_role("button", name="Save the concern").click()
    await shot("log-a-concern-error")
    await page.get_by_label("What did you see or hear?").fill(kept)
    await page.get_by_role("button", name="Save the concern").click()
    await page.wait_for_url(re.compile(r".*/concerns/[^/]+/saved$"))
    await shot("concern-logged")
    return shots


async def capture(browser: Browser, site: WebWorld, out: Path) -> list[Path]:
    """Photograph the main pages into ``out`` (an existing folder); the files written."""
    written: list[Path] = []
    shots = [
        (
            "primary",
            "s.patel",
            [
                ("dashboard-dsl", "/"),
                ("account", "/account"),
                ("api-token", "/account/tokens/new"),
                ("alerts", "/alerts"),
                ("pupil", f"/pupils/{upn(101)}"),
                ("concern", CONCERN),
                ("triage", CONCERN + "/triage"),
                ("search", "/search?q=Amara"),
                ("leaving", f"/pupils/{upn(101)}/leaving"),
                ("outbox", "/outbox"),
                ("inbox", "/inbox"),
                ("requests", "/requests"),
                ("referrals", "/referrals"),
                ("reports", "/reports"),
            ],
        ),
        ("primary", "d.price", [("audit", "/audit"), ("audit-integrity", "/audit/integrity")]),
        (
            "primary",
            "t.wood",
            [("dashboard-teacher", "/"), ("change-password", "/account/password")],
        ),
        (
            "primary",
            "admin",
            [
                ("dashboard-administrator", "/"),
                ("admin-staff", "/admin/staff"),
                ("admin-organisation", "/admin/organisation"),
            ],
        ),
    ]
    for kind, width in WIDTHS.items():
        context = await browser.new_context(
            viewport={"width": width, "height": 900}, ignore_https_errors=True
        )
        page = await context.new_page()
        await page.goto(site.url("primary", "/sign-in"))
        target = out / f"sign-in-{kind}.png"
        await page.screenshot(path=target, full_page=True)
        written.append(target)
        await context.close()
        for node, username, pages in shots:
            context = await browser.new_context(
                viewport={"width": width, "height": 900}, ignore_https_errors=True
            )
            page = await context.new_page()
            await sign_in(page, site, node, username)
            for name, path in pages:
                if path.startswith(CONCERN):
                    # Amara's first concern, as a person reaches it: from her chronology.
                    await page.goto(site.url(node, f"/pupils/{upn(101)}"))
                    link = page.locator(".app-timeline__title a").first
                    href = await link.get_attribute("href")
                    assert href is not None
                    path = href + path.removeprefix(CONCERN)
                await page.goto(site.url(node, path))
                target = out / f"{name}-{kind}.png"
                await page.screenshot(path=target, full_page=True)
                written.append(target)
            if username == "t.wood":
                written += await _log_a_concern(page, site, node, out, kind)
            await context.close()
    return written


async def _main(out: Path, root: Path) -> int:
    from transfer.demo import scenario

    world = await asyncio.to_thread(scenario.build, root)
    try:
        seeded = await scenario.seed(world)
        scenario.write_web_json(world, seeded, root / "web.json")
        await asyncio.to_thread(world.start)
        site = WebWorld.load(root, {n: w.data_dir for n, w in world.nodes.items()})
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                written = await capture(browser, site, out)
            finally:
                await browser.close()
    finally:
        world.stop()
    for path in written:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/screenshots"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        root.mkdir(mode=0o700)
        return asyncio.run(_main(args.out, root))


if __name__ == "__main__":
    sys.exit(main())
