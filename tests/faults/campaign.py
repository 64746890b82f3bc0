"""The kill -9 campaign: real ``serve`` processes killed at seeded random moments.

A primary school sends a batch of leaver's files to a secondary school; the secondary's DSL
opens and accepts each one; receipts go back. Meanwhile a killer sends SIGKILL to a random
``serve`` process (sender or receiver; on PostgreSQL, one of the two processes each node
runs on its shared database) at random moments, and starts it again a moment later. Then
the campaign settles (no more kills; leases that killed processes held are let run out;
every node restarted once, which is when a node recovers) and checks what
``docs/reliability.md`` promises:

- each package is held once by the receiver, imported once, and is one package at the
  sender (no duplicate, none lost);
- every state change has its audit entry, exactly once, on both sides;
- every receipt the receiver issued is held by the sender, and the other way round;
- ``handover audit verify`` says the log is intact on both nodes, and no promised entry
  is left waiting;
- no stop logged a ``CancelledError``.

Everything a run decides (which process, when, how long it stays down) comes from one
seeded random generator; what happens inside the processes does not, so two runs with one
seed are alike, not identical. :func:`run_campaign` returns the figures that
``docs/reliability.md`` quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.support import (
    PRIMARY,
    PRIMARY_DSL,
    SECONDARY,
    SECONDARY_DSL,
    Pair,
    add_pupil,
    build_pair,
    cli,
    sign_in,
)
from transfer.config import load_config
from transfer.demo.api import StaffClient
from transfer.demo.procs import ServeProcess
from transfer.demo.world import WorldNode
from transfer.errors import PeerError

Engine = Literal["sqlite", "postgres"]
#: Errors a driver meets while processes die under it: it tries again.
_PASSING = (PeerError, aiohttp.ClientError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class Plan:
    seed: int
    packages: int
    engine: Engine
    #: Kills stop once this many were made (and once every package is accepted).
    kills: int
    #: Seconds between kills, and how long a killed process stays down (uniform ranges).
    gap: tuple[float, float] = (0.4, 2.0)
    down: tuple[float, float] = (0.1, 1.0)
    #: How long the whole run may take before it is declared stuck.
    patience: float = 600.0


@dataclass
class Figures:
    """What a run did and found (``docs/reliability.md`` quotes these)."""

    seed: int
    engine: str
    packages: int
    kills: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    receipts: int = 0
    audit_entries: dict[str, int] = field(default_factory=dict)
    replayed_entries: dict[str, int] = field(default_factory=dict)
    removed_drafts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "engine": self.engine,
            "packages": self.packages,
            "kills": dict(self.kills),
            "kills_total": sum(self.kills.values()),
            "seconds": round(self.seconds, 1),
            "receipts": self.receipts,
            "audit_entries": self.audit_entries,
            "replayed_entries": self.replayed_entries,
            "removed_drafts": self.removed_drafts,
        }


# ------------------------------------------------------------------ the nodes


@dataclass
class Node:
    """A node of the pair and its ``serve`` processes (two on PostgreSQL)."""

    world: WorldNode
    procs: list[ServeProcess]
    url: str

    @property
    def name(self) -> str:
        return self.world.name

    def urls(self) -> list[str]:
        return [p.base_url for p in self.procs]


def build(root: Path, plan: Plan, pg_urls: tuple[str, str] | None) -> tuple[Pair, list[Node]]:
    pair = build_pair(
        root,
        primary_db=pg_urls[0] if pg_urls else None,
        secondary_db=pg_urls[1] if pg_urls else None,
    )
    nodes = []
    for world_node in (pair.primary, pair.secondary):
        procs = [world_node.serve]
        if plan.engine == "postgres":
            procs.append(world_node.serve.sibling(f"{world_node.name}-2"))
        url = load_config(world_node.data_dir).database_url(world_node.data_dir)
        nodes.append(Node(world_node, procs, url))
    return pair, nodes


def _all(nodes: list[Node]) -> Iterator[ServeProcess]:
    for node in nodes:
        yield from node.procs


def start_all(nodes: list[Node]) -> None:
    for proc in _all(nodes):
        proc.start()
    for proc in _all(nodes):
        proc.wait_ready(timeout=120)


def stop_all(nodes: list[Node]) -> None:
    for proc in _all(nodes):
        proc.stop(timeout=60)


async def sql(node: Node, statement: str, **params: Any) -> list[Any]:
    engine = create_async_engine(node.url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def expire_leases(node: Node) -> None:
    """Let every lease a killed process held run out, as the time passing would: a delivery's
    or a draft's (2 minutes), a receipt push's (5 minutes)."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    if node.url.startswith("sqlite"):
        past = past.replace(tzinfo=None)
    await sql(
        node,
        "UPDATE outgoing_packages SET lease_until = :past WHERE lease_until IS NOT NULL",
        past=past,
    )
    await sql(
        node,
        "UPDATE inbox_receipts SET next_attempt_at = :past WHERE push_state = 'pending'",
        past=past,
    )


