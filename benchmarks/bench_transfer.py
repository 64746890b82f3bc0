"""Node to node over loopback: one large package, and a transition-week burst.

Real nodes: data directories, keys, TLS certificates and a signed directory made by
:func:`transfer.demo.world.build_world`, each node a ``handover serve`` process
(:class:`transfer.demo.procs.ServeProcess`) on 127.0.0.1 with HTTPS, the default
``transfer.chunk_bytes`` (a package in one request) and ``transfer.checkpoint_bytes``
(64 MiB), and a delivery sweep every :data:`SWEEP_SECONDS`.

Packages are queued the way ``handover send`` does it from the command line: this
process opens the sending node's data directory (``Node.open``) while its ``serve``
process runs, as a DSL of the sending school. The package is built beforehand with
:func:`transfer.package.build.build_package` from a document file (a real pupil of the
sending school, a real DSL account) straight into ``data_dir/outgoing/`` and handed
to :meth:`Outbox.queue_file` (which checks its size and SHA-256, fsyncs it and
queues it): a 1 GiB document never passes through the store. The running sender's
sweep then delivers it; times come from the sender's own database (``queued_at`` and
the time the verified *delivered* receipt was recorded).

1. **One large package** (``HANDOVER_BENCH_TRANSFER_MIB``, MiB, default ``256,1024``):
   fresh ``serve`` processes for each size; offer (and queue) to delivered receipt; against a plain
   streaming aiohttp upload of the same package file in the same run (a minimal aiohttp
   server in its own process writing the body to a file and fsyncing it, the receiving
   node's certificate, the same trust file); peak RSS (``VmHWM``) of both nodes.
2. **Transition-week burst** (``HANDOVER_BENCH_BURST_FILES``, default 2000, of
   ``HANDOVER_BENCH_BURST_BYTES``, default 2,000,000, on ``HANDOVER_BENCH_BURST_DBS``,
   default in :data:`BURST_DBS`): 20 primary schools on one node send leaver's files to
   5 secondary schools on another; all queued as fast as one process can, while both
   nodes run; total time, packages per second, p50/p95 queue-to-delivered. In the
   ``from-store`` set-ups the pupils' records and documents are in the sending node's
   store and each package is built from them when queued (:meth:`Outbox.queue_leaver_file`).

``HANDOVER_BENCH_TRANSFER_DIR`` keeps the work directory (nodes, logs) there instead of
a temporary one. ``python -m benchmarks bench_transfer`` runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transfer.demo.world import World
    from transfer.node import Node
    from transfer.package.build import BuiltPackage
    from transfer.store.permissions import Actor

MIB = 1024 * 1024
SIZES = [int(x) for x in os.environ.get("HANDOVER_BENCH_TRANSFER_MIB", "256,1024").split(",")]
#: Runs per size of the large package (medians are reported, every run listed).
RUNS = int(os.environ.get("HANDOVER_BENCH_TRANSFER_RUNS", "3"))
BURST_FILES = int(os.environ.get("HANDOVER_BENCH_BURST_FILES", "2000"))
BURST_BYTES = int(os.environ.get("HANDOVER_BENCH_BURST_BYTES", "2000000"))
#: The burst's set-ups: ``sqlite``, ``postgres`` (20 primary schools on one node, 5 secondary
#: schools on another), ``postgres-two-senders`` (the same, the sending node run as two
#: ``serve`` processes on its one PostgreSQL database), ``sqlite-200-schools`` (200
#: schools on each node, the size of a large local authority) and ``sqlite-from-store``
#: (each package built by the node from the store when it is queued, as a DSL's send does;
#: ``postgres-200-schools`` and ``postgres-from-store`` on request).
BURST_DBS = [
    x
    for x in os.environ.get(
        "HANDOVER_BENCH_BURST_DBS",
        "sqlite,postgres,postgres-two-senders,sqlite-200-schools,sqlite-from-store",
    ).split(",")
]
#: How often each ``serve`` looks for due deliveries (the product's default is 15 s).
SWEEP_SECONDS = 0.5
#: Packages queued at the same time by this process in the burst.
QUEUE_CONCURRENCY = 4


def _schools(kind: str, urn: int, estab: int, n: int) -> list[tuple[str, str, str]]:
    return [(f"{urn + i}", f"{estab + i}", f"Bench {kind} School {i}") for i in range(1, n + 1)]


PRIMARIES = _schools("Primary", 110000, 8012000, 20)
SECONDARIES = _schools("Secondary", 120000, 8014000, 5)
#: A large local authority's schools, on each node.
MANY_PRIMARIES = _schools("Primary", 140000, 8015000, 200)
MANY_SECONDARIES = _schools("Secondary", 150000, 8016000, 200)
SENDER = ("130001", "8013001", "Bench Sending Primary")
RECEIVER = ("130002", "8013002", "Bench Receiving Academy")
PIECE = 256 * 1024


# --------------------------------------------------------------------------- helpers


def _vm_hwm_mib(pid: int) -> float:
    """Peak resident memory of a live process (``VmHWM`` in ``/proc/<pid>/status``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _serve_pid(world: World, name: str) -> int:
    proc = world.nodes[name].serve.proc
    if proc is None:
        raise RuntimeError(f"the {name} node is not running")
    return proc.pid


def _write_document(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with path.open("wb") as f:
        left = size
        while left:
            piece = block[: min(left, MIB)]
            f.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MIB):
            h.update(piece)
    return h.hexdigest()


def _upn(school: int, serial: int) -> str:
    from transfer.identifiers import upn_check_letter

    body = f"801{school:03d}{serial:06d}"
    return upn_check_letter(body) + body


def _pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@dataclass
class _Stored:
    """A leaver whose file the node builds from its store when it is queued."""

    actor: Actor
    pupil_id: str
    to_org: str


@dataclass
class _Built:
    actor: Actor
    pupil_id: str
    to_org: str
    path: Path
    built: BuiltPackage


async def _dsl(node: Node, org_id: str) -> Actor:
    """A real DSL account of the organisation (made once), as the acting person."""
    import secrets

    staff = await node.store.find_staff(org_id, "bench.dsl")
    if staff is None:
        staff = await node.accounts.bootstrap_account(
            org_id,
            username="bench.dsl",
            display_name="Bench DSL",
            roles=["dsl"],
            password=secrets.token_urlsafe(18),
        )
    return await node.store.actor_for(staff.id)


async def _pupil(
    node: Node,
    actor: Actor,
    school: int,
    serial: int,
    destination: tuple[str, str, str] | None = None,
) -> str:
    from schemas.records import NewDestination, NewPupil

    record = await node.store.create_pupil(
        actor,
        NewPupil(
            upn=_upn(school, serial),
            surname=f"Leaver{serial}",
            forename="Bench",
            dob=date(2015, 1 + serial % 12, 1 + serial % 28),
            sex="U",
            year_group="6",
            leaving_date=date(2026, 7, 22),
            destination=(
                NewDestination(kind="school", urn=destination[0], name=destination[2])
                if destination is not None
                else None
            ),
        ),
    )
    return record.id


async def _stored_leaver(
    node: Node, actor: Actor, school: int, serial: int, to: tuple[str, str, str]
) -> _Stored:
    """A pupil of the sending school as a DSL's send finds it: next school recorded, one
    concern, and one document (a PDF of ``BURST_BYTES``) kept sealed in the store."""
    from schemas.records import NewConcern

    pupil_id = await _pupil(node, actor, school, serial, destination=to)
    concern = await node.store.record_concern(
        actor,
        NewConcern(
            pupil_ids=(pupil_id,),
            category="child_protection",
            happened_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
            location="Classroom",
            account="Bench concern: a disclosure recorded for the leaver's file.",
        ),
    )
    body = b"%PDF-1.4\n" + os.urandom(BURST_BYTES - 9)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), PIECE):
            yield body[i : i + PIECE]

    await node.store.add_document(
        actor, pupil_id, chunks(), filename="minutes.pdf", concern_id=concern.id
    )
    return _Stored(actor, pupil_id, to[0])


