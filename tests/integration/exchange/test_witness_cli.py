"""A node rolls its log back in SQL; the checkpoint its counterpart kept from a receipt names it.

Riverside (A) issues a receipt carrying its checkpoint; Hillside (B) keeps it.
A's operator then rolls A's log back directly in the database (entries, subtree
hashes, checkpoints and head row as they were, and the checkpoint file beside
the database restored too), so A's own ``handover audit verify`` sees nothing.
B's operator hands A's operator (or an auditor) the checkpoint B holds
(``handover audit witnessed --out``), and ``handover audit verify --checkpoint``
on A names the rollback, and later the rewritten history. All commands run as
real subprocesses on the nodes' data directories.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.integration.exchange.test_witness import A_ORG, KEK_HEX, a_receipt, grow, open_pair
from transfer.audit.log import ANCHOR
from transfer.exchange.witness import Witness
from transfer.node import Node
from transfer.transport.http import http_transport

ROOT = Path(__file__).resolve().parents[3]
HANDOVER = ROOT / ".venv" / "bin" / "handover"


def handover(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env |= {"HANDOVER_KEK": KEK_HEX, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [str(HANDOVER), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def roll_back(db: Path, size: int, head: tuple[int, bytes, bytes], anchor: Path, note: str) -> None:
    """What an operator with database access does to forget entries #size onwards."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq >= ?", (size,))
        conn.execute("DELETE FROM audit_nodes WHERE (idx + 1) * (1 << level) > ?", (size,))
        conn.execute("DELETE FROM audit_checkpoints WHERE size > ?", (size,))
        conn.execute(
            "UPDATE audit_head SET size = ?, compact = ?, last_leaf = ? WHERE id = 1", head
        )
    anchor.write_text(note, encoding="utf-8")


async def test_a_rollback_is_named_by_the_counterparts_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOVER_KEK", KEK_HEX)
    pair = await open_pair(tmp_path)
    try:
        await grow(pair.a, 6)
        old = await pair.a.audit_log.checkpoint()  # the state the operator will go back to
        with sqlite3.connect(pair.a_dir / "handover.db") as conn:
            head = conn.execute("SELECT size, compact, last_leaf FROM audit_head").fetchone()
        assert head[0] == old.size
        await grow(pair.a, 5)
        witness = Witness(
            audit_log=pair.b.audit_log,
            vkey_for=pair.b.directory.audit_vkey_for,
            store=pair.b.store,
        )
        kept = await witness.receipt(await a_receipt(pair.a))
        assert kept.status == "first" and kept.size is not None and kept.size > old.size
    finally:
        await pair.a.close()
        await pair.b.close()
    a_dir, b_dir = str(pair.a_dir), str(pair.b_dir)

    # export-entry publishes A's audit-log key, the one `audit checkpoint --vkey` prints.
    res = handover("directory", "export-entry", "--data-dir", a_dir, "--org", A_ORG)
    assert res.returncode == 0, res.stderr
    vkey = handover("audit", "checkpoint", "--vkey", "--data-dir", a_dir).stdout.strip()
    assert json.loads(res.stdout)["audit_key"] == {
        "origin": "riverside.test:8443/audit",
        "vkey": vkey,
    }

    # Both logs verify; B says which witnessed checkpoints it re-checked.
    res = handover("audit", "verify", "--data-dir", b_dir)
    assert res.returncode == 0, res.stderr
    assert "witnessed: 1 checkpoint of 1 other log re-checked" in res.stdout
    assert "riverside.test:8443/audit" in res.stdout
    assert handover("audit", "verify", "--data-dir", a_dir).returncode == 0

    # A's operator rolls the log back in SQL and restores the old checkpoint file.
    roll_back(pair.a_dir / "handover.db", old.size, head, pair.a_dir / ANCHOR, old.note)
    res = handover("audit", "verify", "--data-dir", a_dir)
    assert res.returncode == 0, res.stderr  # nothing inside A can tell
    assert f"intact: {old.size} entries" in res.stdout

    # B hands over the checkpoint it holds from A's receipt.
    out = tmp_path / "from-hillside"
    res = handover("audit", "witnessed", "--data-dir", b_dir, "--org", A_ORG, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert f"{A_ORG} riverside.test:8443/audit size={kept.size} first" in res.stdout
    [held] = sorted(out.iterdir())
    res = handover("audit", "verify", "--data-dir", a_dir, "--checkpoint", str(held))
    assert res.returncode == 7, res.stdout
    assert (
        f"the log was truncated or rolled back: the checkpoint file {held} was signed at size "
        f"{kept.size} but the log holds only {old.size} entries"
    ) in res.stderr

    # A writes past the old size: a different history now contradicts B's checkpoint.
    async with await Node.open(pair.a_dir, transport=http_transport) as a:
        await grow(a, kept.size - old.size + 2)
    assert handover("audit", "verify", "--data-dir", a_dir).returncode == 0
    res = handover("audit", "verify", "--data-dir", a_dir, "--checkpoint", str(held))
    assert res.returncode == 7
    assert (
        f"the log contradicts the checkpoint file {held} (size {kept.size}): its first "
        f"{kept.size} entries are not the ones that were signed"
    ) in res.stderr
