"""Receiving a file in Debian's Chromium against two real ``handover serve`` processes
(the demo's world): Riverside Academy sends a pupil's file through its staff API (its
sending pages are another area's), Hillside Primary's DSL, at 375 px and with the
keyboard only, finds it in the inbox, reads the concern in the preview, accepts it into
the pupil already on the roll and sees the records in the chronology with where they
came from; the file sent again adds nothing (the page says the records were already
held); another file is rejected with a reason, and Riverside's outbox record carries
that reason in the signed receipt. Every page through :func:`checked` (headers, no
inline script or style, axe-core WCAG 2.2 A/AA)."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
from playwright.async_api import Browser, Page, expect

from tests.web.browser_support import WebWorld, checked
from tests.web.test_browser import PRIMARY, SECONDARY, _context, _sign_in
from transfer.demo.scenario import PRIMARY as HILLSIDE
from transfer.demo.scenario import SECONDARY as RIVERSIDE
from transfer.demo.scenario import upn

ACCOUNT = (
    "Amara told her form tutor she is frightened of her uncle's friend and does not want "
    "to go home at weekends."
)
REASON = "Mia Taylor has never been on our roll: please check the destination."


class Riverside:
    """Riverside Academy's DSL on the staff API over HTTPS (signed in afresh when needed:
    the secondary node's sessions end after a minute of quiet)."""

    def __init__(self, world: WebWorld, http: aiohttp.ClientSession) -> None:
        self.world, self.http = world, http
        self.ssl = ssl.create_default_context(cafile=world.node(SECONDARY)["ca_file"])
        self.base = world.url(SECONDARY, "/api/v1")
        self.token = ""
        self.last = 0.0

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if time.monotonic() - self.last > 30:
            account = self.world.account(SECONDARY, "a.khan")
            signed = await self._send("POST", "/session", {
                "org": RIVERSIDE[0], "username": "a.khan", "password": account["password"],
                "totp": await self.world.codes.next(account["totp_secret"]),
            })  # fmt: skip
            self.token = signed["token"]
        self.last = time.monotonic()
        return await self._send(method, path, body)

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers,
                                     ssl=self.ssl) as resp:  # fmt: skip
            data = await resp.json(content_type=None)
            assert resp.status < 400, (method, path, resp.status, data)
            return data

    async def pupil(self, serial: int, forename: str, surname: str, dob: str) -> str:
        made = await self.call("POST", "/pupils", {
            "upn": upn(serial), "surname": surname, "forename": forename, "dob": dob,
            "sex": "F", "year_group": "7",
        })  # fmt: skip
        return str(made["id"])

    async def send(self, pupil_id: str, reason: str | None = None) -> str:
        body = {"pupil_id": pupil_id, "to_org_id": HILLSIDE[0]}
        if reason:
            body["reason"] = reason
        sent = await self.call("POST", "/outbox/leaver-files", body)
        return str(sent["id"])

    async def until(self, package_id: str, *states: str, within: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            record: dict[str, Any] = await self.call("GET", f"/outbox/{package_id}")
            if record["state"] in states:
                return record
            assert time.monotonic() < deadline, (package_id, record["state"], states)
            await asyncio.sleep(0.5)


async def _go(page: Page, name: str, *, role: str = "link") -> None:
    """Follow a link or press a button with the keyboard (focus, then Enter)."""
    await page.get_by_role(role, name=name, exact=True).focus()  # type: ignore[arg-type]
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value)


async def _inbox(page: Page) -> None:
    """The inbox from the menu (behind its button on a phone)."""
    toggle = page.locator(".govuk-service-navigation__toggle")
    if await toggle.is_visible():
        await toggle.focus()
        await page.keyboard.press("Enter")
    await _go(page, "Inbox")


