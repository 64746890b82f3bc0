"""Helpers for the end-to-end tests: real ``handover serve`` processes on loopback sockets.

A *pair* is a world of two nodes built the way an operator builds them
(:func:`transfer.demo.world.build_world`): a primary school and a secondary
school, each with its own data directory, KEK file, TLS certificate and a
DSL account, both having imported the directory authority's signed directory.
The tests act as people do: a DSL through the staff API over HTTPS, an
operator through ``handover`` commands, another node through signed
``/peer/v1`` requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import socket
import sqlite3
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from keys import minisign
from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from transfer.config import parse_kek
from transfer.demo.api import StaffClient
from transfer.demo.world import NodeSpec, World, WorldNode, build_world
from transfer.httpsig import content_digest, sign_request
from transfer.identifiers import upn_check_letter

PRIMARY = ("123456", "8012000", "Hillside Primary School")
SECONDARY = ("654321", "8014001", "Riverside Academy")
PRIMARY_DSL = ("s.patel", "Sam Patel")
SECONDARY_DSL = ("k.ahmed", "Kamala Ahmed")
#: Small upload chunks, so that a process can be killed reliably in the middle of an upload.
CHUNK = 64 * 1024
#: How long a test waits for something the nodes do on their own (sweeps every 0.3 s).
PATIENCE = 60.0

T = TypeVar("T")


# ------------------------------------------------------------------ the world


@dataclass
class Pair:
    """Two nodes: the primary school that sends, the secondary school that receives."""

    world: World
    passwords: dict[str, str]
    #: Bearer tokens of the DSLs once signed in (a TOTP code is accepted only once, so a
    #: second sign-in within 30 s would be refused): username -> token.
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def primary(self) -> WorldNode:
        return self.world.nodes["primary"]

    @property
    def secondary(self) -> WorldNode:
        return self.world.nodes["secondary"]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.world.trust_file))


def transfer_config(*, database_url: str | None = None) -> str:
    """Lines appended to a node's ``[transfer]`` section (and a ``[database]`` section)."""
    # Each package goes in one request (the default ``chunk_bytes``); the receiver makes what
    # it holds durable every 64 KiB of it, so a break mid-way resumes from there.
    text = f"checkpoint_bytes = {CHUNK}\n"
    if database_url:
        text += f'\n[database]\nurl = "{database_url}"\n'
    return text


def build_pair(
    root: Path, *, primary_db: str | None = None, secondary_db: str | None = None
) -> Pair:
    """Build both nodes (not started) and a DSL at each school."""
    world = build_world(
        root,
        [
            NodeSpec(
                "primary",
                "Hillside node",
                schools=[PRIMARY],
                extra_config=transfer_config(database_url=primary_db),
            ),
            NodeSpec(
                "secondary",
                "Riverside node",
                schools=[SECONDARY],
                extra_config=transfer_config(database_url=secondary_db),
            ),
        ],
        sweep_seconds=0.3,
        retry_base_seconds=0.3,
    )
    passwords: dict[str, str] = {}
    for node, org, (user, name) in (
        (world.nodes["primary"], PRIMARY[0], PRIMARY_DSL),
        (world.nodes["secondary"], SECONDARY[0], SECONDARY_DSL),
    ):
        passwords[user] = secrets.token_urlsafe(15)
        handover(
            [
                "account",
                "create",
                "--data-dir",
                str(node.data_dir),
                "--org",
                org,
                "--user",
                user,
                "--name",
                name,
                "--role",
                "dsl",
            ],
            env={"HANDOVER_PASSWORD": passwords[user]},
        )
    return Pair(world, passwords)


def handover(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    """Run one ``handover`` command, as an operator would; its output.

    In this process (a child process would cost a second of start-up each time), so never
    on a running event loop's thread: async tests use :func:`cli`. Raises AssertionError
    with the command's error line when it exits non-zero.
    """
    from transfer.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("HANDOVER_")}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(list(argv))
    finally:
        for k in [k for k in os.environ if k.startswith("HANDOVER_")]:
            del os.environ[k]
        os.environ.update(saved)
    assert code == 0, f"handover {' '.join(argv[:2])} exited {code}: {err.getvalue().strip()}"
    return out.getvalue()


async def cli(argv: Sequence[str]) -> str:
    """:func:`handover` from an async test (in a worker thread, off the event loop)."""
    return await asyncio.to_thread(handover, argv)


