"""A DSL opens and accepts a package while the node's checkpoint file is damaged (real CLI).

Issue 17, item 9: two flipped bytes in ``audit/latest-checkpoint.note`` stopped
``inbox show`` and ``inbox accept`` with a traceback, since both issue a receipt
carrying a fresh checkpoint. Now they work, and ``audit verify`` reports the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.exchange.inbox_support import RECEIVER, Rig, receiving_node
from tests.integration.store.conftest import KEK
from transfer.audit.log import ANCHOR


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        yield r


def _cli(rig: Rig, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env["HANDOVER_KEK"] = KEK.hex()
    env["HANDOVER_DATABASE__URL"] = db_url
    env["HANDOVER_NODE__BASE_URL"] = rig.url
    return subprocess.run(
        [sys.executable, "-m", "transfer.cli", *args, "--data-dir", str(rig.data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_inbox_show_and_accept_work_with_a_damaged_checkpoint_file(
    rig: Rig, db_url: str
) -> None:
    pupil = await rig.make_pupil_file()
    pid, _, _ = await rig.deliver(pupil)
    (rig.data_dir / "handover.toml").write_text("[node]\nname = 'Riverside node'\n")
    made = _cli(rig, db_url, "audit", "checkpoint")
    assert made.returncode == 0, made.stderr
    anchor = rig.data_dir / ANCHOR
    raw = bytearray(anchor.read_bytes())
    raw[5] ^= 0x80
    raw[len(raw) // 2] ^= 0x01
    anchor.write_bytes(bytes(raw))

    shown = _cli(rig, db_url, "inbox", "show", pid, "--org", RECEIVER, "--as", "rdsl")
    assert shown.returncode == 0, shown.stderr
    assert "Okafor" in shown.stdout
    assert "Traceback" not in shown.stderr
    accepted = _cli(rig, db_url, "inbox", "accept", pid, "--org", RECEIVER, "--as", "rdsl")
    assert accepted.returncode == 0, accepted.stderr
    assert "Traceback" not in accepted.stderr

    verified = _cli(rig, db_url, "audit", "verify")
    assert verified.returncode == 7, verified.stdout + verified.stderr
    [line] = verified.stderr.strip().splitlines()
    assert line.startswith("handover: error: the checkpoint file ")
    assert str(anchor) in line and "The log itself is intact" in line
    assert anchor.read_bytes() == bytes(raw)  # kept as it was, for whoever investigates
