"""Route 1 of referrals end to end, against a REAL agency node.

Two nodes built the way an operator builds them (``transfer.demo.world.build_world``): a
school's node and a MASH's node (an agency, ``social_care``), each a ``handover serve`` child
process on loopback HTTPS with its own data directory, KEK, TLS certificate and database,
both having imported the directory authority's signed directory. People act through the
staff API over HTTPS: the school's DSL drafts a MASH referral and sends it by the ``node``
route; the MASH's duty worker signs in on the agency node, finds it in the inbox, opens it
(a viewed receipt goes back) and accepts it with the MASH reference, or rejects it with a
reason. What is checked is what a person could check: the referral's state on the school's
side, the outbox's receipts verified with the agency's own public key, the files on the
agency's disk, the agency's audit trail, and the CLI's answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import aiohttp
import pytest

from keys import minisign
from keys.keyfiles import KeyFiles
from keys.sealing import KekProtection
from tests.support.referrals import mash_form
from transfer.config import parse_kek
from transfer.demo.api import StaffClient
from transfer.demo.world import NodeSpec, World, WorldNode, build_world
from transfer.errors import PeerError
from transfer.identifiers import upn_check_letter
from transfer.receipts import verify_receipt

SCHOOL = ("123456", "8012000", "Hillside Primary School")
MASH = ("mash-bristol", "social_care", "Bristol MASH")
SCHOOL_DSL = ("s.patel", "Sam Patel")
MASH_WORKER = ("m.triage", "Mo Triage")
#: Something only the sealed form holds: it must never be plaintext on the agency's disk.
SECRET_TEXT = "Amara disclosed being hit at home by Darren Mills."
PATIENCE = 60.0

T = TypeVar("T")


@dataclass
class Agencies:
    world: World
    passwords: dict[str, str]

    @property
    def school(self) -> WorldNode:
        return self.world.nodes["school"]

    @property
    def mash(self) -> WorldNode:
        return self.world.nodes["mash"]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.world.trust_file))

    def mash_public_key(self) -> minisign.PublicKey:
        node = self.mash
        kek = parse_kek(node.kek_file.read_text(encoding="ascii"), str(node.kek_file))
        keys = KeyFiles.for_data_dir(node.data_dir, KekProtection(kek))
        return keys.load(MASH[0]).minisign_public_key


#: One pair of accounts per test (each test signs in afresh, enrolling TOTP, as the role needs).
TESTS = 3


async def _accounts(world: World) -> dict[str, str]:
    """DSLs at the school and duty workers (the DSL role, ``dsl``) at the MASH."""
    from transfer.node import Node
    from transfer.transport.http import http_transport

    passwords: dict[str, str] = {}
    for node_name, org, (user, name) in (
        ("school", SCHOOL[0], SCHOOL_DSL),
        ("mash", MASH[0], MASH_WORKER),
    ):
        async with await Node.open(
            world.nodes[node_name].data_dir, transport=http_transport
        ) as node:
            assert (await node.store.get_organisation(org)).kind == (
                "school" if node_name == "school" else "social_care"
            )
            for n in range(1, TESTS + 1):
                username = f"{user}{n}"
                passwords[username] = secrets.token_urlsafe(15)
                await node.accounts.bootstrap_account(
                    org,
                    username=username,
                    display_name=name,
                    roles=["dsl"],
                    password=passwords[username],
                )
    return passwords


@pytest.fixture(scope="module")
def agencies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agencies]:
    """A school's node and a MASH's node, started once for this module's tests."""
    world = build_world(
        tmp_path_factory.mktemp("agency-world"),
        [
            NodeSpec("school", "Hillside node", schools=[SCHOOL]),
            NodeSpec("mash", "Bristol MASH node", agencies=[MASH]),
        ],
        sweep_seconds=0.3,
        retry_base_seconds=0.3,
    )
    try:
        passwords = asyncio.run(_accounts(world))
        world.start()
        yield Agencies(world, passwords)
    finally:
        world.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _sign_in(
    agencies: Agencies, http: aiohttp.ClientSession, node: WorldNode, org: str, user: str
) -> StaffClient:
    client = StaffClient(http, node.base_url, agencies.ssl_context())
    await client.sign_in(org, user, agencies.passwords[user])
    return client