async def _accept_into_amara(page: Page) -> str:
    """From the inbox: the newest file, read, then accepted into Amara on the roll."""
    await _inbox(page)
    await _go(page, f"Amara Okafor, born 14 March 2015 (file from {RIVERSIDE[2]})")
    await expect(page.locator(".app-timeline")).to_contain_text(ACCOUNT)
    await expect(page.locator(".app-timeline")).to_contain_text("recorded by Aisha Khan (DSL)")
    await _go(page, "Accept this file", role="button")
    choice = page.get_by_label(re.compile(r"Amara Okafor, Year 6, UPN"))
    await expect(page.get_by_text("Same UPN; same name and date of birth.")).to_be_visible()
    await choice.focus()
    await page.keyboard.press("Space")
    await _go(page, "Accept the file", role="button")
    await expect(page.locator("h1")).to_have_text("File accepted")
    return await page.locator("#import-result").inner_text()


async def test_a_dsl_receives_reads_accepts_and_rejects_files_by_keyboard_on_a_phone(
    browser: Browser, web_world: WebWorld
) -> None:
    async with aiohttp.ClientSession() as http:
        riverside = Riverside(web_world, http)
        # Riverside's file about Amara (who left them for Hillside, where she is on roll).
        amara = await riverside.pupil(101, "Amara", "Okafor", "2015-03-14")
        await riverside.call("PATCH", f"/pupils/{amara}", {
            "leaving_date": date.today().isoformat(),
            "destination": {"kind": "school", "urn": HILLSIDE[0], "name": HILLSIDE[2]},
        })  # fmt: skip
        concern = await riverside.call("POST", "/concerns", {
            "pupil_ids": [amara], "category": "child_protection", "location": "Form room",
            "happened_at": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
            "account": ACCOUNT,
        })  # fmt: skip
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
        done = await _accept_into_amara(page)
        imported = re.search(r"(\d+) records imported, 0 already held", done)
        assert imported and int(imported.group(1)) >= 2, done  # the concern and its triage
        wide = await page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= 375, wide
        await _go(page, "See Amara Okafor, Year 6's chronology")
        received = page.locator(".app-timeline__item", has_text=ACCOUNT)
        await expect(received).to_contain_text(f"Received from {RIVERSIDE[2]} on")
        await expect(page.locator(".app-timeline")).to_contain_text(
            "Triage decision: Refer to children's social care"
        )

        # Sent again (with the reason a second sending needs): nothing is imported twice.
        again = await riverside.send(amara, "Sent again after a query from Hillside.")
        await riverside.until(again, "delivered")
        done = await _accept_into_amara(page)
        # (What is new is only the sender's own notes about sending the file the first time.)
        assert re.search(rf"^\d+ records? imported, {imported.group(1)} already held", done), done
        await _go(page, "See Amara Okafor, Year 6's chronology")
        await expect(page.locator(".app-timeline__item", has_text=ACCOUNT)).to_have_count(1)

        # Another file, rejected with a reason (first without one: the form says so).
        mia = await riverside.pupil(130, "Mia", "Taylor", "2014-09-30")
        other = await riverside.send(mia, "Mia's family asked us to send her file.")
        await riverside.until(other, "delivered")
        await _inbox(page)
        await _go(page, f"Mia Taylor, born 30 September 2014 (file from {RIVERSIDE[2]})")
        await _go(page, "Reject this file", role="button")
        await _go(page, "Reject the file", role="button")
        await expect(page).to_have_title(re.compile("^Error: Reject this file"))
        await page.get_by_label("Why are you rejecting it?").focus()
        await page.keyboard.type(REASON)
        await _go(page, "Reject the file", role="button")
        await expect(page.get_by_text("The file has been rejected.")).to_be_visible()
        await expect(page.locator("tbody tr").first).to_contain_text("Rejected")
        wide = await page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= 375, wide
        await context.close()

        record = await riverside.until(other, "rejected")
        reasons = [r["reason"] for r in record["receipts"] if r["kind"] == "rejected"]
        assert reasons == [REASON], record["receipts"]
        assert (await riverside.until(again, "accepted"))["state"] == "accepted"
