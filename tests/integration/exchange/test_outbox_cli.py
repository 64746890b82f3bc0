"""``handover send leaver-file`` and ``handover outbox ...`` on a real initialised node."""

from __future__ import annotations

import asyncio
import secrets
from datetime import date
from pathlib import Path

import pytest

from schemas.records import Destination, NewPupil, PupilChanges
from tests.integration.exchange.outbox_support import upn
from transfer.cli import main
from transfer.commands.init import initialise
from transfer.node import Node
from transfer.transport.http import http_transport


def _setup(data: Path) -> str:
    async def go() -> str:
        await initialise(
            data,
            name="t",
            schools=[("123456", "8012000", "Hillside"), ("654321", "8014001", "Riverside")],
            agencies=[],
            admin=None,
            admin_password=None,
        )
        async with await Node.open(data, transport=http_transport) as node:
            rec = await node.accounts.bootstrap_account(
                "123456",
                username="dsl",
                display_name="Sam Patel",
                roles=["dsl"],
                password="a long enough pass phrase 42",
            )
            actor = await node.store.actor_for(rec.id)
            pupil = await node.store.create_pupil(
                actor,
                NewPupil(
                    upn=upn(9),
                    surname="Hughes",
                    forename="Ellie",
                    dob=date(2015, 6, 21),
                    sex="F",
                    destination=Destination(kind="school", urn="654321"),
                ),
            )
            return pupil.id

    return asyncio.run(go())


def test_send_list_show_cancel_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    # Nothing listens there: the delivery is tried, fails for now and stays queued.
    monkeypatch.setenv("HANDOVER_NODE__BASE_URL", "http://127.0.0.1:9")
    data = tmp_path / "node"
    pupil = _setup(data)
    me = ["--data-dir", str(data), "--org", "123456", "--as", "dsl"]
    capsys.readouterr()
    assert main(["send", "leaver-file", *me, "--pupil", pupil, "--to", "654321", "--deliver"]) == 0
    out = capsys.readouterr().out
    package_id = out.split()[0]
    assert "queued" in out and "to Riverside (654321)" in out and "not delivered yet" in out
    assert main(["outbox", "list", *me]) == 0
    assert package_id in capsys.readouterr().out
    assert main(["outbox", "show", *me, package_id]) == 0
    shown = capsys.readouterr().out
    assert "queued" in shown and "retry" in shown and f"pupils: {pupil}" in shown
    assert main(["outbox", "cancel", *me, package_id]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["outbox", "cancel", *me, package_id]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("handover: error: this package is cancelled")
    other = ["--data-dir", str(data), "--org", "123456", "--as", "nobody"]
    assert main(["outbox", "list", *other]) == 4
    assert main(["outbox", "deliver", "--data-dir", str(data)]) == 0
    assert "0 packages tried; 0 new receipts pulled" in capsys.readouterr().out


def test_send_by_upn_asks_for_a_reason_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 11, items 16 and 17: ``--pupil UPN``, and ``--reason`` when the school is not
    the pupil's recorded destination (one line naming the flag; nothing queued without it)."""
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    monkeypatch.setenv("HANDOVER_NODE__BASE_URL", "http://127.0.0.1:9")
    data = tmp_path / "node"
    pupil = _setup(data)

    async def destination_unknown() -> None:
        async with await Node.open(data, transport=http_transport) as node:
            admin = await node.store.find_staff("123456", "dsl")
            assert admin is not None
            await node.store.update_pupil(
                await node.store.actor_for(admin.id),
                pupil,
                PupilChanges(destination=Destination(kind="unknown")),
            )

    asyncio.run(destination_unknown())
    me = ["--data-dir", str(data), "--org", "123456", "--as", "dsl"]
    send = ["send", "leaver-file", *me, "--pupil", upn(9).lower(), "--to", "654321"]
    capsys.readouterr()
    assert main(send) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not Ellie Hughes's recorded next school" in err[0]
    assert err[0].endswith('Add --reason "..." to send it.')
    assert main(["outbox", "list", *me]) == 0
    assert capsys.readouterr().out.strip() == "the outbox is empty"
    assert main([*send, "--reason", "her new school asked for it by phone"]) == 0
    package_id = capsys.readouterr().out.split()[0]
    assert main(["outbox", "show", *me, package_id]) == 0
    shown = capsys.readouterr().out
    assert f"pupils: {pupil}" in shown
    assert (
        "sent with a reason (not the recorded destination): her new school asked for it by phone"
        in shown
    )
    assert main(["send", "leaver-file", *me, "--pupil", "H801200001009", "--to", "654321"]) == 2
    assert "wrong check letter" in capsys.readouterr().err


def test_a_ctf_addressed_to_another_school_needs_force_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 11, item 21: ``handover pupils import-ctf`` names the school a CTF is addressed to
    and imports it only with ``--force``."""
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    data = tmp_path / "node"
    asyncio.run(
        initialise(
            data,
            name="t",
            schools=[("199001", "8012000", "Harbourside")],
            agencies=[],
            admin=None,
            admin_password=None,
        )
    )

    async def admin() -> None:
        async with await Node.open(data, transport=http_transport) as node:
            await node.store.bootstrap_staff(
                "199001", username="office", display_name="Pat Office", roles=["administrator"]
            )

    asyncio.run(admin())
    sample = Path(__file__).resolve().parents[2] / "assets" / "ctf" / "leavers_801_2000.xml"
    me = ["--data-dir", str(data), "--org", "199001", "--as", "office"]
    capsys.readouterr()
    assert main(["pupils", "import-ctf", *me, str(sample)]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "addressed to" in err[0] and "URN 199002" in err[0]
    assert err[0].endswith("confirm it with --force")
    assert main(["pupils", "import-ctf", *me, str(sample), "--force"]) == 0
    out = capsys.readouterr().out
    assert "imported (leavers recorded): 4 pupils added, 0 pupils updated" in out
    assert main(["pupils", "import-ctf", *me, str(tmp_path / "missing.xml")]) == 2
