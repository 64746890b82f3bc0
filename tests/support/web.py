"""The web app in-process (aiohttp's TestServer) over a test node on each engine, with a
browser-like client: it keeps cookies, reads the CSRF token from each page's forms and
posts forms as a browser does."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from keys.keyfiles import KeyFiles
from keys.sealing import KekProtection
from tests.unit.auth.support import KEK, URN, Node, Person, open_node
from transfer.alerts import Alerts
from transfer.alerts.rules import StoreAlerts
from transfer.api import create_app
from transfer.config import Config, SecuritySection, ServerSection, SmtpSection, TransferSection
from transfer.directory.administration import KeyAdministration
from transfer.directory.service import Directory
from transfer.exchange.deadlines_sweep import DeadlineSweep
from transfer.mail import Mailer
from transfer.web import WebServices

WEB_KEY = bytes(range(100, 132))
_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"')


@dataclass
class Page:
    status: int
    text: str
    headers: Any
    url: str

    def hidden(self, name: str) -> str:
        for key, value in _HIDDEN.findall(self.text):
            if key == name:
                return html.unescape(value)
        raise AssertionError(f"no hidden field {name!r} on {self.url}")

    @property
    def title(self) -> str:
        found = re.search(r"<title>(.*?)</title>", self.text, re.S)
        return html.unescape(found.group(1)) if found else ""


@dataclass
class Site:
    node: Node
    client: TestClient[web.Request, web.Application]

    async def _page(self, resp: ClientResponse) -> Page:
        text = await resp.text()
        return Page(resp.status, text, resp.headers, str(resp.url))

    async def get(self, path: str, *, follow: bool = True) -> Page:
        async with self.client.get(path, allow_redirects=follow) as resp:
            return await self._page(resp)

    async def post(
        self, path: str, data: list[tuple[str, str]] | dict[str, str], *, follow: bool = True
    ) -> Page:
        async with self.client.post(path, data=data, allow_redirects=follow) as resp:
            return await self._page(resp)

    async def sign_in(self, person: Person, *, code: str | None = None) -> Page:
        page = await self.get("/sign-in")
        if code is None and person.secret:
            code = person.code(self.node.clock.now)
            self.node.next_step()
        return await self.post(
            "/sign-in",
            {
                "csrf": page.hidden("csrf"),
                "org": URN,
                "username": person.username,
                "password": person.password,
                "code": code or "",
            },
        )


def web_config(idle_minutes: int = 15) -> Config:
    return Config(
        security=SecuritySection(session_idle_minutes=idle_minutes),
        server=ServerSection(max_body_bytes=1024 * 1024),
    )


def wire_alerts(node: Node) -> Alerts:
    """The node's alerts, raised as the store's data changes (``transfer.node``'s wiring)."""
    from tests.integration.alerts.test_alerts import FakeOutbox

    alerts = Alerts(node.store, Mailer(SmtpSection()))
    deadlines = DeadlineSweep(
        node.store, alerts, FakeOutbox(), TransferSection(), data_dir=node.data_dir
    )
    StoreAlerts(node.store, alerts, deadlines, base_url="https://node.example").attach()
    return alerts


async def key_admin_for(node: Node) -> KeyAdministration:
    """The school's keys (made now) and the node's directory, as ``serve`` gives the pages."""
    store = KeyFiles(node.data_dir / "keys", KekProtection(KEK), audit=node.audit, clock=node.clock)
    await store.create(URN)
    directory = Directory(node.store, keys=store, base_url="https://node.example")
    return KeyAdministration(node.store, store, directory)


@asynccontextmanager
async def site_for(
    db_url: str,
    tmp_path: Path,
    *,
    idle_minutes: int = 15,
    alerts: bool = False,
    keys: bool = False,
) -> AsyncIterator[Site]:
    async with open_node(db_url, tmp_path / "data") as node:
        config = web_config(idle_minutes)
        key_admin = await key_admin_for(node) if keys else None
        node.accounts.security = config.security
        app = create_app(
            store=node.store,
            accounts=node.accounts,
            audit=node.audit,
            config=config,
            web_pages=WebServices(
                store=node.store,
                accounts=node.accounts,
                config=config,
                audit=node.audit,
                web_key=WEB_KEY,
                alerts=wire_alerts(node) if alerts else None,
                key_admin=key_admin,
            ),
        )
        async with TestClient(TestServer(app)) as client:
            yield Site(node, client)


__all__ = ["URN", "Page", "Site", "key_admin_for", "site_for", "web_config"]
