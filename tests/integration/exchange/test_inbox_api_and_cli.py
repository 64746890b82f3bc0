"""The inbox through the JSON API (signed-in DSL, real socket) and through ``handover inbox``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.integration.exchange.inbox_support import RECEIVER, Rig, receiving_node
from tests.integration.store.conftest import KEK, FakeClock
from transfer.api import create_app
from transfer.auth import CHEAPEST, Accounts
from transfer.config import SecuritySection
from transfer.store.permissions import Role

PASSWORD = "correct staple orbit lantern"


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        yield r


async def _token(accounts: Accounts, clock: FakeClock, username: str, roles: list[Role]) -> str:
    await accounts.bootstrap_account(
        RECEIVER,
        username=username,
        display_name=username.title(),
        roles=roles,
        password=PASSWORD,
    )
    first = await accounts.sign_in(RECEIVER, username, PASSWORD)
    principal = await accounts.authenticate(first.token, allow_enrolment=True)
    enrolment = await accounts.begin_totp_enrolment(principal)
    totp = pyotp.TOTP(enrolment.secret)
    await accounts.confirm_totp_enrolment(principal, totp.at(clock.now))
    clock.advance(seconds=30)
    result = await accounts.sign_in(RECEIVER, username, PASSWORD, totp=totp.at(clock.now))
    clock.advance(seconds=30)
    return result.token


async def test_list_preview_and_accept_over_the_api(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    clock = FakeClock(datetime.now(UTC) - timedelta(minutes=5))
    accounts = Accounts(rig.store, KEK, rig.audit, SecuritySection(), clock=clock, hashing=CHEAPEST)
    dsl = {"Authorization": f"Bearer {await _token(accounts, clock, 'apidsl', [Role.DSL])}"}
    head = {"Authorization": f"Bearer {await _token(accounts, clock, 'head', [Role.HEAD_TEACHER])}"}
    app = create_app(
        store=rig.store,
        accounts=accounts,
        audit=rig.audit,
        config=rig.services.config,
        exports_dir=rig.tmp / "exports",
        inbox=rig.inbox,
    )
    async with TestClient(TestServer(app)) as c:
        doc = await (await c.get("/api/v1/openapi.json")).json()
        assert "/api/v1/inbox/{package_id}/accept" in doc["paths"]
        resp = await c.get("/api/v1/inbox", headers=dsl)
        assert resp.status == 200, await resp.text()
        assert [i["package_id"] for i in (await resp.json())["items"]] == [pid]
        resp = await c.get("/api/v1/inbox", headers=head)
        assert resp.status == 403
        assert (await resp.json())["type"] == "urn:handover:problem:forbidden"
        resp = await c.get("/api/v1/inbox?state=bogus", headers=dsl)
        assert resp.status == 422  # the states are an enum in the OpenAPI document
        resp = await c.get(f"/api/v1/inbox/{pid}", headers=dsl)
        assert resp.status == 200, await resp.text()
        preview = await resp.json()
        assert preview["subject"]["surname"] == "Okafor" and preview["package"]["state"] == "viewed"
        # The readable form, for a face to show as it is.
        first = preview["readable"]["lines"][0]
        assert (first["date"], first["time"], first["heading"]) == (
            "1 June 2026",
            "10:00",
            "Concern: Child protection",
        )
        assert first["recorded_by"] == "Staff (Staff)"
        assert preview["readable"]["documents"][0]["name"] == "Body map.pdf"
        assert {p["name"] for p in preview["people"]} == {"Staff", "Dsl"}
        resp = await c.post(f"/api/v1/inbox/{pid}/accept", json={"bogus": 1}, headers=dsl)
        assert resp.status == 422
        resp = await c.post(f"/api/v1/inbox/{pid}/accept", json={}, headers=dsl)
        assert resp.status == 200, await resp.text()
        outcome = await resp.json()
        assert outcome["new_pupil"] and outcome["package"]["state"] == "accepted"
        resp = await c.post(f"/api/v1/inbox/{pid}/reject", json={"reason": "late"}, headers=dsl)
        assert resp.status == 409
        resp = await c.get("/api/v1/inbox/not-a-uuid", headers=dsl)
        assert resp.status == 404


def _cli(rig: Rig, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env["HANDOVER_KEK"] = KEK.hex()
    env["HANDOVER_DATABASE__URL"] = db_url
    env["HANDOVER_NODE__BASE_URL"] = rig.url
    return subprocess.run(
        [sys.executable, "-m", "transfer.cli", "inbox", *args, "--data-dir", str(rig.data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _audit_show(rig: Rig, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env.update(HANDOVER_KEK=KEK.hex(), HANDOVER_DATABASE__URL=db_url)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer.cli",
            "audit",
            "show",
            "--data-dir",
            str(rig.data_dir),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


async def test_the_inbox_command_acts_as_a_named_dsl(rig: Rig, db_url: str) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    (rig.data_dir / "handover.toml").write_text("[node]\nname = 'Riverside node'\n")

    listed = _cli(rig, db_url, "list", "--org", RECEIVER, "--as", "rdsl")
    assert listed.returncode == 0, listed.stderr
    assert pid in listed.stdout and "delivered" in listed.stdout

    refused = _cli(rig, db_url, "list", "--org", RECEIVER, "--as", "rstaff")
    assert refused.returncode == 6 and refused.stderr.count("\n") == 1
    assert "handover: error:" in refused.stderr
    nobody = _cli(rig, db_url, "list", "--org", RECEIVER, "--as", "ghost")
    assert nobody.returncode == 4 and "not a staff member" in nobody.stderr

    shown = _cli(rig, db_url, "show", pid, "--org", RECEIVER, "--as", "rdsl")
    assert shown.returncode == 0, shown.stderr
    assert "Okafor" in shown.stdout and "creates a new pupil" in shown.stdout
    # The records as a DSL reads them: dates in words, who recorded, decisions, documents.
    text = shown.stdout
    assert "Chronology of Amara Okafor, born 3 November 2014" in text
    assert "1 June 2026, 10:00  Concern: Child protection" in text
    assert "Said she is scared to go home." in text and "Where: Playground" in text
    assert "Recorded by Staff (Staff)" in text and "Recorded by Dsl (DSL)" in text
    assert "Triage decision: Refer to children's social care" in text
    assert "Contact with Bristol MASH" in text and "Call MASH" in text
    assert "Body map.pdf (300 KiB, application/pdf)" in text
    assert rig.school.staff.staff_id not in text  # people by name, not by id

    accepted = _cli(rig, db_url, "accept", pid, "--org", RECEIVER, "--as", "rdsl", "--json")
    assert accepted.returncode == 0, accepted.stderr
    outcome = json.loads(accepted.stdout)
    assert outcome["package"]["state"] == "accepted"
    again = _cli(rig, db_url, "reject", pid, "--org", RECEIVER, "--as", "rdsl", "--reason", "x")
    assert again.returncode == 5 and "already accepted" in again.stderr
    # Audited as the operator acting for the person (no password or code was given), marked
    # as done from the command line: never as the person themselves.
    from transfer.audit.log import AuditLog

    log = AuditLog.open(db_url, KEK, origin="test/audit", anchor=None)
    try:
        shown_entries = await log.show(action="transfer.accepted")
    finally:
        await log.close()
    entries = [e.entry for e in shown_entries]
    assert [(e.outcome, e.detail.get("via"), e.targets["package"]) for e in entries] == [
        ("ok", "cli", pid)
    ]
    assert entries[0].actor == "operator"
    assert entries[0].detail["actor_kind"] == "operator"
    assert entries[0].detail["on_behalf_of"] == rig.receiver_dsl.staff_id
    # ``handover audit show`` says who by name, role and organisation; --json keeps the id.
    out = _audit_show(rig, db_url, "--action", "transfer.*")
    accepted_line = next(line for line in out.stdout.splitlines() if " transfer.accepted " in line)
    assert (
        "by the operator (command line), acting for Rita Dee (DSL, Riverside Academy); "
        "org Riverside Academy" in accepted_line
    )
    viewed = next(line for line in out.stdout.splitlines() if " transfer.viewed " in line)
    assert "acting for Rita Dee (DSL, Riverside Academy)" in viewed
    assert rig.receiver_dsl.staff_id not in out.stdout
    out = _audit_show(rig, db_url, "--action", "transfer.*", "--json")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    accepted_row = next(r for r in rows if r["action"] == "transfer.accepted")
    assert accepted_row["actor"] == "operator"
    assert accepted_row["detail"]["on_behalf_of"] == rig.receiver_dsl.staff_id
    assert accepted_row["actor_name"] == (
        "the operator (command line), acting for Rita Dee (DSL, Riverside Academy)"
    )