async def _build(node: Node, actor: Actor, pupil_id: str, to_org: str, doc: Path | bytes) -> _Built:
    """A leaver's package of the pupil with one document, built into ``outgoing/``."""
    from schemas.manifest import Recipient, Sender, Subject
    from transfer.age import X25519Recipient
    from transfer.package.build import EntrySource, build_package

    keyset = await asyncio.to_thread(node.keys.load, actor.org_id)
    entry = await node.directory.entry(to_org)
    if isinstance(doc, bytes):
        data = doc
        size, sha = len(data), hashlib.sha256(data).hexdigest()

        def opener() -> Iterator[bytes]:
            for i in range(0, len(data), PIECE):
                yield data[i : i + PIECE]
    else:
        path_doc = doc
        size = (await asyncio.to_thread(doc.stat)).st_size
        sha = await asyncio.to_thread(_sha256_file, doc)

        def opener() -> Iterator[bytes]:
            with path_doc.open("rb") as f:
                while piece := f.read(PIECE):
                    yield piece

    entries = [
        EntrySource.from_json(
            "records/pupil.json", {"schema_version": 1, "id": pupil_id, "surname": "Leaver"}
        ),
        EntrySource(path=f"documents/{sha}", size=size, sha256=sha, opener=opener),
    ]
    out_dir = node.outbox.outgoing_dir
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = out_dir / f"bench-{uuid.uuid4()}.build"

    def build() -> BuiltPackage:
        with path.open("wb") as out:
            return build_package(
                out,
                kind="leaver_file",
                sender=Sender(
                    org_id=keyset.org_id,
                    key_fingerprint=keyset.fingerprint,
                    signing_key_id=keyset.key_id_hex,
                ),
                recipient=Recipient(org_id=entry.org_id, key_fingerprint=entry.fingerprint),
                subject=Subject(surname="Leaver", forename="Bench"),
                entries=entries,
                signer=keyset.minisign_secret_key(),
                recipients=[X25519Recipient.from_string(entry.recipient)],
            )

    built = await asyncio.to_thread(build)
    return _Built(actor, pupil_id, to_org, path, built)


