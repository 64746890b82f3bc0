"""The API on a real socket (aiohttp's TestServer) over the store on each engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.unit.auth.support import URN, Node, Person, open_node
from transfer.api import create_app
from transfer.config import Config, ServerSection

MAX_BODY = 64 * 1024
MAX_UPLOAD = 2 * 1024 * 1024


@dataclass
class Api:
    node: Node
    client: TestClient[web.Request, web.Application]
    data_dir: Path

    async def sign_in(self, person: Person, org: str = URN) -> dict[str, str]:
        """Sign ``person`` in through the API; the Authorization header for their session."""
        body: dict[str, str] = {
            "org": org,
            "username": person.username,
            "password": person.password,
        }
        if person.secret:
            body["totp"] = person.code(self.node.clock.now)
            self.node.next_step()
        resp = await self.client.post("/api/v1/session", json=body)
        assert resp.status == 201, await resp.text()
        data = await resp.json()
        assert data["state"] == "signed_in"
        return {"Authorization": f"Bearer {data['token']}"}


def api_config() -> Config:
    return Config(server=ServerSection(max_body_bytes=MAX_BODY, max_upload_bytes=MAX_UPLOAD))


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with open_node(db_url, tmp_path / "data") as node:
        app = create_app(
            store=node.store,
            accounts=node.accounts,
            audit=node.audit,
            config=api_config(),
            exports_dir=tmp_path / "exports",
        )
        async with TestClient(TestServer(app)) as client:
            yield Api(node=node, client=client, data_dir=tmp_path / "data")
