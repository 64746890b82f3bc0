"""The node's directory view: what one look-up costs (issue 16).

Every package sent or received looks up keys in the directory several times (the offer, the
receipt, each signed request), each through ``Directory.view()``. A node on SQLite with
``HANDOVER_BENCH_DIRECTORY_OWN`` (default 20) schools of its own (each with a key file) and a
signed directory document of ``HANDOVER_BENCH_DIRECTORY_ORGS`` (default 200) organisations;
``HANDOVER_BENCH_DIRECTORY_CALLS`` (default 300) calls of ``view()`` in a row, after one
warm-up. Each run is a fresh process (``HANDOVER_BENCH_CODE``, a path to another checkout,
runs that checkout's code, for before/after comparisons in one run); the table gives wall
and CPU time per call (the process's CPU: the event loop and aiosqlite's thread).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

OWN = int(os.environ.get("HANDOVER_BENCH_DIRECTORY_OWN", "20"))
ORGS = int(os.environ.get("HANDOVER_BENCH_DIRECTORY_ORGS", "200"))
CALLS = int(os.environ.get("HANDOVER_BENCH_DIRECTORY_CALLS", "300"))
RUNS = int(os.environ.get("HANDOVER_BENCH_DIRECTORY_RUNS", "5"))


async def _per_call(tmp: Path) -> tuple[float, float]:
    from keys import minisign
    from keys.keyfiles import KeyFiles
    from keys.keyset import KeySet
    from keys.sealing import KekProtection
    from schemas.auditing import MemoryAudit
    from transfer.directory.document import (
        add_organisation,
        authority_fingerprint,
        entry_from_keyset,
        new_document,
        sign_document,
    )
    from transfer.directory.service import Directory
    from transfer.store.service import Store

    kek = bytes(range(32))
    now = datetime.now(UTC)
    audit = MemoryAudit()
    store = await Store.open(f"sqlite+aiosqlite:///{tmp / 'node.db'}", kek, audit, data_dir=tmp)
    try:
        keys = KeyFiles(tmp / "keys", KekProtection(kek), audit=audit)
        directory = Directory(store, keys=keys, base_url="https://node.example:8443")
        for i in range(OWN):
            urn = f"1{i:05d}"
            await store.create_school(name=f"School {i}", urn=urn, laestab=f"80{i:05d}")
            await keys.create(urn)
        authority = minisign.SecretKey.generate()
        pub = authority.public_key
        await directory.pin_authority(pub, fingerprint=authority_fingerprint(pub), actor="bench")
        doc = new_document("Benchshire County Council", now=now, valid_for=timedelta(days=30))
        for i in range(ORGS):
            ks = KeySet.generate(f"2{i:05d}", now=now)
            entry = entry_from_keyset(
                ks, name=f"Organisation {i}", kind="school", endpoint="https://o.example"
            )
            doc = add_organisation(doc, entry)
        _, data, sig = sign_document(doc, authority, now=now, valid_for=timedelta(days=30))
        await directory.import_document(data, sig, source="bench", actor="bench")
        await directory.view()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(CALLS):
            await directory.view()
        return (time.perf_counter() - wall) / CALLS, (time.process_time() - cpu) / CALLS
    finally:
        await store.close()


def _child() -> None:
    code = os.environ.get("HANDOVER_BENCH_CODE")
    if code:
        sys.path.insert(0, code)
    with tempfile.TemporaryDirectory(prefix="bench-directory-") as tmp:
        wall, cpu = asyncio.run(_per_call(Path(tmp)))
    print(json.dumps({"wall": wall, "cpu": cpu}))


def measure(
    runs: int = RUNS, variants: dict[str, dict[str, str]] | None = None
) -> dict[str, list[tuple[float, float]]]:
    """``runs`` fresh processes per variant, alternating (wall, CPU) seconds per call."""
    variants = variants or {"": {}}
    out: dict[str, list[tuple[float, float]]] = {}
    for _ in range(runs):
        for label, extra in variants.items():
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_directory"],
                env={**os.environ, **extra},
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(done.stdout.strip().splitlines()[-1])
            out.setdefault(label, []).append((got["wall"], got["cpu"]))
    return out


def run() -> str:
    load = os.getloadavg()[0]
    results = measure()
    rows = [
        f"| {OWN} own, {ORGS} listed | {min(w for w, _ in r) * 1000:.2f} ms "
        f"| {statistics.median(w for w, _ in r) * 1000:.2f} ms "
        f"| {min(c for _, c in r) * 1000:.2f} ms "
        f"| {statistics.median(c for _, c in r) * 1000:.2f} ms |"
        for r in results.values()
    ]
    return (
        "## Directory look-ups (`benchmarks/bench_directory.py`)\n\n"
        f"{__doc__.split(chr(10), 1)[1].strip()}\n\n"
        f"{RUNS} runs of {CALLS} calls, load average {load:.2f} at the start. Command: "
        "`.venv/bin/python -c 'from benchmarks import bench_directory; "
        "print(bench_directory.run())'`.\n\n"
        "| organisations | per call, fastest run | median run | CPU per call, fastest | median |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    _child()
