"""Helpers of the receiving journey (in ``test_browser_casework.py``, to share its
served world). Receiving a file in Debian's Chromium against two real ``handover serve`` processes
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
from typing import Any

import aiohttp
from playwright.async_api import Page, expect

from tests.e2e.web.test_browser import SECONDARY
from tests.support.browser import WebWorld, checked
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
            signed = await self._send(
                "POST",
                "/session",
                {
                    "org": RIVERSIDE[0],
                    "username": "a.khan",
                    "password": account["password"],
                    "totp": await self.world.codes.next(account["totp_secret"]),
                },
            )
            self.token = signed["token"]
        self.last = time.monotonic()
        return await self._send(method, path, body)

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(
            method, self.base + path, json=body, headers=headers, ssl=self.ssl
        ) as resp:
            data = await resp.json(content_type=None)
            assert resp.status < 400, (method, path, resp.status, data)
            return data

    async def pupil(self, serial: int, forename: str, surname: str, dob: str) -> str:
        made = await self.call(
            "POST",
            "/pupils",
            {
                "upn": upn(serial),
                "surname": surname,
                "forename": forename,
                "dob": dob,
                "sex": "F",
                "year_group": "7",
            },
        )
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


async def go(page: Page, name: str, *, role: str = "link", axe: bool = True) -> None:
    """Follow a link or press a button with the keyboard (focus, then Enter)."""
    await page.get_by_role(role, name=name, exact=True).focus()  # type: ignore[arg-type]
    async with page.expect_navigation() as nav:
        await page.keyboard.press("Enter")
    await checked(page, await nav.value, axe=axe)


async def to_inbox(page: Page, *, axe: bool = True) -> None:
    """The inbox from the menu (behind its button on a phone)."""
    toggle = page.locator(".govuk-service-navigation__toggle")
    if await toggle.is_visible():
        await toggle.focus()
        await page.keyboard.press("Enter")
    await go(page, "Inbox", axe=axe)


async def accept_into_amara(page: Page, *, axe: bool = True) -> str:
    """From the inbox: the newest file, read, then accepted into Amara on the roll (each
    page axe-checked the first time)."""
    await to_inbox(page, axe=axe)
    await go(page, f"Amara Okafor, born 14 March 2015 (file from {RIVERSIDE[2]})", axe=axe)
    await expect(page.locator(".app-timeline")).to_contain_text(ACCOUNT)
    await expect(page.locator(".app-timeline")).to_contain_text("recorded by Aisha Khan (DSL)")
    await go(page, "Accept this file", role="button", axe=axe)
    choice = page.get_by_label(re.compile(r"Amara Okafor, Year 6, UPN"))
    await expect(page.get_by_text("Same UPN; same name and date of birth.")).to_be_visible()
    await choice.focus()
    await page.keyboard.press("Space")
    await go(page, "Accept the file", role="button", axe=axe)
    await expect(page.locator("h1")).to_have_text("File accepted")
    return await page.locator("#import-result").inner_text()