async def _queue(node: Node, b: _Built) -> str:
    record = await node.outbox.queue_file(
        b.actor,
        package_path=b.path,
        built=b.built,
        to_org_id=b.to_org,
        pupil_ids=[b.pupil_id],
        kind="leaver_file",
        via="bench",
    )
    return record.id


async def _queue_from_store(node: Node, b: _Stored) -> str:
    """As a DSL's send does: the node seals the pupil's records and documents into the
    leaver's package and queues it (:meth:`Outbox.queue_leaver_file`)."""
    record = await node.outbox.queue_leaver_file(b.actor, b.pupil_id, b.to_org, via="bench")
    return record.id


async def _states(node: Node) -> dict[str, int]:
    from sqlalchemy import func, select

    from transfer.exchange.tables import outgoing_packages as p

    async with node.store.sessions() as s:
        rows = (await s.execute(select(p.c.state, func.count()).group_by(p.c.state))).all()
    return {str(state): int(n) for state, n in rows}


async def _times(node: Node, ids: Sequence[str]) -> dict[str, tuple[datetime, datetime, datetime]]:
    """Per package: queued, ``sent`` (all chunks acknowledged) and delivered-receipt times."""
    from sqlalchemy import select

    from transfer.exchange.tables import outgoing_events as e
    from transfer.exchange.tables import outgoing_packages as p

    wanted = set(ids)
    out: dict[str, tuple[datetime, datetime, datetime]] = {}
    async with node.store.sessions() as s:
        rows = (
            await s.execute(select(p.c.id, p.c.queued_at).where(p.c.state == "delivered"))
        ).all()
        sent = dict(
            (await s.execute(select(e.c.package_id, e.c.at).where(e.c.event == "sent"))).all()
        )
        got = dict(
            (
                await s.execute(
                    select(e.c.package_id, e.c.at).where(e.c.event == "receipt.delivered")
                )
            ).all()
        )
    for pid, queued in rows:
        if pid in wanted and queued is not None:
            delivered: datetime = got[pid]
            out[pid] = (queued, sent.get(pid, delivered), delivered)
    return out