async def audit_entries(node: WorldNode, action: str) -> list[dict[str, Any]]:
    """The node's audit entries for ``action``, read with ``handover audit show --json``."""
    out = await cli(
        [
            "audit",
            "show",
            "--data-dir",
            str(node.data_dir),
            "--action",
            action,
            "--json",
            "--limit",
            "100000",
        ]
    )
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def query(node: WorldNode, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read a SQLite node's database directly (a second reader; the node may be running)."""
    con = sqlite3.connect(f"file:{node.data_dir / 'handover.db'}?mode=ro", uri=True, timeout=30)
    try:
        return list(con.execute(sql, params).fetchall())
    finally:
        con.close()


def expire_leases(node: WorldNode) -> int:
    """Let every delivery lease on a stopped SQLite node run out, as 120 s passing would.

    A ``serve`` process killed mid-delivery leaves its lease (120 s) in the database; another
    process takes the item over once it has run out. Moving the lease's end into the past
    stands in for that wait, and changes nothing else.
    """
    past = (datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None)
    con = sqlite3.connect(node.data_dir / "handover.db", timeout=30)
    try:
        with con:
            done = con.execute(
                "UPDATE outgoing_packages SET lease_until = ? WHERE lease_until IS NOT NULL",
                (past.strftime("%Y-%m-%d %H:%M:%S.%f"),),
            )
        return done.rowcount
    finally:
        con.close()


def keyset_of(node: WorldNode, org_id: str) -> KeySet:
    """An organisation's key set from its node's key files (with the node's KEK)."""
    kek = parse_kek(node.kek_file.read_text(encoding="ascii"), str(node.kek_file))
    return KeyFiles.for_data_dir(node.data_dir, KekProtection(kek)).load(org_id)


def public_key_of(node: WorldNode, org_id: str) -> minisign.PublicKey:
    return keyset_of(node, org_id).minisign_public_key


def signed_receipt_json(receipt: Mapping[str, Any]) -> bytes:
    """A receipt as the outbox API shows it, in its wire form for ``verify_receipt``."""
    return json.dumps({"receipt": receipt["body"], "signature": receipt["signature"]}).encode()


def upn(serial: int) -> str:
    body = f"801200027{serial:03d}"
    return upn_check_letter(body) + body


# ------------------------------------------------------------------ waiting


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, within: float = PATIENCE
) -> T:
    """Ask ``probe`` every 0.1 s until it returns something other than None."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within:.0f} s for {what}")
        await asyncio.sleep(0.1)


def wait_until(probe: Callable[[], bool], what: str, within: float = PATIENCE) -> None:
    """Busy-wait (every 2 ms) for ``probe``: for catching a moment, such as mid-upload."""
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {within:.0f} s for {what}")
        time.sleep(0.002)


def part_size(node: WorldNode, package_id: str) -> int:
    try:
        return (node.data_dir / "incoming" / f"{package_id}.part").stat().st_size
    except FileNotFoundError:
        return -1


# ------------------------------------------------------------------ people


async def sign_in(
    pair: Pair,
    http: aiohttp.ClientSession,
    node: WorldNode,
    org: str,
    user: str,
    *,
    base_url: str | None = None,
) -> StaffClient:
    """A DSL signed in over HTTPS (enrolling TOTP the first time, as the role requires);
    later calls reuse the session, on this node's process or another one (``base_url``)."""
    client = StaffClient(http, base_url or node.base_url, pair.ssl_context())
    if user in pair.tokens:
        client._token = pair.tokens[user]
    else:
        await client.sign_in(org, user, pair.passwords[user])
        assert client._token is not None
        pair.tokens[user] = client._token
    return client


