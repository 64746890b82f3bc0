"""The web app in Debian's Chromium (Playwright) against real ``handover serve`` processes.

The world is the demo's (:mod:`transfer.demo.scenario`): two school nodes built as an
operator builds them, the demo people (everyone's authenticator enrolled) and a
chronology, ``web.json`` written, both nodes started as ``handover serve`` subprocesses.
The secondary node runs with a one-minute idle timeout, for the expiry tests.

Every page a test visits goes through :func:`checked`: the response's headers (CSP,
no-store...), no inline script or style, and axe-core (WCAG 2.2 A/AA) finds nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, Response

from tests.support.portal import CHROMIUM, CHROMIUM_ARGS
from transfer.web.rendering import CSP

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "WCAG", "Codes", "WebWorld", "checked"]

WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
PAGE_HEADERS = {
    "content-security-policy": CSP,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "strict-transport-security": "max-age=31536000",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
_AXE = Axe()


class Codes:
    """Authenticator codes as a phone gives them, never one the node has seen already
    (a code is accepted once): the current or the next step (within the node's allowed
    drift), in order, else wait for the next step."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    async def next(self, secret: str) -> str:
        while True:
            now = int(time.time()) // 30
            # The demo enrolled each person with the previous step's code: start at the current.
            step = max(self._last.get(secret, now - 1) + 1, now - 1)
            if step <= now + 1:
                self._last[secret] = step
                return pyotp.TOTP(secret).at(step * 30)
            await asyncio.sleep(1)

    def used(self, secret: str, at: float | None = None) -> None:
        """Note a code the node accepted outside this helper (typed by a test)."""
        step = int(at if at is not None else time.time()) // 30
        self._last[secret] = max(self._last.get(secret, step), step)


@dataclass
class WebWorld:
    root: Path
    data: dict[str, Any]
    data_dirs: dict[str, Path]
    codes: Codes = field(default_factory=Codes)

    def node(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(n for n in self.data["nodes"] if n["name"] == name)
        return found

    def url(self, name: str, path: str = "") -> str:
        return str(self.node(name)["url"]).rstrip("/") + path

    def account(self, name: str, username: str) -> dict[str, Any]:
        found: dict[str, Any] = next(
            a for a in self.node(name)["accounts"] if a["username"] == username
        )
        return found

    @classmethod
    def load(cls, root: Path, data_dirs: dict[str, Path]) -> WebWorld:
        return cls(root, json.loads((root / "web.json").read_text()), data_dirs)


async def checked(page: Page, response: Response | None, *, axe: bool = True) -> None:
    """The page's headers are the pages' headers, it has no inline script or style, and
    axe-core finds no WCAG 2.2 A/AA violation."""
    assert response is not None
    headers = await response.all_headers()
    for name, value in PAGE_HEADERS.items():
        assert headers.get(name) == value, f"{page.url}: {name} is {headers.get(name)!r}"
    assert headers.get("content-type") == "text/html; charset=utf-8"
    assert headers.get("x-request-id")
    inline = await page.evaluate(
        "() => ({styles: document.querySelectorAll('[style]').length,"
        " styleTags: document.querySelectorAll('style').length,"
        " inlineScripts: [...document.scripts].filter(s => !s.src).length,"
        " handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes]"
        ".some(a => a.name.startsWith('on'))).length})"
    )
    assert inline == {"styles": 0, "styleTags": 0, "inlineScripts": 0, "handlers": 0}, page.url
    assert await page.locator("h1").count() == 1, page.url
    if axe:
        results = await _AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG}})
        assert results.violations_count == 0, f"{page.url}\n{results.generate_report()}"