# ------------------------------------------------------------------ people


class People:
    """The two DSLs, each able to use any process of their node that is up."""

    def __init__(self, pair: Pair, http: aiohttp.ClientSession, nodes: list[Node]) -> None:
        self.pair, self.http, self.nodes = pair, http, nodes
        self.clients: dict[str, list[StaffClient]] = {}

    async def sign_in(self) -> None:
        for node, org, user in (
            (self.nodes[0], PRIMARY[0], PRIMARY_DSL[0]),
            (self.nodes[1], SECONDARY[0], SECONDARY_DSL[0]),
        ):
            self.clients[node.name] = [
                await sign_in(self.pair, self.http, node.world, org, user, base_url=url)
                for url in node.urls()
            ]

    async def call(self, node: Node, method: str, path: str, body: Any = None) -> Any:
        """The call on the first process of ``node`` that answers; raises the last error."""
        last: BaseException | None = None
        for client in self.clients[node.name]:
            try:
                return await asyncio.wait_for(client.call(method, path, body), 30)
            except PeerError as exc:
                status = re.search(r": (\d{3}) ", str(exc))
                if status is None or int(status.group(1)) < 500:
                    raise
                last = exc  # this process is stopping or starting: try the other
            except _PASSING as exc:
                last = exc
        assert last is not None
        raise last


# ------------------------------------------------------------------ the run


async def _send_all(
    people: People, sender: Node, pupils: dict[str, str], known: dict[str, str]
) -> dict[str, str]:
    """pupil id -> package id, for every pupil whose file is queued (sent once each)."""
    packages: dict[str, str] = {}
    for pupil_id in pupils:
        if pupil_id in known:
            continue
        with contextlib.suppress(*_PASSING):
            listed = await people.call(sender, "GET", f"/outbox?pupil_id={pupil_id}")
            live = [i for i in listed["items"] if i["state"] not in ("cancelled", "draft")]
            if live:
                packages[pupil_id] = live[0]["id"]
                continue
            if any(i["state"] == "draft" for i in listed["items"]):
                continue  # being built, or left by a killed builder: its lease will tell
            sent = await people.call(
                sender,
                "POST",
                "/outbox/leaver-files",
                {"pupil_id": pupil_id, "to_org_id": SECONDARY[0]},
            )
            packages[pupil_id] = sent["id"]
    return packages


async def _decide_all(people: People, receiver: Node) -> set[str]:
    """Open and accept what has arrived; the ids accepted so far."""
    accepted: set[str] = set()
    with contextlib.suppress(*_PASSING):
        inbox = await people.call(receiver, "GET", "/inbox")
        for item in inbox["items"]:
            pid = item["package_id"]
            if item["state"] == "accepted":
                accepted.add(pid)
                continue
            with contextlib.suppress(*_PASSING):
                if item["state"] == "delivered":
                    await people.call(receiver, "GET", f"/inbox/{pid}")
                await people.call(receiver, "POST", f"/inbox/{pid}/accept", {})
                accepted.add(pid)
    return accepted


