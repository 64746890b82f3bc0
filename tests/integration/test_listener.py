"""The listener ``handover serve`` opens: header timeout, per-address cap, aiohttp's own errors.

A real node is served in the test's process (as ``serve`` does, TLS included) and
spoken to over real sockets: a client that sends its headers a byte at a time, more
connections from one address than the cap (and one from another loopback address),
a signed peer upload whose body takes several header timeouts to stream, and requests
aiohttp refuses before any handler runs.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import secrets
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from transfer.api.headers import SECURITY_HEADERS
from transfer.commands.init import initialise
from transfer.httpsig import content_digest, sign_request
from transfer.node import Node
from transfer.serving import Running, serving
from transfer.transport.http import http_transport

HEADER_TIMEOUT = 1.0
CAP = 3
#: Far longer than the header timeout, far shorter than aiohttp's own idle timer (an hour).
GIVE_UP = 15.0
SENDER, RECEIVER = "123456", "654321"


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.fixture
async def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    monkeypatch.setenv("HANDOVER_SERVER__HEADER_TIMEOUT_SECONDS", str(HEADER_TIMEOUT))
    monkeypatch.setenv("HANDOVER_SERVER__MAX_CONNECTIONS_PER_ADDRESS", str(CAP))
    data = tmp_path / "node"
    await initialise(
        data,
        name="t",
        schools=[(SENDER, "8012000", "Hillside"), (RECEIVER, "8014001", "Riverside")],
        agencies=[],
        admin=None,
        admin_password=None,
    )
    return data


@pytest.fixture
async def served(data_dir: Path) -> AsyncIterator[Running]:
    async with (
        await Node.open(data_dir, transport=http_transport) as node,
        serving(node, "127.0.0.1", 0) as running,
    ):
        yield running


def _tls(data_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(data_dir / "tls" / "dev-cert.pem"))


async def _connect(
    running: Running, data_dir: Path, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", running.port, ssl=_tls(data_dir), local_addr=(source, 0)
    )


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _closed_while_dripping(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[bool, bytes, float]:
    """Send one header byte every 0.2 s until the server closes the connection (or we give
    up); whether it closed, what it sent before closing, and after how long."""
    started = time.monotonic()
    got = asyncio.ensure_future(reader.read())
    try:
        while time.monotonic() - started < GIVE_UP:
            done, _ = await asyncio.wait({got}, timeout=0.2)
            if done:
                break
            try:
                writer.write(b"X")
                await writer.drain()
            except (ConnectionError, ssl.SSLError):
                break
        done, _ = await asyncio.wait({got}, timeout=2)
    finally:
        elapsed = time.monotonic() - started
    if not done:
        got.cancel()
        writer.close()
        return False, b"", elapsed
    try:
        data = got.result()
    except (ConnectionError, ssl.SSLError):
        data = b""
    writer.close()
    return True, data, elapsed


async def test_a_client_dripping_its_first_request_headers_is_cut_off(
    served: Running, data_dir: Path
) -> None:
    reader, writer = await _connect(served, data_dir)
    writer.write(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    closed, sent, elapsed = await _closed_while_dripping(reader, writer)
    assert closed, f"the connection was still open after {GIVE_UP} s of dripped headers"
    assert elapsed >= HEADER_TIMEOUT * 0.9
    assert sent == b""  # closed without an answer: there was no request to answer


async def test_a_kept_alive_connection_dripping_its_next_request_is_cut_off(
    served: Running, data_dir: Path
) -> None:
    reader, writer = await _connect(served, data_dir)
    writer.write(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, headers, _ = await _read_response(reader)
    assert status == 200 and headers.get("connection", "").lower() != "close"
    # The connection may stay idle (the keep-alive timer, 75 s, governs that), but once a
    # request starts, its headers have HEADER_TIMEOUT seconds.
    await asyncio.sleep(HEADER_TIMEOUT * 1.5)
    writer.write(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    closed, sent, elapsed = await _closed_while_dripping(reader, writer)
    assert closed, f"the connection was still open after {GIVE_UP} s of dripped headers"
    assert elapsed >= HEADER_TIMEOUT * 0.9 and sent == b""


async def test_an_address_over_the_cap_is_refused_while_another_is_served(
    served: Running, data_dir: Path
) -> None:
    held = await asyncio.gather(*(_connect(served, data_dir) for _ in range(CAP)))
    assert served.site.open_connections == {"127.0.0.1": CAP}
    # One more from the same address: a 503 problem document, then the connection closes.
    reader, writer = await _connect(served, data_dir)
    status, headers, body = await _read_response(reader)
    assert status == 503
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["connection"] == "close" and headers["server"] == "Handover"
    for name in SECURITY_HEADERS:
        assert name.lower() in headers
    problem = json.loads(body)
    assert problem["type"] == "urn:handover:problem:too-many-connections"
    assert await reader.read() == b""
    writer.close()
    assert served.site.open_connections == {"127.0.0.1": CAP}

    # Another address is served as usual, while the first is at its cap.
    other_reader, other_writer = await _connect(served, data_dir, source="127.0.0.2")
    other_writer.write(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, _, body = await _read_response(other_reader)
    assert status == 200 and json.loads(body)["openapi"].startswith("3.1")
    assert served.site.open_connections == {"127.0.0.1": CAP, "127.0.0.2": 1}
    other_writer.close()

    # A connection of the first address closed frees its place.
    _, first = held[0]
    first.close()
    await first.wait_closed()
    for _ in range(50):
        if served.site.open_connections.get("127.0.0.1") == CAP - 1:
            break
        await asyncio.sleep(0.05)
    again_reader, again_writer = await _connect(served, data_dir)
    again_writer.write(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, _, _ = await _read_response(again_reader)
    assert status == 200
    again_writer.close()
    for _, w in held[1:]:
        w.close()


async def test_a_peer_upload_streams_for_longer_than_the_header_timeout(
    served: Running, data_dir: Path
) -> None:
    """A signed upload whose body takes several header timeouts to arrive is taken whole."""
    node = served.node
    keyset = node.keys.load(SENDER)
    seed = keyset.signing.seed
    assert seed is not None
    pieces = [secrets.token_bytes(256 * 1024) for _ in range(8)]
    package = b"".join(pieces)
    package_id = str(uuid.uuid4())
    signed_base = node.config.node.base_url.rstrip("/")

    def signed(method: str, path: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        headers = {**headers, "Content-Digest": content_digest(body)}
        headers.update(
            sign_request(
                method, signed_base + path, headers, key_id=keyset.key_id_hex, private_key=seed
            )
        )
        return headers

    offer = json.dumps(
        {
            "package_id": package_id,
            "package_kind": "leaver_file",
            "sender_org_id": SENDER,
            "recipient_org_id": RECEIVER,
            "size": len(package),
            "ciphertext_sha256": hashlib.sha256(package).hexdigest(),
        }
    ).encode()
    url = served.base_url + "/peer/v1/packages"
    async with aiohttp.ClientSession() as http:
        headers = signed("POST", "/peer/v1/packages", offer, {"Content-Type": "application/json"})
        async with http.post(url, data=offer, headers=headers, ssl=_tls(data_dir)) as r:
            assert r.status in (200, 201), await r.text()

        async def slowly() -> AsyncIterator[bytes]:
            for piece in pieces:
                await asyncio.sleep(HEADER_TIMEOUT / 2)
                yield piece

        path = f"/peer/v1/packages/{package_id}"
        headers = signed(
            "PATCH",
            path,
            package,
            {
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": "0",
                "Content-Length": str(len(package)),
            },
        )
        started = time.monotonic()
        async with http.patch(
            served.base_url + path, data=slowly(), headers=headers, ssl=_tls(data_dir)
        ) as r:
            assert r.status == 204, await r.text()
            assert r.headers["Upload-Offset"] == str(len(package))
        assert time.monotonic() - started > 3 * HEADER_TIMEOUT


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n"
        b"Bad Header: <script>alert(1)</script>\r\n\r\n",
        b"G<T /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/v1/openapi.json HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    ],
    ids=["bad-header-name", "bad-method", "bad-version", "header-too-long"],
)
async def test_a_request_aiohttp_cannot_parse_gets_a_problem_document(
    served: Running, data_dir: Path, raw: bytes
) -> None:
    reader, writer = await _connect(served, data_dir)
    writer.write(raw)
    status, headers, body = await _read_response(reader)
    writer.close()
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["server"] == "Handover"
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"].startswith("urn:handover:problem:")
    # Nothing of the request is echoed back.
    assert b"script" not in body and b"G<T" not in body and b"aaaa" not in body


async def test_no_response_names_the_server_software(served: Running, data_dir: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/api/v1/openapi.json", "/api/v1/no-such-thing", "/portal/"):
            async with http.get(served.base_url + path, ssl=_tls(data_dir)) as r:
                assert r.headers["Server"] == "Handover", path


def test_the_limits_come_from_server_settings_and_behind_a_proxy_the_cap_is_the_proxys() -> None:
    from transfer.api.listener import ListenerLimits
    from transfer.config import ServerSection

    direct = ListenerLimits.from_config(
        ServerSection(
            header_timeout_seconds=7, keepalive_timeout_seconds=30, max_connections_per_address=12
        )
    )
    assert direct == ListenerLimits(header_timeout=7, keepalive_timeout=30, max_per_address=12)
    proxied = ListenerLimits.from_config(ServerSection(behind_proxy=True))
    assert proxied.max_per_address == 0 and proxied.header_timeout == 20.0