async def _eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + PATIENCE
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {PATIENCE:.0f} s for {what}")
        await asyncio.sleep(0.1)


def _upn(serial: int) -> str:
    body = f"801200031{serial:03d}"
    return upn_check_letter(body) + body


async def _referral_sent(dsl: StaffClient, serial: int) -> tuple[str, str, str]:
    """A pupil with a concern, a MASH referral drawing on it, sent by the node route.

    Returns the referral id, the package id and the concern id.
    """
    upn = _upn(serial)
    pupil = await dsl.call(
        "POST",
        "/pupils",
        {
            "upn": upn,
            "surname": "Okafor",
            "forename": f"Amara{serial}",
            "dob": "2015-03-14",
            "sex": "F",
            "year_group": "6",
        },
    )
    concern = await dsl.call(
        "POST",
        "/concerns",
        {
            "pupil_ids": [pupil["id"]],
            "category": "child_protection",
            "happened_at": datetime(2026, 1, 12, 9, 10, tzinfo=UTC).isoformat(),
            "location": "Year 6 classroom",
            "account": "Arrived with a bruise on her forearm; said she fell off the sofa.",
        },
    )
    form = mash_form(reason=SECRET_TEXT)
    form["child"].update(forename=f"Amara{serial}", dob="2015-03-14", upn=upn)
    draft = await dsl.call(
        "POST",
        "/referrals",
        {
            "pupil_id": pupil["id"],
            "agency_org_id": MASH[0],
            "form": form,
            "selection": [{"kind": "concern", "id": concern["id"]}],
        },
    )
    assert draft["state"] == "draft"
    sent = await dsl.call("POST", f"/referrals/{draft['id']}/send", {"route": "node"})
    assert sent["route"] == "node" and sent["referral"]["state"] == "sent"
    return str(draft["id"]), str(sent["package_id"]), str(concern["id"])