async def _wait_delivered(node: Node, ids: Sequence[str], within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        states = await _states(node)
        if states.get("failed"):
            raise RuntimeError(f"{states['failed']} package(s) failed: see the nodes' logs")
        if states.get("delivered", 0) >= len(ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all delivered within {within:.0f} s: {states}")
        await asyncio.sleep(0.2)


async def _received(data_dir: Path) -> int:
    """How many packages the receiving node holds as delivered (each exactly once)."""
    from sqlalchemy import func, select

    from transfer.exchange.tables import IncomingPackage
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async with (
        await Node.open(data_dir, transport=http_transport) as node,
        node.store.sessions() as s,
    ):
        n = await s.scalar(
            select(func.count())
            .select_from(IncomingPackage)
            .where(IncomingPackage.state != "receiving")
        )
    return int(n or 0)


@contextlib.contextmanager
def _quiet_env() -> Iterator[None]:
    """Node parts read HANDOVER_* settings: none of ours leak into the nodes we open."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("HANDOVER_")}
    try:
        yield
    finally:
        os.environ.update(saved)


# ------------------------------------------------------------ plain aiohttp yardstick


def _plain_server(port: int, cert: str, key: str, out: str) -> None:
    """A minimal aiohttp server: stream the request body to a file, fsync, answer 204."""
    from aiohttp import web

    from transfer.tls import server_context

    async def upload(request: web.Request) -> web.Response:
        size = 0
        with open(out, "wb") as f:  # noqa: ASYNC230 - the plainest server there is
            async for chunk in request.content.iter_chunked(PIECE):
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        return web.Response(status=204, headers={"X-Received": str(size)})

    app = web.Application(client_max_size=1024**4)
    app.router.add_put("/upload", upload)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, "127.0.0.1", port, ssl_context=server_context(Path(cert), Path(key))
        )
        await site.start()
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


def _plain_upload(url: str, cafile: str, path: str) -> None:
    """Stream a file to the plain server (256 KiB pieces); print the seconds it took."""
    import aiohttp

    async def main() -> float:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cafile=cafile)
        size = await asyncio.to_thread(os.path.getsize, path)

        async def body() -> AsyncIterator[bytes]:
            with open(path, "rb") as f:  # noqa: ASYNC230
                while piece := f.read(PIECE):
                    yield piece

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            start = time.perf_counter()
            async with http.put(url, data=body(), headers={"Content-Length": str(size)}) as r:
                if r.status != 204 or r.headers.get("X-Received") != str(size):
                    raise SystemExit(f"plain upload failed: {r.status}")
            return time.perf_counter() - start

    print(f"{asyncio.run(main()):.6f}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plain_run(world: World, package: Path, out: Path) -> tuple[float, float]:
    """The yardstick: seconds of the plain upload, and the plain server's peak RSS (MiB)."""
    node = world.nodes["receiver"]
    cert, key = node.data_dir / "tls" / "dev-cert.pem", node.data_dir / "tls" / "dev-key.pem"
    port = _free_port()
    me = [sys.executable, "-m", "benchmarks.bench_transfer"]
    server = subprocess.Popen(
        [*me, "plain-server", str(port), str(cert), str(key), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the plain aiohttp server did not start")
        done = subprocess.run(
            [
                *me,
                "plain-upload",
                f"https://127.0.0.1:{port}/upload",
                str(world.trust_file),
                str(package),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        hwm = _vm_hwm_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    if _sha256_file(out) != _sha256_file(package):
        raise RuntimeError("the plain upload did not store the same bytes")
    out.unlink()
    return float(done.stdout.strip()), hwm


# ---------------------------------------------------------------- 1. large package


@dataclass
class _LargeRow:
    mib: int
    package_bytes: int
    end_to_end: float
    transfer: float
    upload: float
    complete: float
    plain: float
    sender_hwm: float
    receiver_hwm: float
    plain_hwm: float


async def _large_prepare(data_dir: Path, doc: Path, serial: int) -> _Built:
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async with await Node.open(data_dir, transport=http_transport) as node:
        actor = await _dsl(node, SENDER[0])
        pupil_id = await _pupil(node, actor, 99, serial)
        return await _build(node, actor, pupil_id, RECEIVER[0], doc)


def _offered_at(receiver_dir: Path, package_id: str) -> datetime:
    """When the receiving node recorded the package's offer (the transfer's first request)."""
    db = sqlite3.connect(f"file:{receiver_dir / 'handover.db'}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT offered_at FROM incoming_packages WHERE id = ?", (package_id,)
        ).fetchone()
    finally:
        db.close()
    if row is None:
        raise RuntimeError(f"the receiving node has no offer of package {package_id}")
    at = datetime.fromisoformat(str(row[0]))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def _large_send(
    data_dir: Path, receiver_dir: Path, b: _Built, within: float
) -> tuple[float, float, float, float]:
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async with await Node.open(data_dir, transport=http_transport) as node:
        before = (await _states(node)).get("delivered", 0)
        pid = await _queue(node, b)
        deadline = time.monotonic() + within
        while (await _states(node)).get("delivered", 0) <= before:
            if (await _states(node)).get("failed"):
                raise RuntimeError("the large package failed: see the nodes' logs")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the large package was not delivered within {within:.0f} s")
            await asyncio.sleep(0.1)
        queued, sent, got = (await _times(node, [pid]))[pid]
    offered = _offered_at(receiver_dir, pid)
    return (
        (got - queued).total_seconds(),
        (got - offered).total_seconds(),
        (sent - queued).total_seconds(),
        (got - sent).total_seconds(),
    )


def _large(root: Path) -> list[_LargeRow]:
    from transfer.demo.world import NodeSpec, build_world

    world = build_world(
        root,
        [
            NodeSpec("sender", "Bench sending node", schools=[SENDER]),
            NodeSpec("receiver", "Bench receiving node", schools=[RECEIVER]),
        ],
        sweep_seconds=SWEEP_SECONDS,
    )
    rows: list[_LargeRow] = []
    serial = 0
    try:
        for mib in SIZES:
            doc = root / "document.bin"
            _write_document(doc, mib * MIB)
            for _ in range(RUNS):
                serial += 1
                rows.append(_large_once(world, root, doc, mib, serial))
                print(f"  {mib} MiB: {rows[-1]}", file=sys.stderr, flush=True)
            doc.unlink()
    finally:
        world.stop()
    return rows


def _large_once(world: World, root: Path, doc: Path, mib: int, serial: int) -> _LargeRow:
    """One package of ``doc``: the plain yardstick, then node to node with fresh nodes."""
    with _quiet_env():
        b = asyncio.run(_large_prepare(world.nodes["sender"].data_dir, doc, serial))
    plain, plain_hwm = _plain_run(world, b.path, root / "plain.out")
    world.start()
    try:
        with _quiet_env():
            e2e, transfer, upload, complete = asyncio.run(
                _large_send(
                    world.nodes["sender"].data_dir, world.nodes["receiver"].data_dir, b, 60 + mib
                )
            )
        sender_hwm = _vm_hwm_mib(_serve_pid(world, "sender"))
        receiver_hwm = _vm_hwm_mib(_serve_pid(world, "receiver"))
    finally:
        world.stop()
    pid = str(b.built.manifest.package_id)
    held = world.nodes["receiver"].data_dir / "inbox" / f"{pid}.age"
    if _sha256_file(held) != b.built.ciphertext_sha256:
        raise RuntimeError("the receiving node does not hold the bytes sent")
    held.unlink()  # disk space: the bench does not need it any more
    (world.nodes["sender"].data_dir / "outgoing" / f"{pid}.age").unlink(missing_ok=True)
    return _LargeRow(
        mib,
        b.built.ciphertext_size,
        e2e,
        transfer,
        upload,
        complete,
        plain,
        sender_hwm,
        receiver_hwm,
        plain_hwm,
    )


# ------------------------------------------------------------------- 2. the burst


@dataclass
class _BurstResult:
    db: str
    files: int
    package_bytes: int
    build_s: float
    queue_s: float
    total_s: float
    latencies: list[float]
    received: int
    sender_hwm: float
    receiver_hwm: float


@dataclass(frozen=True)
class _Postgres:
    host: str
    port: int
    user: str
    run_as: str | None
    bindir: Path

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"


def _pg_bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        if (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists():
            return cand
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")


@contextlib.contextmanager
def _postgres() -> Iterator[_Postgres]:
    """A throw-away PostgreSQL server on loopback, durable (fsync on, the server's defaults)."""
    bindir = _pg_bindir()
    run_as = "postgres" if os.geteuid() == 0 else None
    user = run_as or pwd.getpwuid(os.geteuid()).pw_name

    def as_user(cmd: list[str]) -> list[str]:
        return ["runuser", "-u", run_as, "--", *cmd] if run_as else cmd

    tmp = Path(tempfile.mkdtemp(prefix="bench-transfer-pg-"))
    if run_as:
        shutil.chown(tmp, user=run_as)
    data = tmp / "data"
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run(
        as_user(
            [str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
        env=env,
    )
    subprocess.run(
        as_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                f"-h 127.0.0.1 -p {port} -k {tmp} -c max_connections=200",
                "-l",
                str(tmp / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        yield _Postgres("127.0.0.1", port, user, run_as, bindir)
    finally:
        subprocess.run(
            as_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
            env=env,
        )
        shutil.rmtree(tmp, ignore_errors=True)


def _create_db(pg: _Postgres, name: str) -> str:
    subprocess.run(
        [
            str(pg.bindir / "psql"),
            "-h",
            pg.host,
            "-p",
            str(pg.port),
            "-U",
            pg.user,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f'CREATE DATABASE "{name}"',
        ],
        check=True,
        capture_output=True,
    )
    return pg.url(name)


async def _burst_prepare(
    data_dir: Path,
    files: int,
    primaries: Sequence[tuple[str, str, str]] = PRIMARIES,
    secondaries: Sequence[tuple[str, str, str]] = SECONDARIES,
    *,
    from_store: bool = False,
) -> list[_Built | _Stored]:
    """A pupil per package, of the primary schools in turn, to the secondary schools in
    turn: each package prebuilt, or (``from_store``) the pupil's records and document in the
    store, for the node to build when it is queued."""
    from transfer.node import Node
    from transfer.transport.http import http_transport

    items: list[_Built | _Stored] = []
    async with await Node.open(data_dir, transport=http_transport) as node:
        actors = [await _dsl(node, urn) for urn, _, _ in primaries]
        for i in range(files):
            school = i % len(primaries)
            actor = actors[school]
            to = secondaries[i % len(secondaries)]
            if from_store:
                items.append(await _stored_leaver(node, actor, school + 1, i, to))
            else:
                pupil_id = await _pupil(node, actor, school + 1, i)
                items.append(await _build(node, actor, pupil_id, to[0], os.urandom(BURST_BYTES)))
    return items


async def _package_bytes(node: Node, ids: Sequence[str]) -> int:
    """The packages' mean size, from the sender's records."""
    from sqlalchemy import func, select

    from transfer.exchange.tables import outgoing_packages as p

    async with node.store.sessions() as s:
        total = await s.scalar(select(func.sum(p.c.ciphertext_size)).where(p.c.id.in_(list(ids))))
    return int(total or 0) // max(1, len(ids))


async def _burst_send(
    data_dir: Path, items: Sequence[_Built | _Stored]
) -> tuple[float, float, list[float], int]:
    """Queue everything (QUEUE_CONCURRENCY at a time); queue time, total time, latencies,
    the packages' mean size."""
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async with await Node.open(data_dir, transport=http_transport) as node:
        todo = iter(items)
        ids: list[str] = []

        async def worker() -> None:
            for b in todo:
                if isinstance(b, _Stored):
                    ids.append(await _queue_from_store(node, b))
                else:
                    ids.append(await _queue(node, b))

        start = datetime.now(UTC)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(QUEUE_CONCURRENCY)))
        queue_s = time.perf_counter() - t0
        await _wait_delivered(node, ids, within=600 + 2 * len(ids))
        times = await _times(node, ids)
        size = await _package_bytes(node, ids)
    if len(times) != len(ids):
        raise RuntimeError(f"{len(ids) - len(times)} package(s) have no delivered time")
    last = max(got for _, _, got in times.values())
    latencies = [(got - queued).total_seconds() for queued, _, got in times.values()]
    return queue_s, (last - start).total_seconds(), latencies, size


def _burst(root: Path, setup: str) -> _BurstResult:
    from transfer.demo.world import NodeSpec, build_world

    db, _, variant = setup.partition("-")
    known = ("", "200-schools", "from-store", *(("two-senders",) if db == "postgres" else ()))
    if db not in ("sqlite", "postgres") or variant not in known:
        raise RuntimeError(f"unknown burst set-up {setup!r} in HANDOVER_BENCH_BURST_DBS")
    primaries, secondaries = (
        (MANY_PRIMARIES, MANY_SECONDARIES) if variant == "200-schools" else (PRIMARIES, SECONDARIES)
    )
    senders = 2 if variant == "two-senders" else 1
    with contextlib.ExitStack() as stack:
        extra = {"primaries": "", "secondaries": ""}
        if db == "postgres":
            pg = stack.enter_context(_postgres())
            for name in extra:
                extra[name] = f'\n[database]\nurl = "{_create_db(pg, f"bench_{name}")}"\n'
        world = build_world(
            root,
            [
                NodeSpec(
                    "primaries",
                    "Bench primaries' node",
                    schools=primaries,
                    extra_config=extra["primaries"],
                ),
                NodeSpec(
                    "secondaries",
                    "Bench secondaries' node",
                    schools=secondaries,
                    extra_config=extra["secondaries"],
                ),
            ],
            sweep_seconds=SWEEP_SECONDS,
        )
        stack.callback(world.stop)
        sender_dir = world.nodes["primaries"].data_dir
        t0 = time.perf_counter()
        with _quiet_env():
            built = asyncio.run(
                _burst_prepare(
                    sender_dir,
                    BURST_FILES,
                    primaries,
                    secondaries,
                    from_store=variant == "from-store",
                )
            )
        build_s = time.perf_counter() - t0
        print(f"  {setup}: {len(built)} packages prepared in {build_s:.1f} s", file=sys.stderr)
        world.start()
        siblings = []
        for n in range(2, senders + 1):
            sibling = world.nodes["primaries"].serve.sibling(f"primaries-{n}")
            stack.callback(sibling.stop)
            sibling.start()
            sibling.wait_ready()
            siblings.append(sibling)
        with _quiet_env():
            queue_s, total_s, latencies, package_bytes = asyncio.run(_burst_send(sender_dir, built))
        sender_hwm = _vm_hwm_mib(_serve_pid(world, "primaries"))
        for sibling in siblings:
            if sibling.proc is not None:
                sender_hwm = max(sender_hwm, _vm_hwm_mib(sibling.proc.pid))
        receiver_hwm = _vm_hwm_mib(_serve_pid(world, "secondaries"))
        for sibling in siblings:
            sibling.stop()
        world.stop()
        with _quiet_env():
            received = asyncio.run(_received(world.nodes["secondaries"].data_dir))
        if received != len(built):
            raise RuntimeError(f"the receiving node holds {received} packages, not {len(built)}")
        result = _BurstResult(
            setup,
            len(built),
            package_bytes,
            build_s,
            queue_s,
            total_s,
            latencies,
            received,
            sender_hwm,
            receiver_hwm,
        )
        print(f"  {setup}: total {total_s:.1f} s", file=sys.stderr, flush=True)
        return result


_SETUPS = {
    "sqlite": "SQLite",
    "postgres": "PostgreSQL",
    "postgres-two-senders": "PostgreSQL, sender as two `serve` processes",
    "sqlite-200-schools": "SQLite, 200 schools on each node",
    "postgres-200-schools": "PostgreSQL, 200 schools on each node",
    "sqlite-from-store": "SQLite, built from the store when queued",
    "postgres-from-store": "PostgreSQL, built from the store when queued",
}


# ---------------------------------------------------------------------------- report


def _report(large: list[_LargeRow], bursts: list[_BurstResult]) -> str:
    lines = [
        "## Node to node over loopback (`benchmarks/bench_transfer.py`)",
        "",
        "Two real nodes (`handover serve` processes made by `transfer.demo.world.build_world`: "
        "`handover init` data directories, a signed directory, each node's self-signed "
        "certificate trusted through `transfer.ca_file`), HTTPS on 127.0.0.1, the default "
        "`transfer.chunk_bytes` (a package goes in one streamed request) and "
        "`transfer.checkpoint_bytes` (the receiver makes what it holds durable every 64 MiB), "
        f"`transfer.sweep_seconds = {SWEEP_SECONDS}` (the "
        "product's default is 15 s, which adds up to 15 s to a package queued on an idle "
        "node). A package is queued as `handover send` does from the command line: this "
        "process opens the sending node's data directory while its `serve` runs and, as a "
        "real DSL account of the sending school, hands `Outbox.queue_file` a leaver's package "
        "(a real pupil, one document) built beforehand by `transfer.package.build."
        "build_package` straight from a document file into `data_dir/outgoing/` (so a 1 GiB "
        "document never passes through the store). The running sender's delivery sweep sends "
        "it. Times are the sender's own records: `queued_at`, the `sent` event (every chunk "
        "acknowledged) and the `receipt.delivered` event (the receiver checked size, SHA-256, "
        "the signed manifest and the addressee, and its signed receipt was verified and kept). "
        "SQLite in each data directory (WAL, `synchronous=FULL`).",
        "",
    ]
    if large:
        lines += [
            "### One large package",
            "",
            f"For each size, {RUNS} runs, each with a new package and fresh `serve` processes; "
            "the table gives the medians (every run is listed below it). *Plain* = in the "
            "same run, just before the nodes start, the same package file uploaded by a "
            "minimal aiohttp client (one streamed `PUT`, 256 KiB pieces) to a minimal aiohttp "
            "server in its own process that writes the body to a file and fsyncs it, over TLS "
            "with the receiving node's certificate and the same trust file; its time is the "
            "request's. *Transfer* = from the receiving node's record of the offer (the "
            "transfer's first request, `offered_at`) to the sender's verified delivered "
            "receipt: the time the bytes take node to node, compared with the plain upload "
            "for the throughput ratio. *Queue → delivered receipt* also counts the wait for "
            f"the sender's next delivery sweep (at most {SWEEP_SECONDS} s here; "
            "`sweep_seconds`, 15 s by default). *Upload* = queue to `sent` (every byte "
            "acknowledged); *complete* = `sent` to the verified delivered receipt (the "
            "receiver checks size and SHA-256 (taken from the one request's checked "
            "`Content-Digest` when the package came whole; the file is re-read otherwise), "
            "decrypts up to the manifest and checks its signature and addressee, signs its "
            "receipt; the sender verifies and keeps it). Peak RSS is `VmHWM` from "
            "`/proc/<pid>/status` of each `serve` "
            "process after the delivery, the largest of the runs (interpreter and libraries "
            "included).",
            "",
            "| document | package | transfer (offer → delivered receipt) | queue → delivered "
            "receipt | upload | complete | plain aiohttp upload | **node / plain (transfer)** "
            "| node / plain (queue → receipt) | sender peak RSS | receiver peak RSS | plain "
            "server peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        runs: dict[int, list[_LargeRow]] = {}
        for r in large:
            runs.setdefault(r.mib, []).append(r)
        for mib, rs in runs.items():
            med = statistics.median
            lines.append(
                f"| {mib} MiB | {rs[0].package_bytes / MIB:.1f} MiB | "
                f"{med(r.transfer for r in rs):.2f} s | "
                f"{med(r.end_to_end for r in rs):.2f} s | {med(r.upload for r in rs):.2f} s | "
                f"{med(r.complete for r in rs):.2f} s | {med(r.plain for r in rs):.2f} s | "
                f"**{med(r.transfer / r.plain for r in rs):.2f}** | "
                f"{med(r.end_to_end / r.plain for r in rs):.2f} | "
                f"{max(r.sender_hwm for r in rs):.1f} MiB | "
                f"{max(r.receiver_hwm for r in rs):.1f} MiB | "
                f"{max(r.plain_hwm for r in rs):.1f} MiB |"
            )
        lines += ["", "Every run (s), transfer / queue → receipt / plain:"]
        for mib, rs in runs.items():
            each = ", ".join(f"{r.transfer:.2f} / {r.end_to_end:.2f} / {r.plain:.2f}" for r in rs)
            mibs = statistics.median(r.package_bytes / MIB / r.transfer for r in rs)
            plain = statistics.median(r.package_bytes / MIB / r.plain for r in rs)
            lines.append(
                f"- {mib} MiB: {each} (median {mibs:.0f} MiB/s node to node, {plain:.0f} MiB/s "
                "plain)"
            )
        lines += ["", "The aim is node / plain ≤ 1.5.", ""]
    if bursts:
        files = bursts[0].files
        lines += [
            "### Transition-week burst",
            "",
            f"{files:,} leaver's files of about {BURST_BYTES / 1e6:.0f} MB (one document of "
            f"{BURST_BYTES:,} random bytes and the pupil record; each package "
            f"{bursts[0].package_bytes:,} bytes) from 20 primary schools, all hosted on one "
            "node, to 5 secondary schools hosted on a second node (every package crosses "
            "between the nodes). A real pupil and a DSL account per school; the packages are "
            f"prebuilt while the nodes are stopped (*build*, not counted). Then, with both "
            f"nodes running, this process queues all of them, {QUEUE_CONCURRENCY} at a time "
            "(*queueing*), while the sender's sweeps deliver them. *Total* runs from the first "
            "queueing to the last delivered receipt; *latency* is each package's time from "
            "`queued_at` to its verified delivered receipt. PostgreSQL: one throw-away "
            "server on loopback (its default, durable settings: `fsync` on), a database per "
            "node. *Held* = packages the receiving node holds as delivered (each once). "
            "*Two senders*: a second `serve` process of the sending node (same data directory, "
            "same PostgreSQL database, its own port) runs beside the first, and both sweep the "
            "one outbox (each package is claimed by one of them). *200 schools*: 200 primary "
            "schools on the sending node and 200 secondary schools on the receiving one, each "
            "with its own keys, a DSL and its pupils; peak RSS shows what the schools' "
            "keys and the directory cost each node. *Built from the store*: each pupil is "
            "prepared with the next school recorded, one concern and one document (a PDF of "
            f"{BURST_BYTES:,} bytes) kept sealed in the store (*build*, not counted, is then "
            "filling the store), and this process queues each as a DSL's send does "
            "(`Outbox.queue_leaver_file`: the node reads and decrypts the pupil's records, "
            "chronology and documents, builds and signs the package, and queues it), so "
            "*queueing* and *total* include building every package; *latency* still starts at "
            "`queued_at`, when the built package joins the queue. *Package* is the mean size.",
            "",
            "| set-up | files | package | build (not counted) | queueing | total | packages/s | "
            "latency p50 | latency p95 | max | held | sender peak RSS | receiver peak RSS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for b in bursts:
            lines.append(
                f"| {_SETUPS.get(b.db, b.db)} | {b.files:,} | {b.package_bytes:,} | "
                f"{b.build_s:.1f} s | {b.queue_s:.1f} s | {b.total_s:.1f} s | "
                f"{b.files / b.total_s:.1f} | {statistics.median(b.latencies):.1f} s | "
                f"{_pct(b.latencies, 95):.1f} s | {max(b.latencies):.1f} s | {b.received:,} | "
                f"{b.sender_hwm:.1f} MiB | {b.receiver_hwm:.1f} MiB |"
            )
        lines.append("")
    return "\n".join(lines)


def run() -> str:
    keep = os.environ.get("HANDOVER_BENCH_TRANSFER_DIR")
    with contextlib.ExitStack() as stack:
        if keep:
            root = Path(keep)
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-xfer-")))
        large = _large(root / "large") if SIZES and SIZES != [0] else []
        bursts = [_burst(root / f"burst-{db}", db) for db in BURST_DBS if db and BURST_FILES]
        return _report(large, bursts)


def main() -> int:
    action, args = sys.argv[1], sys.argv[2:]
    if action == "plain-server":
        _plain_server(int(args[0]), args[1], args[2], args[3])
    elif action == "plain-upload":
        _plain_upload(args[0], args[1], args[2])
    else:
        raise SystemExit(f"unknown action {action}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
