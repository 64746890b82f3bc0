"""The CLI as a user runs it: a real node (``handover init``, ``handover serve`` in a subprocess
on 127.0.0.1) hosting two schools; one asks the other for a pupil's file, the other authorises."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from schemas.records import NewPupil
from tests.integration.alerts.test_alerts import upn
from transfer.node import Node
from transfer.store.permissions import Role
from transfer.transport.http import http_transport

HANDOVER = [sys.executable, "-m", "transfer.cli"]
PRIMARY, SECONDARY = "123456", "234567"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HANDOVER, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _seed(data: Path, env: dict[str, str]) -> None:
    old = dict(os.environ)
    os.environ.update(env)
    try:
        async with await Node.open(data, transport=http_transport) as node:
            for urn in (PRIMARY, SECONDARY):
                await node.store.bootstrap_staff(
                    urn, username="dsl", display_name="Dee Ess", roles=[Role.DSL]
                )
                await node.store.bootstrap_staff(
                    urn, username="office", display_name="Office", roles=[Role.ADMINISTRATOR]
                )
                office = await node.store.find_staff(urn, "office")
                assert office is not None
                admin = await node.store.actor_for(office.id)
                await node.store.create_pupil(
                    admin,
                    NewPupil(
                        upn=upn(31),
                        surname="Okafor",
                        forename="Amara",
                        dob=date(2014, 11, 3),
                        sex="F",
                        leaving_date=date(2026, 7, 22) if urn == PRIMARY else None,
                    ),
                )
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env.update(
        HANDOVER_KEK=secrets.token_hex(32),
        HOME=str(tmp_path / "home"),
        HANDOVER_SERVER__BEHIND_PROXY="true",
        HANDOVER_NODE__BASE_URL=f"http://127.0.0.1:{port}",
        HANDOVER_TRANSFER__SWEEP_SECONDS="0.5",
    )
    data = tmp_path / "node"
    r = _run(
        [
            "init",
            "--data-dir",
            str(data),
            "--school",
            f"{PRIMARY}:8012000:Hillside Primary",
            "--school",
            f"{SECONDARY}:8012001:Riverside Academy",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    asyncio.run(_seed(data, env))
    proc = subprocess.Popen(
        [*HANDOVER, "serve", "--data-dir", str(data), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    _, err = proc.communicate(timeout=5)
                    pytest.fail(f"serve did not start: {err[-2000:]}")
                time.sleep(0.2)
        yield data, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_request_authorise_and_alerts_through_the_cli(served: tuple[Path, dict[str, str]]) -> None:
    data, env = served
    d = ["--data-dir", str(data)]
    sec = [*d, "--org", SECONDARY, "--as", "dsl"]
    pri = [*d, "--org", PRIMARY, "--as", "dsl"]

    asked = _run(["request-file", *sec, "--upn", upn(31), "--from", PRIMARY], env)
    assert asked.returncode == 0, asked.stderr
    assert f"to {PRIMARY}: " in asked.stdout and "not delivered" not in asked.stdout
    request_id = asked.stdout.split()[2]

    seen = _run(["requests", "list", *pri, "--side", "received"], env)
    assert seen.returncode == 0, seen.stderr
    assert request_id in seen.stdout and "received" in seen.stdout and "pupil=" in seen.stdout
    alerts = _run(["alerts", "list", *pri], env)
    assert "A school has asked for a pupil's file" in alerts.stdout

    done = _run(["requests", "authorise", request_id, *pri], env)
    assert done.returncode == 0, done.stderr
    assert "authorised: leaver's file" in done.stdout and "not delivered" not in done.stdout
    for _ in range(50):  # sent at once, or by the serve process's sweep a moment later
        mine = _run(["requests", "list", *sec, "--json"], env)
        if '"state": "authorised"' in mine.stdout:
            break
        time.sleep(0.2)
    assert '"state": "authorised"' in mine.stdout

    # The secondary's DSL was told; they dismiss the alert.
    theirs = _run(["alerts", "list", *sec], env)
    alert_id = theirs.stdout.split()[0]
    assert "authorised your request" in theirs.stdout
    gone = _run(["alerts", "dismiss", alert_id, *sec], env)
    assert gone.returncode == 0 and "dismissed" in gone.stdout
    assert "no open alerts" in _run(["alerts", "list", *sec], env).stdout

    # Bad input: one line, a non-zero exit, nothing stored.
    again = _run(["requests", "authorise", request_id, *pri], env)
    assert again.returncode == 5 and again.stderr.count("\n") == 1
    unknown = _run(["request-file", *sec, "--upn", upn(31), "--from", "999999"], env)
    assert unknown.returncode == 4 and "not in this node's directory" in unknown.stderr
    nobody = _run(["alerts", "list", *d, "--org", SECONDARY, "--as", "ghost"], env)
    assert nobody.returncode == 4 and "'ghost' is not a staff member" in nobody.stderr