async def add_pupil(
    dsl: StaffClient,
    serial: int,
    *,
    document: bytes | None = None,
    surname: str = "Okafor",
    concern: bool = True,
) -> str:
    """A Year 6 leaver with a concern, its triage and (optionally) a document; the pupil id.

    ``concern=False``: the pupil alone (a small file, when many are sent).
    """
    pupil = await dsl.call(
        "POST",
        "/pupils",
        {
            "upn": upn(serial),
            "surname": surname,
            "forename": f"Amara{serial}",
            "dob": "2015-03-14",
            "sex": "F",
            "year_group": "6",
            "leaving_date": (date.today() + timedelta(days=30)).isoformat(),
            # Leaving for the secondary school: its file goes there without a reason.
            "destination": {"kind": "school", "urn": SECONDARY[0], "name": SECONDARY[2]},
        },
    )
    pupil_id = str(pupil["id"])
    if not concern:
        return pupil_id
    recorded = await dsl.call(
        "POST",
        "/concerns",
        {
            "pupil_ids": [pupil_id],
            "category": "child_protection",
            "happened_at": datetime(2026, 1, 12, 9, 10, tzinfo=UTC).isoformat(),
            "location": "Year 6 classroom",
            "account": "Arrived with a bruise on her forearm; said she fell off the sofa.",
        },
    )
    await dsl.call(
        "POST",
        f"/concerns/{recorded['id']}/triage",
        {
            "decision": "refer_social_care",
            "reason": "Unexplained injury; referral to MASH.",
        },
    )
    if document is not None:
        # The store keeps only kinds of document it recognises by their first bytes.
        document = document if document.startswith(b"Strategy") else b"%PDF-1.7\n" + document
        await dsl.call(
            "POST",
            f"/pupils/{pupil_id}/documents",
            data=document,
            content_type="application/octet-stream",
            params={"filename": "strategy-minutes.bin", "concern_id": str(recorded["id"])},
        )
    return pupil_id


async def send_leaver_file(dsl: StaffClient, pupil_id: str, to_org: str) -> dict[str, Any]:
    record = await dsl.call(
        "POST", "/outbox/leaver-files", {"pupil_id": pupil_id, "to_org_id": to_org}
    )
    assert isinstance(record, dict)
    return record


async def outgoing(dsl: StaffClient, package_id: str) -> dict[str, Any]:
    record = await dsl.call("GET", f"/outbox/{package_id}")
    assert isinstance(record, dict)
    return record


async def wait_state(
    dsl: StaffClient, package_id: str, states: Sequence[str], within: float = PATIENCE
) -> dict[str, Any]:
    """The outgoing record once it is in one of ``states``."""

    async def probe() -> dict[str, Any] | None:
        record = await outgoing(dsl, package_id)
        return record if record["state"] in states else None

    return await eventually(probe, f"package {package_id} to be {'/'.join(states)}", within)


# ------------------------------------------------------------------ another node's requests


@dataclass(frozen=True)
class RawRequest:
    """A signed ``/peer/v1`` request, kept whole so that it can be sent again (a replay)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def signed_request(
    base_url: str,
    method: str,
    path: str,
    body: Mapping[str, Any] | None,
    *,
    keyset: KeySet,
    created: int | None = None,
) -> RawRequest:
    """Sign a request as a peer node does (RFC 9421 over method, target URI, Content-Digest)."""
    data = b"" if body is None else json.dumps(dict(body)).encode()
    headers = {"Content-Digest": content_digest(data)}
    if body is not None:
        headers["Content-Type"] = "application/json"
    url = base_url.rstrip("/") + path
    seed = keyset.signing.seed
    assert seed is not None
    headers.update(
        sign_request(
            method, url, headers, key_id=keyset.key_id_hex, private_key=seed, created=created
        )
    )
    return RawRequest(method, url, headers, data)


async def send_raw(
    http: aiohttp.ClientSession, pair: Pair, request: RawRequest
) -> tuple[int, dict[str, Any]]:
    """Send a signed request; its status and JSON (or problem) body."""
    async with http.request(
        request.method,
        request.url,
        data=request.body or None,
        headers=request.headers,
        ssl=pair.ssl_context(),
    ) as resp:
        raw = await resp.read()
        return resp.status, (json.loads(raw) if raw else {})


def offer_body(sender: str, recipient: str, *, size: int = 4096) -> dict[str, Any]:
    """An offer of a (new) package: a request the receiver would take if it were trusted."""
    return {
        "package_id": str(uuid.uuid4()),
        "package_kind": "leaver_file",
        "sender_org_id": sender,
        "recipient_org_id": recipient,
        "size": size,
        "ciphertext_sha256": secrets.token_hex(32),
    }


# ------------------------------------------------------------------ a counting TCP relay


class CountingRelay:
    """A TCP relay on a node's public port in front of its real port, counting the bytes sent
    to the node (TLS passes through untouched). Runs in its own thread and event loop, so a
    test may block (waiting for a process) while the relay keeps working."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.upstream_bytes = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the relay did not start")

    def reset(self) -> None:
        with self._lock:
            self.upstream_bytes = 0

    def count(self) -> int:
        with self._lock:
            return self.upstream_bytes

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(65536):
                    if count:
                        with self._lock:
                            self.upstream_bytes += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_w, True), pump(up_r, writer, False))


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
