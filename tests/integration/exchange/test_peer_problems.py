"""The peer server's errors come from the staff API's problem middleware: the same types
(``too-large``, not ``http-413``), and a bare 500 for anything unexpected."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.exchange.inbox_support import Rig, receiving_node
from transfer.api.problems import MEDIA_TYPE, ProblemEdge, problem_middleware
from transfer.errors import OutOfSpaceError


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        yield r


async def test_an_unexpected_error_in_a_peer_route_is_a_bare_500_problem(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*_args: Any, **_kw: Any) -> Any:
        raise RuntimeError("internal detail /srv/secret-path")

    monkeypatch.setattr(rig.inbox, "offer", boom)
    pupil = await rig.make_pupil_file()
    built, data = await rig.build(pupil)
    pid = str(built.manifest.package_id)
    status, body, headers = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data))
    assert status == 500
    assert headers["Content-Type"].startswith(MEDIA_TYPE)
    assert body["type"] == "urn:handover:problem:internal-error"
    text = json.dumps(body)
    assert "secret" not in text and "RuntimeError" not in text
    rid = {k.lower(): v for k, v in headers.items()}["x-request-id"]
    assert body["instance"] == f"urn:handover:request:{rid}"
    assert len(rig.events("api.error", "failed")) == 1


async def _client(
    handler: Any, crashes: list[str]
) -> tuple[TestClient[web.Request, web.Application], TestServer]:
    async def crashed(_request: web.Request, rid: str) -> None:
        crashes.append(rid)

    def noticed(_request: web.Request, _err: OutOfSpaceError, _rid: str) -> None:
        return None

    edge = ProblemEdge(data_dir=lambda _r: "/nonexistent", out_of_space=noticed, crashed=crashed)
    app = web.Application(middlewares=[problem_middleware(edge)])
    app.router.add_post("/x", handler)
    server = TestServer(app)
    client = TestClient(server)
    await client.start_server()
    return client, server


async def test_the_shared_middleware_names_a_too_large_body_and_hides_a_crash() -> None:
    async def too_large(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPRequestEntityTooLarge(max_size=1, actual_size=2)

    async def crash(_request: web.Request) -> web.StreamResponse:
        raise ValueError("do not show this")

    crashes: list[str] = []
    for handler, status, slug in ((too_large, 413, "too-large"), (crash, 500, "internal-error")):
        client, _ = await _client(handler, crashes)
        try:
            resp = await client.post("/x", data=b"{}")
            doc = await resp.json(content_type=None)
            assert (resp.status, doc["type"]) == (status, f"urn:handover:problem:{slug}")
            assert "do not show" not in json.dumps(doc)
        finally:
            await client.close()
    assert len(crashes) == 1