class Killer:
    """Kills a random ``serve`` process at random moments, and starts it again."""

    def __init__(self, nodes: list[Node], plan: Plan, figures: Figures) -> None:
        self.nodes, self.plan, self.figures = nodes, plan, figures
        self.random = random.Random(plan.seed)
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        procs = list(_all(self.nodes))
        while not self.stopped.is_set() and sum(self.figures.kills.values()) < self.plan.kills:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), self.random.uniform(*self.plan.gap))
                return
            victim = self.random.choice(procs)
            down = self.random.uniform(*self.plan.down)
            if not victim.running:
                continue
            await asyncio.to_thread(victim.kill)
            self.figures.kills[victim.name] += 1
            await asyncio.sleep(down)
            await asyncio.to_thread(victim.start)


async def run_campaign(
    root: Path, plan: Plan, *, pg_urls: tuple[str, str] | None = None
) -> Figures:
    figures = Figures(plan.seed, plan.engine, plan.packages)
    began = time.monotonic()
    pair, nodes = await asyncio.to_thread(build, root, plan, pg_urls)
    sender, receiver = nodes
    try:
        await asyncio.to_thread(start_all, nodes)
        async with aiohttp.ClientSession() as http:
            people = People(pair, http, nodes)
            await people.sign_in()
            pupils = {}
            for n in range(plan.packages):
                pupil_id = await add_pupil(
                    people.clients[sender.name][0], 100 + n, concern=n % 2 == 0
                )
                pupils[pupil_id] = f"{100 + n}"
            killer = Killer(nodes, plan, figures)
            killing = asyncio.create_task(killer.run())
            deadline = time.monotonic() + plan.patience
            packages: dict[str, str] = {}
            accepted: set[str] = set()
            settled = False
            while True:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"stuck: {len(packages)} of {plan.packages} queued, {len(accepted)} "
                        f"accepted after {plan.patience:.0f} s (seed {plan.seed})"
                    )
                packages.update(await _send_all(people, sender, pupils, packages))
                accepted |= await _decide_all(people, receiver)
                # The killer makes every kill it planned, even once all is accepted (receipts
                # still travel then): a run that finished its work early would otherwise test
                # fewer crashes than it says, depending on how fast the machine is.
                if killing.done() and not settled:
                    killer.stopped.set()
                    await killing
                    # Settle: let the killed processes' leases run out, and restart every
                    # process once (that is when a node recovers what a crash left).
                    await asyncio.to_thread(stop_all, nodes)
                    for node in nodes:
                        await expire_leases(node)
                    await asyncio.to_thread(start_all, nodes)
                    settled = True
                    continue
                if settled and len(accepted) == plan.packages and len(packages) == plan.packages:
                    if await _receipts_settled(sender, receiver, set(packages.values())):
                        break
                await asyncio.sleep(0.5)
        figures.seconds = time.monotonic() - began
        await asyncio.to_thread(stop_all, nodes)
        await check(figures, pair, nodes, pupils, packages)
        return figures
    finally:
        pair.world.stop()
        for proc in _all(nodes):
            proc.kill()


async def _receipts_settled(sender: Node, receiver: Node, ids: set[str]) -> bool:
    issued = await sql(receiver, "SELECT id, package_id FROM inbox_receipts")
    held = await sql(sender, "SELECT receipt_id, package_id FROM outgoing_receipts")
    ours = {r[0] for r in issued if r[1] in ids}
    return len(ours) == 3 * len(ids) and ours <= {r[0] for r in held}


# ------------------------------------------------------------------ the checks


async def _audit(node: Node) -> list[dict[str, Any]]:
    out = await cli(
        ["audit", "show", "--data-dir", str(node.world.data_dir), "--json", "--limit", "10000000"]
    )
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _per_package(entries: list[dict[str, Any]], action: str, ids: set[str]) -> Counter[str]:
    return Counter(
        e["targets"]["package"]
        for e in entries
        if e["action"] == action and e["outcome"] == "ok" and e["targets"].get("package") in ids
    )


