"""The pickup page as the agency reads it, and its "Download as PDF": the same sections,
labels and values in the same order, only in a passcode-unlocked session on an open link,
recorded like a view, never cached."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
from pypdf import PdfReader

from receivers.portal import PortalSettings
from tests.support.portal import AGENCY_EMAIL, PortalWorld, portal_world, served
from transfer.auth import CHEAPEST


class _Reading(HTMLParser):
    """The referral's text on the page, in order: the lead, then in each section of the
    referral its heading, notes, group titles, labels and values."""

    WANTED = frozenset({"h2", "h3", "dt", "dd", "p"})

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, str]] = []
        self._depth = 0  # inside <section class="part">
        self._open: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "section" and "part" in classes:
            self._depth += 1
        elif tag == "section" and self._depth:
            self._depth += 1
        if (self._depth and tag in self.WANTED) or (tag == "p" and "lead" in classes):
            self._open, self._text = tag, []

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self.items.append((tag, " ".join("".join(self._text).split())))
            self._open = None
        if tag == "section" and self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._open:
            self._text.append(data)


def _page_items(html: str) -> list[tuple[str, str]]:
    """``(tag, text)`` of the referral's items on the page, in order."""
    reading = _Reading()
    reading.feed(html)
    return [(tag, text) for tag, text in reading.items if text]


def _pdf_text(pdf: bytes) -> str:
    """The PDF's text without each page's heading and footer, whitespace collapsed."""
    out = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        lines = page.extract_text().splitlines()
        kept = [
            line
            for line in lines
            if not line.startswith(("Harbourside Primary · ", "Printed by "))
            and not re.fullmatch(r"Page \d+ of \d+", line.strip())
        ]
        out.append(" ".join(kept))
    return " ".join(" ".join(out).split())


async def _issue(world: PortalWorld, agency: str | None = "Bristol MASH") -> tuple[str, str]:
    path, _ = world.package()
    issued = await world.portal.create_pickup(
        world.dsl, package=path, referral_id="ref-1", email=AGENCY_EMAIL, agency_name=agency
    )
    assert issued.link
    return issued.link, issued.passcode


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, name
    return found.group(1)