async def _in_inbox(worker: StaffClient, package_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        items = (await worker.call("GET", "/inbox"))["items"]
        found = [i for i in items if i["package_id"] == package_id]
        return found[0] if found else None

    return await _eventually(probe, f"package {package_id} in the MASH's inbox")


async def _referral_state(dsl: StaffClient, referral_id: str, state: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        record = await dsl.call("GET", f"/referrals/{referral_id}")
        assert isinstance(record, dict)
        return record if record["state"] == state else None

    return await _eventually(probe, f"referral {referral_id} to be {state}")


async def _outgoing(dsl: StaffClient, package_id: str, kinds: list[str]) -> dict[str, Any]:
    """The school's outgoing record once it holds receipts of exactly ``kinds``."""

    async def probe() -> dict[str, Any] | None:
        record = await dsl.call("GET", f"/outbox/{package_id}")
        assert isinstance(record, dict)
        return record if sorted(r["kind"] for r in record["receipts"]) == sorted(kinds) else None

    return await _eventually(probe, f"receipts {kinds} for package {package_id}")


def _verified(agencies: Agencies, record: dict[str, Any]) -> dict[str, Any]:
    """Every receipt the school holds, verified with the MASH's own public key; by kind."""
    key = agencies.mash_public_key()
    out: dict[str, Any] = {}
    for receipt in record["receipts"]:
        wire = json.dumps({"receipt": receipt["body"], "signature": receipt["signature"]})
        verified = verify_receipt(
            wire.encode(),
            public_key=key,
            package_id=UUID(record["id"]),
            ciphertext_sha256=record["ciphertext_sha256"],
            receiver_org_id=MASH[0],
        )
        assert verified.body.sender_org_id == SCHOOL[0]
        assert verified.body.package_kind == "referral_social_care"
        out[verified.body.kind] = verified.body
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if needle in path.read_bytes():
                hits.append(path)
    return hits


def _cli(agencies: Agencies, user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer.cli",
            "inbox",
            *argv,
            "--data-dir",
            str(agencies.mash.data_dir),
            "--org",
            MASH[0],
            "--as",
            user,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _audit(agencies: Agencies, action: str) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer.cli",
            "audit",
            "show",
            "--data-dir",
            str(agencies.mash.data_dir),
            "--action",
            action,
            "--json",
            "--limit",
            "100000",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


# ------------------------------------------------------------------ accepted


async def test_mash_accepts_a_referral_with_its_reference(
    agencies: Agencies, http: aiohttp.ClientSession
) -> None:
    dsl = await _sign_in(agencies, http, agencies.school, SCHOOL[0], f"{SCHOOL_DSL[0]}1")
    referral_id, package_id, concern_id = await _referral_sent(dsl, 1)
    delivered = await _referral_state(dsl, referral_id, "delivered")
    assert delivered["package_id"] == package_id

    worker = await _sign_in(agencies, http, agencies.mash, MASH[0], f"{MASH_WORKER[0]}1")
    listed = await _in_inbox(worker, package_id)
    assert listed["package_kind"] == "referral_social_care"
    assert listed["sender_org_id"] == SCHOOL[0] and listed["state"] == "delivered"
    kept = agencies.mash.data_dir / "inbox" / f"{package_id}.age"
    assert _sha256(kept) == listed["ciphertext_sha256"]

    # Opened: verified in full, the form and the chosen record shown from memory.
    shown = await worker.call("GET", f"/inbox/{package_id}")
    assert shown["package"]["state"] == "viewed"
    assert shown["referral"]["kind"] == "social_care"
    assert shown["referral"]["reason"] == SECRET_TEXT
    assert shown["subject"]["upn"] == _upn(1)
    assert shown["counts"]["concerns"] == 1 and shown["match"] is None
    assert [e["id"] for e in shown["chronology"]] == [concern_id]

    # A referral is accepted only with the agency's reference; it is never imported.
    with pytest.raises(PeerError, match=r"422 .*reference number") as missing:
        await worker.call("POST", f"/inbox/{package_id}/accept", {})
    assert "reference" in str(missing.value)
    with pytest.raises(PeerError, match=r"400 .*not imported into the pupil store"):
        await worker.call(
            "POST", f"/inbox/{package_id}/accept", {"reference": "MASH-123", "create_new": True}
        )
    with pytest.raises(PeerError, match="422"):
        await worker.call("POST", f"/inbox/{package_id}/accept", {"reference": "x" * 101})
    accepted = await worker.call("POST", f"/inbox/{package_id}/accept", {"reference": "MASH-123"})
    assert accepted["imported"] is False and accepted["reference"] == "MASH-123"
    assert accepted["pupil_id"] is None
    assert accepted["package"]["state"] == "accepted"
    assert accepted["package"]["reference"] == "MASH-123"
    with pytest.raises(PeerError, match=r"409 .*already accepted"):
        await worker.call("POST", f"/inbox/{package_id}/accept", {"reference": "MASH-124"})

    # Kept for case work: the same verified ciphertext, shown again; no pupil at the MASH.
    assert _sha256(kept) == listed["ciphertext_sha256"]
    again = await worker.call("GET", f"/inbox/{package_id}")
    assert again["package"]["state"] == "accepted"
    assert again["package"]["reference"] == "MASH-123"
    assert again["referral"]["reason"] == SECRET_TEXT
    assert (await worker.call("GET", "/pupils"))["items"] == []
    assert _files_holding(agencies.mash.data_dir, SECRET_TEXT.encode()) == []
    items = (await worker.call("GET", "/inbox", params={"state": "accepted"}))["items"]
    mine = [(i["package_id"], i["reference"]) for i in items if i["package_id"] == package_id]
    assert mine == [(package_id, "MASH-123")]

    # The school's side: the referral is accepted with the MASH's reference, and the outbox
    # holds the delivered, viewed and accepted receipts, verified with the MASH's key.
    done = await _referral_state(dsl, referral_id, "accepted")
    assert done["agency_reference"] == "MASH-123"
    assert done["acknowledged_by"] == MASH_WORKER[1]
    steps = [e["action"] for e in done["events"]]
    assert steps[0] == "drafted" and steps[-3:] == ["sent", "delivered", "accepted"]
    record = await _outgoing(dsl, package_id, ["accepted", "delivered", "viewed"])
    assert record["state"] == "accepted"
    receipts = _verified(agencies, record)
    assert receipts["accepted"].reference == "MASH-123"
    assert receipts["accepted"].manifest_sha256 == record["manifest_sha256"]
    assert receipts["accepted"].acted_by is not None
    assert receipts["accepted"].acted_by.name == MASH_WORKER[1]
    assert receipts["viewed"].acted_by is not None and receipts["delivered"].acted_by is None

    # The MASH's audit trail: the refusals and the acceptance, no reference or text in it.
    entries = [
        e
        for e in _audit(agencies, "transfer.accepted")
        if e["targets"].get("package") == package_id
    ]
    outcomes = [(e["outcome"], e["detail"].get("reason")) for e in entries]
    assert ("refused", "reference-required") in outcomes and ("ok", None) in outcomes
    assert "MASH-123" not in json.dumps(entries) and SECRET_TEXT not in json.dumps(entries)


# ------------------------------------------------------------------ rejected


async def test_mash_rejects_a_referral_with_a_reason_the_school_sees(
    agencies: Agencies, http: aiohttp.ClientSession
) -> None:
    dsl = await _sign_in(agencies, http, agencies.school, SCHOOL[0], f"{SCHOOL_DSL[0]}2")
    referral_id, package_id, _ = await _referral_sent(dsl, 2)
    await _referral_state(dsl, referral_id, "delivered")
    worker = await _sign_in(agencies, http, agencies.mash, MASH[0], f"{MASH_WORKER[0]}2")
    await _in_inbox(worker, package_id)

    # The CLI refuses to accept a referral without the reference: one line, non-zero exit.
    refused = _cli(agencies, f"{MASH_WORKER[0]}2", "accept", package_id)
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0
    assert "reference number" in refused.stderr
    shown = _cli(agencies, f"{MASH_WORKER[0]}2", "show", package_id)
    assert shown.returncode == 0, shown.stderr
    assert "referral (social care): not imported" in shown.stdout

    reason = "Not a MASH matter: the family lives in North Somerset; refer there."
    rejected = await worker.call("POST", f"/inbox/{package_id}/reject", {"reason": reason})
    assert rejected["state"] == "rejected" and rejected["reference"] is None
    assert not (agencies.mash.data_dir / "inbox" / f"{package_id}.age").exists()
    with pytest.raises(PeerError, match="409"):
        await worker.call("GET", f"/inbox/{package_id}")
    late = _cli(agencies, f"{MASH_WORKER[0]}2", "accept", package_id, "--reference", "MASH-9")
    assert late.returncode != 0 and "already rejected" in late.stderr

    done = await _referral_state(dsl, referral_id, "rejected")
    assert done["rejection_reason"] == reason and done["agency_reference"] is None
    record = await _outgoing(dsl, package_id, ["delivered", "rejected", "viewed"])
    assert record["state"] == "rejected"
    assert _verified(agencies, record)["rejected"].reason == reason


async def test_the_cli_accepts_a_referral_with_reference(
    agencies: Agencies, http: aiohttp.ClientSession
) -> None:
    dsl = await _sign_in(agencies, http, agencies.school, SCHOOL[0], f"{SCHOOL_DSL[0]}3")
    referral_id, package_id, _ = await _referral_sent(dsl, 3)
    await _referral_state(dsl, referral_id, "delivered")
    done = _cli(
        agencies, f"{MASH_WORKER[0]}3", "accept", package_id, "--reference", "MASH-777", "--json"
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["imported"] is False and outcome["reference"] == "MASH-777"
    accepted = await _referral_state(dsl, referral_id, "accepted")
    assert accepted["agency_reference"] == "MASH-777"
    record = await _outgoing(dsl, package_id, ["accepted", "delivered"])
    assert _verified(agencies, record)["accepted"].reference == "MASH-777"
