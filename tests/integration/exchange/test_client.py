"""The signed peer client against a real aiohttp server on 127.0.0.1: signing and blame."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from schemas.directory import DirectoryEntry
from tests.integration.exchange.outbox_support import StaticDirectory
from transfer.config import Config
from transfer.httpsig import check_digest, verify_request
from transfer.transport.base import NoEndpointError, PeerRefused, PeerUnavailable
from transfer.transport.http import PeerClient

KEK = bytes(range(32))


@asynccontextmanager
async def server(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client_for(
    tmp_path: Path,
    app: web.Application,
    endpoint: str | None = None,
    box: dict[str, str] | None = None,
) -> AsyncIterator[tuple[PeerClient, KeySet, StaticDirectory]]:
    keys = KeyFiles(tmp_path / "keys", KekProtection(KEK))
    own = await keys.create("199001")
    async with server(app) as url:
        if box is not None:
            box["url"] = url
        directory = StaticDirectory()
        directory.add(own, "Harbourside", None)
        directory.add(KeySet.generate("199002"), "Cliff Road", endpoint or url)
        client = PeerClient(keys=keys, directory=directory, config=Config())
        try:
            yield client, own, directory
        finally:
            await client.close()


def _app(handler: Handler) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/peer/v1/{tail:.*}", handler)
    return app


async def test_every_request_is_signed_over_method_uri_and_digest(tmp_path: Path) -> None:
    seen: list[tuple[str, str, bytes]] = []
    keys_by_id: dict[str, bytes] = {}
    box: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        verified = verify_request(
            request.method,
            box["url"] + request.path_qs,
            request.headers,
            public_key_for=lambda kid: keys_by_id[kid],
            now=int(time.time()),
        )
        check_digest(request.headers["Content-Digest"], verified.content_sha256 or body)
        seen.append((request.method, verified.key_id, body))
        return web.json_response({"ok": True, "echo": json.loads(body) if body else None})

    async with client_for(tmp_path, _app(handler), box=box) as (client, own, _):
        keys_by_id[own.key_id_hex] = own.minisign_public_key.key
        got = await client.request_json("199001", "199002", "POST", "/peer/v1/x", {"a": 1})
        assert got == {"ok": True, "echo": {"a": 1}}
        assert await client.request_json("199001", "199002", "GET", "/peer/v1/y?z=1") == {
            "ok": True,
            "echo": None,
        }
    assert [(m, k) for m, k, _ in seen] == [("POST", own.key_id_hex), ("GET", own.key_id_hex)]


@pytest.mark.parametrize(
    ("status", "error", "retry"),
    [
        (400, PeerRefused, False),
        (403, PeerRefused, False),
        (409, PeerRefused, False),
        (413, PeerRefused, False),
        (422, PeerRefused, False),
        (429, PeerUnavailable, True),
        (500, PeerUnavailable, True),
        (503, PeerUnavailable, True),
    ],
)
async def test_answers_are_split_by_blame(
    tmp_path: Path, status: int, error: type[Exception], retry: bool
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"title": "No", "status": status, "detail": "because\x00 of\nreasons", "offset": 7},
            status=status,
            content_type="application/problem+json",
        )

    async with client_for(tmp_path, _app(handler)) as (client, _, _d):
        with pytest.raises(error) as info:
            await client.request_json("199001", "199002", "POST", "/peer/v1/x", {})
    err = info.value
    assert f"({status} No: because  of reasons)" in str(err)
    if isinstance(err, PeerRefused):
        assert err.status == status and err.problem["offset"] == 7 and err.http_status == 422


async def test_unreachable_not_json_and_bad_endpoints(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="<html>proxy page</html>", content_type="text/html")

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with client_for(tmp_path, _app(handler), endpoint=dead) as (client, _, directory):
        with pytest.raises(PeerUnavailable, match="cannot reach 199002"):
            await client.request_json("199001", "199002", "GET", "/peer/v1/x")
    async with client_for(tmp_path / "b", _app(handler)) as (client, _, directory):
        with pytest.raises(PeerUnavailable, match="not JSON"):
            await client.request_json("199001", "199002", "GET", "/peer/v1/x")
        directory.add(KeySet.generate("199004"), "Far away", "http://203.0.113.9:8443")
        with pytest.raises(NoEndpointError, match="not https"):
            await client.request_json("199001", "199004", "GET", "/peer/v1/x")
        directory.add(KeySet.generate("199005"), "No node", None)
        with pytest.raises(NoEndpointError, match="no Handover node"):
            await client.request_json("199001", "199005", "GET", "/peer/v1/x")


async def test_an_endpoint_is_looked_up_again_after_a_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery's requests share one look-up of where the peer is; a moved node is found
    again once the few seconds are over; an unusable endpoint is never kept."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async with client_for(tmp_path, _app(handler)) as (client, _, directory):
        looked = []
        entry = directory.entry

        async def counting(org_id: str) -> DirectoryEntry:
            looked.append(org_id)
            return await entry(org_id)

        monkeypatch.setattr(directory, "entry", counting)
        clock = [1000.0]
        monkeypatch.setattr("transfer.transport.http._clock", lambda: clock[0])
        first = await client.endpoint_of("199002")
        for _ in range(3):
            assert await client.request_json("199001", "199002", "GET", "/peer/v1/x") == {
                "ok": True
            }
        assert looked == ["199002"]
        directory.add(KeySet.generate("199002"), "Cliff Road", "https://127.0.0.1:1")
        clock[0] += 4.9
        assert await client.endpoint_of("199002") == first
        clock[0] += 0.2
        assert await client.endpoint_of("199002") == "https://127.0.0.1:1"
        assert looked == ["199002", "199002"]
        directory.add(KeySet.generate("199005"), "No node", None)
        for _ in range(2):
            with pytest.raises(NoEndpointError, match="no Handover node"):
                await client.endpoint_of("199005")
        assert looked.count("199005") == 2