async def _sign_in(http: aiohttp.ClientSession, base: str, link: str, passcode: str) -> str:
    async with http.get(link) as resp:
        page = await resp.text()
    form = {
        "t": _field(page, "t"),
        "csrf": _field(page, "csrf"),
        "method": "passcode",
        "passcode": passcode,
    }
    async with http.post(f"{base}/portal/open", data=form) as resp:
        assert resp.status == 200 and str(resp.url).endswith("/portal/referral")
        return await resp.text()


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_the_pdf_says_what_the_page_says_in_the_same_order(tmp_path: Path) -> None:
    async with portal_world(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", tmp_path) as world:
        async with served(world) as base, _session() as http:
            link, passcode = await _issue(world)
            page = await _sign_in(http, base, link, passcode)
            tagged = _page_items(page)
            items = [text for _, text in tagged]
            # The page reads as the form: sections in order, labels and values in words.
            assert [text for tag, text in tagged if tag == "h2"] == [
                "Reason for referral and risk",
                "The child",
                "Family and household",
                "What is known",
                "Consent",
                "The school's contact",
            ]
            assert "1 May 2016" in items and "Date of birth" in items
            assert (
                "Not sought: seeking consent would put the child at greater risk of harm" in items
            )
            assert "Concern, 7 September 2026" in items
            assert "Recorded by" in items and "Jo Reed (member of staff)" in items
            assert not re.search(r"\b(Dob|Gp|greater_risk|social_care)\b", page)
            assert items[0].startswith(
                "Referral to children's social care (MASH) from Harbourside Primary, about "
                "Ellie Marsh. Sent "
            )
            assert 'href="/portal/referral.pdf"' in page

            async with http.get(f"{base}/portal/referral.pdf") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "application/pdf"
                assert resp.headers["Cache-Control"] == "no-store"
                assert resp.headers["Content-Disposition"].startswith(
                    'attachment; filename="referral-'
                )
                pdf = await resp.read()
            text = _pdf_text(pdf)
            reader = PdfReader(io.BytesIO(pdf))
            assert reader.metadata is not None
            assert reader.metadata.title == "Referral to children's social care (MASH)"
            first = reader.pages[0].extract_text()
            assert "Printed by mash.team@bristol.example.org (Bristol MASH) on " in first
            # Every item of the page, in the page's order, is in the PDF's text.
            position = 0
            for item in items:
                found = text.find(item, position)
                assert found >= 0, f"{item!r} is not in the PDF after {text[position:][:200]!r}"
                position = found + len(item)
            # Seen as a PDF: in the receipt trail and the audit log, without content.
            info = await world.portal.get_pickup(world.dsl, world.pickup_ids()[0])
            assert [e.kind for e in info.events] == ["created", "opened", "printed"]
            printed = [e for e in world.node.audit.events if e.action == "portal.printed"]
            assert len(printed) == 1 and printed[0].outcome == "ok"
            assert "Ellie" not in repr(printed[0]) and "Ellie" not in repr(info.events)


async def test_the_pdf_needs_the_passcode_session_and_an_open_link(
    db_url: str, tmp_path: Path
) -> None:
    settings = PortalSettings(passcode_cost=CHEAPEST, ack_grace_minutes=15)
    async with portal_world(db_url, tmp_path, settings=settings) as world:
        async with served(world) as base:
            link, passcode = await _issue(world, agency=None)
            # No session: refused (a plain page, nothing of the referral).
            async with _session() as stranger, stranger.get(f"{base}/portal/referral.pdf") as r:
                assert r.status == 401 and r.headers["Content-Type"].startswith("text/html")
                assert "Please open your link again" in await r.text()
            async with _session() as http:
                # Only the link, not signed in: refused.
                async with http.get(link) as resp:
                    assert resp.status == 200
                async with http.get(f"{base}/portal/referral.pdf") as resp:
                    assert resp.status == 401
                page = await _sign_in(http, base, link, passcode)
                async with http.get(f"{base}/portal/referral.pdf") as resp:
                    assert resp.status == 200 and (await resp.read()).startswith(b"%PDF-")
                # Acknowledged: the PDF still comes during the grace, like the page...
                ack = {"name": "Sam Jones", "reference": "MASH-1", "csrf": _field(page, "csrf")}
                async with http.post(f"{base}/portal/acknowledge", data=ack) as resp:
                    assert resp.status == 200
                async with http.get(f"{base}/portal/referral.pdf") as resp:
                    assert resp.status == 200
                # ... and not once the link has closed.
                world.node.clock.advance(minutes=15)
                async with http.get(f"{base}/portal/referral.pdf") as resp:
                    assert resp.status == 410 and "This link is closed" in await resp.text()
            # A withdrawn link ends the sessions open on it: refused.
            link, passcode = await _issue(world, agency=None)
            async with _session() as http:
                await _sign_in(http, base, link, passcode)
                await world.portal.revoke(world.dsl, world.pickup_ids()[-1])
                async with http.get(f"{base}/portal/referral.pdf") as resp:
                    assert resp.status == 401
                    assert "Please open your link again" in await resp.text()
            printed = [e for e in world.node.audit.events if e.action == "portal.printed"]
            assert len(printed) == 2  # the two PDFs given, no refused one


async def test_signing_out_ends_the_pdf_too(tmp_path: Path) -> None:
    async with portal_world(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", tmp_path) as world:
        async with served(world) as base, _session() as http:
            link, passcode = await _issue(world)
            page = await _sign_in(http, base, link, passcode)
            out = {"csrf": re.findall(r'name="csrf" value="([^"]*)"', page)[-1]}
            async with http.post(f"{base}/portal/sign-out", data=out) as resp:
                assert resp.status == 200 and "You have signed out" in await resp.text()
            # The old cookie, sent again by hand: refused.
            async with http.get(f"{base}/portal/referral.pdf") as resp:
                assert resp.status == 401
