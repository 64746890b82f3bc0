"""``handover send leaver-file`` and ``handover outbox ...`` on a real initialised node."""

from __future__ import annotations

import asyncio
import secrets
from datetime import date
from pathlib import Path

import pytest

from schemas.records import NewPupil
from tests.exchange.outbox_support import upn
from transfer.cli import main
from transfer.commands.init import initialise
from transfer.node import Node


def _setup(data: Path) -> str:
    async def go() -> str:
        await initialise(
            data, name="t", schools=[("123456", "8012000", "Hillside"),
                                     ("654321", "8014001", "Riverside")],
            agencies=[], admin=None, admin_password=None,
        )  # fmt: skip
        async with await Node.open(data) as node:
            rec = await node.accounts.bootstrap_account(
                "123456", username="dsl", display_name="Sam Patel", roles=["dsl"],
                password="a long enough pass phrase 42",
            )  # fmt: skip
            actor = await node.store.actor_for(rec.id)
            pupil = await node.store.create_pupil(
                actor, NewPupil(upn=upn(9), surname="Hughes", forename="Ellie",
                                dob=date(2015, 6, 21), sex="F"),
            )  # fmt: skip
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
    assert "0 package(s) tried" in capsys.readouterr().out