async def check(
    figures: Figures,
    pair: Pair,
    nodes: list[Node],
    pupils: dict[str, str],
    packages: dict[str, str],
) -> None:
    sender, receiver = nodes
    ids = set(packages.values())
    assert len(ids) == len(pupils) == figures.packages

    # Each package held once by the receiver, accepted, imported once; one per pupil sent.
    incoming = await sql(receiver, "SELECT id, state FROM incoming_packages")
    assert sorted(incoming) == sorted((pid, "accepted") for pid in ids), incoming
    outgoing = await sql(sender, "SELECT id, state FROM outgoing_packages")
    assert sorted(outgoing) == sorted((pid, "accepted") for pid in ids), outgoing
    imported = await sql(
        receiver, "SELECT count(*), count(DISTINCT pupil_id) FROM incoming_packages"
    )
    assert tuple(imported[0]) == (len(ids), len(ids))
    pupils_there = await sql(receiver, "SELECT count(*) FROM pupils")
    assert pupils_there[0][0] == len(ids)  # none imported twice

    # Every receipt issued is held by the sender, and nothing else.
    issued = await sql(receiver, "SELECT id, package_id, kind FROM inbox_receipts")
    held = await sql(sender, "SELECT receipt_id, package_id, kind FROM outgoing_receipts")
    assert sorted(map(tuple, issued)) == sorted(map(tuple, held))
    kinds = Counter((r[1], r[2]) for r in issued)
    for pid in ids:
        for kind in ("delivered", "viewed", "accepted"):
            assert kinds[(pid, kind)] == 1, (pid, kind, kinds)
    figures.receipts = len(issued)

    # Every state change with its audit entry, once; no promise left; the logs intact.
    for node in nodes:
        waiting = await sql(node, "SELECT count(*) FROM audit_intents")
        assert waiting[0][0] == 0, f"{node.name}: promised audit entries not written"
        await cli(["audit", "verify", "--data-dir", str(node.world.data_dir)])
    got = await _audit(receiver)
    for action in ("transfer.offer", "transfer.received", "transfer.accepted"):
        assert _per_package(got, action, ids) == Counter({pid: 1 for pid in ids}), action
    issued_entries = Counter(
        e["targets"].get("receipt") for e in got if e["action"] == "receipt.issued"
    )
    assert issued_entries == Counter({r[0]: 1 for r in issued})
    sent = await _audit(sender)
    for action in ("transfer.queued", "transfer.sent"):
        assert _per_package(sent, action, ids) == Counter({pid: 1 for pid in ids}), action
    # A receipt moves the state only forward (an accepted receipt that arrives before the
    # viewed one skips "viewed"): each move the package's events show has its entry, once.
    moves = await sql(sender, "SELECT package_id, event, state FROM outgoing_events")
    for kind in ("delivered", "viewed", "accepted"):
        moved = Counter(
            m[0] for m in moves if m[1] == f"receipt.{kind}" and m[2] == kind and m[0] in ids
        )
        assert _per_package(sent, f"transfer.{kind}", ids) == moved, kind
        if kind == "accepted":
            assert moved == Counter({pid: 1 for pid in ids})
    verified = Counter(
        e["detail"].get("receipt") for e in sent if e["action"] == "receipt.verified"
    )
    assert verified == Counter({r[0]: 1 for r in held})
    figures.audit_entries = {"sender": len(sent), "receiver": len(got)}
    figures.replayed_entries = {
        "sender": sum(1 for e in sent if e["detail"].get("replayed")),
        "receiver": sum(1 for e in got if e["detail"].get("replayed")),
    }
    figures.removed_drafts = sum(
        1
        for e in sent
        if e["action"] == "transfer.queued" and e["detail"].get("reason") == "interrupted"
    )

    # A stop lets its sweeps finish: no CancelledError in any process's log.
    for proc in _all(nodes):
        text = proc.log_file.read_text(encoding="utf-8", errors="replace")
        assert "CancelledError" not in text, f"{proc.name}: {proc.log_tail(20)}"
