"""Start-up of the commands people run by hand or in scripts (issue 16: under 0.1 s).

``handover age decrypt``, ``handover package verify`` and ``handover audit verify``, each on a
tiny input (a 1 KB age file, a package with a 1 KB document, a fresh node's audit log of
two entries), so that the run is nearly all start-up: the interpreter, the CLI, the
sub-command's module and what its work imports. Each command's ``--help`` (the interpreter,
the CLI and the sub-command's module, no work) is timed too, and Debian's ``age -d`` on the
same file is the yardstick. The commands run round-robin (one of each, then again), so a
moment of load on the shared machine falls on all of them alike; the table gives the median
and the fastest of ``HANDOVER_BENCH_STARTUP_RUNS`` (default 30) runs, wall and CPU time
(user + system, from ``wait4``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RUNS = int(os.environ.get("HANDOVER_BENCH_STARTUP_RUNS", "30"))
AIM = 0.1
KEK_HEX = "5a" * 32


@dataclass
class _Runs:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def _handover() -> str:
    beside = Path(sys.executable).with_name("handover")
    if beside.exists():
        return str(beside)
    found = shutil.which("handover")
    if found is None:
        raise RuntimeError("handover CLI not found (run `make venv`)")
    return found


def _once(argv: list[str], env: dict[str, str], into: _Runs) -> None:
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[:4]} failed: {err.strip()}")
    into.wall.append(wall)
    into.cpu.append(usage.ru_utime + usage.ru_stime)


def _small_package(tmp: Path) -> list[str]:
    """A package with a 1 KB document and the flags that verify it (keys in files)."""
    import hashlib

    from keys.keyset import KeySet
    from schemas.manifest import Recipient, Sender, Subject
    from transfer.age import X25519Identity
    from transfer.package.build import EntrySource, build_package

    when = datetime(2026, 1, 1, tzinfo=UTC)
    sender = KeySet.generate("urn:school:100001", now=when)
    to = KeySet.generate("urn:school:100002", now=when)
    doc = os.urandom(1000)
    sha = hashlib.sha256(doc).hexdigest()
    entries = [
        EntrySource.from_json("records/pupil.json", {"schema_version": 1, "surname": "Bench"}),
        EntrySource(path=f"documents/{sha}", size=len(doc), sha256=sha, opener=lambda: iter([doc])),
    ]
    package = tmp / "small-package.age"
    identity = X25519Identity.from_private_bytes(to.encryption.secret)
    with package.open("wb") as out:
        build_package(
            out,
            kind="leaver_file",
            sender=Sender(
                org_id=sender.org_id,
                key_fingerprint=sender.fingerprint,
                signing_key_id=sender.key_id_hex,
            ),
            recipient=Recipient(org_id=to.org_id, key_fingerprint=to.fingerprint),
            subject=Subject(surname="Bench", forename="Mark"),
            entries=entries,
            signer=sender.minisign_secret_key(),
            recipients=[identity.recipient],
        )
    key_file = tmp / "package-key.txt"
    key_file.write_text(identity.to_string() + "\n")
    key_file.chmod(0o600)
    sender_pub = tmp / "sender.pub"
    sender_pub.write_text(sender.minisign_public_key_text())
    return [
        str(package),
        "-i",
        str(key_file),
        "--org",
        to.org_id,
        "--fingerprint",
        to.fingerprint,
        "--sender-key",
        str(sender_pub),
    ]


def _row(name: str, runs: _Runs, yardstick: _Runs | None) -> str:
    med = statistics.median(runs.wall)
    vs = f"{med / statistics.median(yardstick.wall):.0f}x" if yardstick else ""
    return (
        f"| {name} | {med * 1000:.0f} ms | {min(runs.wall) * 1000:.0f} ms "
        f"| {statistics.median(runs.cpu) * 1000:.0f} ms | {vs} |"
    )


def measure(
    runs: int = RUNS, variants: dict[str, dict[str, str]] | None = None
) -> dict[str, _Runs]:
    """Every command ``runs`` times; with ``variants`` (a label for each, and what it adds to
    the environment, e.g. ``PYTHONPATH`` of another checkout), each command is run once per
    variant in turn, so that an A/B comparison shares the machine's load."""
    variants = variants or {"": {}}
    handover = _handover()
    env = {**os.environ, "HANDOVER_KEK": KEK_HEX}
    env.pop("HANDOVER_DATA_DIR", None)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp_name:
        tmp = Path(tmp_name)
        key = tmp / "age-key.txt"
        subprocess.run(
            [handover, "age", "keygen", "-o", str(key)], check=True, capture_output=True, env=env
        )
        recipient = next(
            line.split(":", 1)[1].strip()
            for line in key.read_text().splitlines()
            if line.startswith("# public key:")
        )
        small = tmp / "small.bin"
        small.write_bytes(os.urandom(1000))
        subprocess.run(
            [handover, "age", "encrypt", "-r", recipient, "-o", str(tmp / "small.age"), str(small)],
            check=True,
            capture_output=True,
            env=env,
        )
        node = tmp / "node"
        subprocess.run(
            [handover, "init", "--data-dir", str(node), "--school", "123456:8012000:Hillside"],
            check=True,
            capture_output=True,
            env=env,
        )
        verify = _small_package(tmp)
        out = tmp / "out.bin"
        commands: dict[str, list[str]] = {
            "handover age decrypt (1 KB)": [
                handover,
                "age",
                "decrypt",
                "-i",
                str(key),
                "-o",
                str(out),
                str(tmp / "small.age"),
            ],
            "handover package verify (1 KB document)": [handover, "package", "verify", *verify],
            "handover audit verify (2 entries, SQLite)": [
                handover,
                "audit",
                "verify",
                "--data-dir",
                str(node),
            ],
            "handover age decrypt --help": [handover, "age", "decrypt", "--help"],
            "handover package verify --help": [handover, "package", "verify", "--help"],
            "handover audit verify --help": [handover, "audit", "verify", "--help"],
        }
        age = shutil.which("age")
        if age:
            commands["age -d (Debian's, 1 KB)"] = [
                age,
                "-d",
                "-i",
                str(key),
                "-o",
                str(out),
                str(tmp / "small.age"),
            ]
        results: dict[str, _Runs] = {}
        for _ in range(2):  # warm the page cache and the .pyc files
            for extra in variants.values():
                for argv in commands.values():
                    _once(argv, {**env, **extra}, _Runs())
                    out.unlink(missing_ok=True)
        for _ in range(runs):
            for name, argv in commands.items():
                for label, extra in variants.items():
                    _once(argv, {**env, **extra}, results.setdefault(f"{name}{label}", _Runs()))
                    out.unlink(missing_ok=True)
    return results


def run() -> str:
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results = measure()
    took = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    yard = results.get("age -d (Debian's, 1 KB)")
    rows = [_row(name, r, yard) for name, r in results.items()]
    slowest = max(statistics.median(r.wall) for n, r in results.items() if n.startswith("handover"))
    verdict = "met" if slowest < AIM else "not met"
    return (
        "## Start-up of the commands run by hand (`benchmarks/bench_startup.py`)\n\n"
        f"{__doc__.split(chr(10), 1)[1].strip()}\n\n"
        f"{RUNS} runs of each, {took:.0f} s in all, load average {load_before:.2f} before and "
        f"{load_after:.2f} after. Command: `.venv/bin/python -c "
        "'from benchmarks import bench_startup; print(bench_startup.run())'`.\n\n"
        "| command | median wall | fastest | median CPU | / age -d |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Aim (issue 16): under {AIM:.1f} s each: **{verdict}** on this run "
        f"(slowest median {slowest * 1000:.0f} ms).\n"
    )


if __name__ == "__main__":
    print(json.dumps({n: statistics.median(r.wall) for n, r in measure().items()}, indent=1))
