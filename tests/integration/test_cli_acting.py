"""Who the command line acts as: ``--as`` (the operator acting for someone, recorded as such)
and ``--as ... --sign-in`` (the person, after their password and code typed in the terminal).

Before this, ``--as USERNAME`` acted as any member of staff with no password or code, and the
audit log and the chronology recorded it as that person.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyotp
import pytest

from schemas.records import NewPupil, PupilEventRecord
from tests.integration.exchange.outbox_support import upn
from transfer.audit.entry import Entry
from transfer.audit.log import AuditLog
from transfer.cli import main
from transfer.commands import _common as common
from transfer.commands.init import initialise
from transfer.node import Node
from transfer.transport.http import http_transport

REAL_ASK_SECRET = common.ask_secret
ORG = "123456"
#: The pupil has no recorded destination, so a send says why (it is recorded).
REASON = "Moving to Riverside; its CTF has not come yet"
PASSWORD = "a long enough pass phrase 42"
ADMIN_PASSWORD = "the administrator's own phrase"


@dataclass
class World:
    data: Path
    pupil_id: str
    dsl_id: str
    secret: str
    typed: list[str]

    def me(self, *extra: str) -> list[str]:
        return ["--data-dir", str(self.data), "--org", ORG, "--as", "dsl", *extra]

    def code(self) -> str:
        """A current code, not about to change (each time step's code is accepted once)."""
        if 30 - time.time() % 30 < 3:
            time.sleep(3.5)
        return pyotp.TOTP(self.secret).now()


def _setup(data: Path) -> tuple[str, str, str]:
    async def go() -> tuple[str, str, str]:
        await initialise(
            data,
            name="t",
            schools=[(ORG, "8012000", "Hillside"), ("654321", "8014001", "Riverside")],
            agencies=[],
            admin=None,
            admin_password=None,
        )
        async with await Node.open(data, transport=http_transport) as node:
            rec = await node.accounts.bootstrap_account(
                ORG, username="dsl", display_name="Sam Patel", roles=["dsl"], password=PASSWORD
            )
            first = await node.accounts.sign_in(ORG, "dsl", PASSWORD)
            enrolling = await node.accounts.authenticate(first.token, allow_enrolment=True)
            enrolment = await node.accounts.begin_totp_enrolment(enrolling)
            step = pyotp.TOTP(enrolment.secret)
            await node.accounts.confirm_totp_enrolment(enrolling, step.at(time.time() - 30))
            await node.accounts.sign_out(enrolling)
            pupil = await node.store.create_pupil(
                await node.store.actor_for(rec.id),
                NewPupil(
                    upn=upn(9), surname="Hughes", forename="Ellie", dob=date(2015, 6, 21), sex="F"
                ),
            )
            return pupil.id, rec.id, enrolment.secret

    return asyncio.run(go())


@pytest.fixture
def world(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for key in [k for k in os.environ if k.startswith("HANDOVER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    monkeypatch.setenv("HANDOVER_DATABASE__URL", db_url)
    monkeypatch.setenv("HANDOVER_NODE__BASE_URL", "http://127.0.0.1:9")
    data = tmp_path / "node"
    pupil_id, dsl_id, secret = _setup(data)
    typed: list[str] = []

    def answer(prompt: str) -> str:
        """What the person types at the terminal (the test's queue of answers)."""
        if not typed:
            raise AssertionError(f"nothing left to type for {prompt!r}")
        return typed.pop(0)

    monkeypatch.setattr(common, "ask_secret", answer)
    yield World(data, pupil_id, dsl_id, secret, typed)


def _audit(data: Path, action: str) -> list[Entry]:
    async def go() -> list[Entry]:
        async with await Node.open(data, transport=http_transport) as node:
            log: AuditLog = node.audit_log
            return [s.entry for s in await log.show(action=action)]

    return asyncio.run(go())


def _chronology_events(data: Path, dsl_id: str, pupil_id: str) -> list[PupilEventRecord]:
    async def go() -> list[PupilEventRecord]:
        async with await Node.open(data, transport=http_transport) as node:
            actor = await node.store.actor_for(dsl_id)
            entries = await node.store.chronology(actor, pupil_id)
        return [e.record for e in entries if isinstance(e.record, PupilEventRecord)]

    return asyncio.run(go())


def test_as_alone_is_recorded_as_the_operator_acting_for_the_person(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "send",
        "leaver-file",
        *world.me(),
        "--pupil",
        world.pupil_id,
        "--to",
        "654321",
        "--reason",
        REASON,
    ]
    assert main(args) == 0
    package_id = capsys.readouterr().out.split()[0]
    (queued,) = _audit(world.data, "transfer.queued")
    assert queued.actor == "operator"
    assert queued.detail["actor_kind"] == "operator"
    assert queued.detail["on_behalf_of"] == world.dsl_id
    assert queued.detail["via"] == "cli"
    assert world.typed == []  # nothing was asked
    # The chronology shows the operator, and for whom.
    (event,) = _chronology_events(world.data, world.dsl_id, world.pupil_id)
    assert event.kind == "transfer.queued" and event.ref == package_id
    assert event.recorded_by == "operator"
    assert event.summary.endswith("(by the server operator, acting for Sam Patel, DSL)")
    # And ``audit show`` prints it as the operator acting for them.
    assert (
        main(["audit", "show", "--data-dir", str(world.data), "--action", "transfer.queued"]) == 0
    )
    line = capsys.readouterr().out.strip()
    assert "by the operator (command line), acting for Sam Patel (DSL, Hillside)" in line


def test_sign_in_asks_for_password_and_code_and_is_recorded_as_the_person(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.typed += [PASSWORD, world.code()]
    args = [
        "send",
        "leaver-file",
        *world.me("--sign-in"),
        "--pupil",
        world.pupil_id,
        "--to",
        "654321",
        "--reason",
        REASON,
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert world.typed == []  # both were asked for
    (queued,) = _audit(world.data, "transfer.queued")
    assert queued.actor == world.dsl_id
    assert "actor_kind" not in queued.detail
    signed = _audit(world.data, "signin.ok")
    assert [e.actor for e in signed][-1] == world.dsl_id
    ended = _audit(world.data, "session.end")
    assert [e.detail["reason"] for e in ended][-1] == "signed_out"
    (event,) = _chronology_events(world.data, world.dsl_id, world.pupil_id)
    assert event.recorded_by == world.dsl_id and "operator" not in event.summary


def test_a_wrong_password_or_no_terminal_does_nothing(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [
        "send",
        "leaver-file",
        *world.me("--sign-in"),
        "--pupil",
        world.pupil_id,
        "--to",
        "654321",
        "--reason",
        REASON,
    ]
    world.typed += ["not the password at all", world.code()]
    assert main(args) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("handover: error: the organisation, username")
    # Without a terminal nothing is asked and nothing is done (the tests' stdin is none).
    monkeypatch.setattr(common, "ask_secret", REAL_ASK_SECRET)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in a terminal" in err[0]
    assert _audit(world.data, "transfer.queued") == []
    assert _chronology_events(world.data, world.dsl_id, world.pupil_id) == []


def test_approving_an_account_change_needs_the_dsl_signed_in(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOVER_PASSWORD", ADMIN_PASSWORD)
    base = ["--data-dir", str(world.data), "--org", ORG]
    # The organisation has a DSL: a second DSL-team account waits for their approval.
    create = [
        "account",
        "create",
        *base,
        "--user",
        "dee",
        "--name",
        "Dee Okoro",
        "--role",
        "deputy_dsl",
    ]
    assert main(create) == 0
    out = capsys.readouterr().out
    assert out.startswith("not created yet: the server operator asked to add an account for Dee")
    assert main(["account", "approvals", *world.me(), "--json"]) == 0
    (waiting,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert waiting["state"] == "pending" and waiting["requested_as"] == "operator"
    # The operator acting for the DSL cannot approve it.
    assert main(["account", "approve", waiting["id"], *world.me()]) == 6
    err = capsys.readouterr().err
    assert "--sign-in" in err and err.count("\n") == 1
    # The DSL, signed in with password and code, can.
    world.typed += [PASSWORD, world.code()]
    assert main(["account", "approve", waiting["id"], *world.me("--sign-in")]) == 0
    assert "approved and done" in capsys.readouterr().out
    assert main(["account", "list", *base]) == 0
    assert "dee" in capsys.readouterr().out
    decisions = _audit(world.data, "account.approval.approved")
    assert [(e.actor, e.outcome) for e in decisions] == [
        ("operator", "refused"),
        (world.dsl_id, "ok"),
    ]
