"""Packages: building and verifying a leaver's package with one large document.

For each document size (100 MiB and 1 GiB by default; ``HANDOVER_BENCH_PACKAGE_MIB`` as a
comma-separated list of MiB overrides), a fresh process builds the package (tar -> age -> file,
the document read from a file whose SHA-256 is known, as the store's are) and another verifies
it (decrypt, signature, every hash). Each is timed and its peak resident memory taken from
``wait4``. Debian's ``age`` encrypting and decrypting the same document is the yardstick.

The package is built twice: from a plain file whose SHA-256 is known (the builder hashes the
bytes as it reads them, to check them), and from the same document sealed as the store keeps
it (``transfer.store.blobs``: AES-GCM chunks, decrypted and checked against its SHA-256 by the
store's reader, as a DSL's "send" builds a leaver's file). ``HANDOVER_BENCH_CODE``, a path to
another checkout, makes the timed processes run that checkout's code (for before/after
comparisons on one machine in one run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transfer.package.build import EntrySource

MIB = 1024 * 1024
SIZES = [int(x) for x in os.environ.get("HANDOVER_BENCH_PACKAGE_MIB", "100,1024").split(",")]


def _write_document(path: Path, size: int) -> str:
    block = hashlib.sha512(b"bench").digest() * 1024 * 16  # 1 MiB, not all zeros
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            digest.update(block[:n])
            left -= n
    return digest.hexdigest()


def _child_build(spec: dict[str, str]) -> None:
    from transfer.package.build import EntrySource

    doc = Path(spec["doc"])

    def chunks() -> Iterator[bytes]:
        with doc.open("rb") as f:
            while chunk := f.read(64 * 1024):
                yield chunk

    size = doc.stat().st_size
    _build(spec, EntrySource(f"documents/{spec['sha256']}", size, spec["sha256"], chunks))


PUPIL = "bench-pupil"


def _child_build_from_store(spec: dict[str, str]) -> None:
    """The document read through the store's reader (decrypted, checked), as a send does."""
    import asyncio
    import threading

    from transfer.package.build import EntrySource
    from transfer.package.from_store import _LoopBridge
    from transfer.store.blobs import read_decrypted

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    bridge = _LoopBridge(loop)
    key, sha = bytes.fromhex(spec["pupil_key"]), spec["sha256"]

    def chunks() -> Iterator[bytes]:
        yield from bridge.iterate(read_decrypted(Path(spec["sealed"]), key, PUPIL, sha))

    # The reader checks the SHA-256 itself (issue 16); older code has no such flag.
    own_check = (
        {"self_checking": True} if "self_checking" in EntrySource.__dataclass_fields__ else {}
    )
    size = int(spec["size"])
    _build(spec, EntrySource(f"documents/{sha}", size, sha, chunks, **own_check))
    loop.call_soon_threadsafe(loop.stop)


def _seal(doc: Path, into: Path, pupil_key: bytes) -> Path:
    """``doc`` sealed as the store keeps a document (untimed set-up)."""
    import asyncio

    from transfer.store.blobs import write_encrypted

    async def pieces() -> AsyncIterator[bytes]:
        with doc.open("rb") as f:
            while chunk := f.read(MIB):
                yield chunk

    stored = asyncio.run(write_encrypted(pieces(), pupil_key, PUPIL, into, 1 << 40))
    return stored.path


def _build(spec: dict[str, str], document: EntrySource) -> None:
    from keys.keyset import KeySet
    from schemas.manifest import Recipient, Sender, Subject
    from transfer.age import X25519Identity
    from transfer.package.build import EntrySource, build_package

    sender = KeySet.from_private_dict(json.loads(spec["sender"]))
    to = KeySet.from_private_dict(json.loads(spec["to"]))
    entries = [
        EntrySource.from_json("records/pupil.json", {"schema_version": 1, "surname": "Bench"}),
        document,
    ]
    with Path(spec["out"]).open("wb") as out:
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
            recipients=[X25519Identity.from_private_bytes(to.encryption.secret).recipient],
        )


def _child_verify(spec: dict[str, str]) -> None:
    from keys.keyset import KeySet
    from transfer.age import X25519Identity
    from transfer.package.layout import Addressee, PinnedSenderKey
    from transfer.package.open import verify_package

    sender = KeySet.from_private_dict(json.loads(spec["sender"]))
    to = KeySet.from_private_dict(json.loads(spec["to"]))
    with Path(spec["out"]).open("rb") as f:
        verify_package(
            f,
            identities=[X25519Identity.from_private_bytes(to.encryption.secret)],
            sender_keys=PinnedSenderKey(sender.minisign_public_key),
            addressee=Addressee.for_keyset(to),
        )


HWM_ENV = "HANDOVER_BENCH_HWM_FILE"
#: The CPU time (user + system) of every child measured, in order.
CPU: list[float] = []


def _measure(argv: list[str], hwm_file: Path | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a child process.

    The peak is the child's own ``VmHWM`` (written by the child as it ends), not
    ``ru_maxrss``: Linux keeps ``ru_maxrss`` across ``exec``, so it also counts the
    benchmark process the child was forked from. For other programs (``age``)
    ``ru_maxrss`` is returned.
    """
    env = {**os.environ, **({HWM_ENV: str(hwm_file)} if hwm_file else {})}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed with exit status {proc.returncode}")
    CPU.append(usage.ru_utime + usage.ru_stime)
    if hwm_file is not None:
        return wall, int(hwm_file.read_text()) / 1024
    return wall, usage.ru_maxrss / 1024


def _write_hwm() -> None:
    """Write this process's peak resident set (``VmHWM``, KiB) where the parent asked."""
    target = os.environ.get(HWM_ENV)
    if not target:
        return
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            Path(target).write_text(line.split()[1])


def _python(action: str, spec_file: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.bench_package", action, str(spec_file)]


@dataclass
class SizeResult:
    build: float
    build_store: float
    verify: float
    build_rss: float
    build_store_rss: float
    verify_rss: float
    enc: float | None
    dec: float | None


def measure_size(mib: int, tmp: Path) -> SizeResult:
    """One size: build (from a file, from the store's sealed copy), verify, age -e, age -d."""
    from keys.keyset import KeySet
    from transfer.age import X25519Identity

    age = shutil.which("age")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    sender = KeySet.generate("urn:school:100001", now=when)
    to = KeySet.generate("urn:school:100002", now=when)
    key_file = tmp / "key.txt"
    identity = X25519Identity.from_private_bytes(to.encryption.secret)
    key_file.write_text(identity.to_string() + "\n")
    doc = tmp / "document.bin"
    sha = _write_document(doc, mib * MIB)
    pupil_key = os.urandom(32)
    sealed_dir = tmp / "sealed"
    sealed = _seal(doc, sealed_dir, pupil_key)
    spec_file = tmp / "spec.json"
    spec = {
        "sender": json.dumps(sender.to_private_dict()),
        "to": json.dumps(to.to_private_dict()),
        "doc": str(doc),
        "sha256": sha,
        "size": str(mib * MIB),
        "sealed": str(sealed),
        "pupil_key": pupil_key.hex(),
        "out": str(tmp / "package.age"),
    }
    spec_file.write_text(json.dumps(spec))
    hwm = tmp / "hwm.txt"
    try:
        build_store_s, build_store_rss = _measure(_python("build-store", spec_file), hwm)
        (tmp / "package.age").unlink()
        build_s, build_rss = _measure(_python("build", spec_file), hwm)
        verify_s, verify_rss = _measure(_python("verify", spec_file), hwm)
        enc_s = dec_s = None
        if age:
            enc_s, _ = _measure(
                [age, "-r", identity.recipient.to_string(), "-o", str(tmp / "a.age"), str(doc)]
            )
            dec_s, _ = _measure(
                [age, "-d", "-i", str(key_file), "-o", str(tmp / "a.out"), str(tmp / "a.age")]
            )
    finally:
        for leftover in (tmp / "a.age", tmp / "a.out", tmp / "package.age", doc, sealed):
            leftover.unlink(missing_ok=True)
    return SizeResult(
        build_s, build_store_s, verify_s, build_rss, build_store_rss, verify_rss, enc_s, dec_s
    )


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def _secs(x: float | None) -> str:
    return f"{x:.2f} s" if x is not None else "n/a"


def run() -> str:
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp_name:
        for mib in SIZES:
            r = measure_size(mib, Path(tmp_name))
            rows.append(
                f"| {mib} MiB | {r.build:.2f} s | {r.build_store:.2f} s | {r.verify:.2f} s "
                f"| {_secs(r.enc)} | {_secs(r.dec)} | {_ratio(r.build, r.enc)} "
                f"| {_ratio(r.build_store, r.enc)} | {_ratio(r.verify, r.dec)} "
                f"| {r.build_rss:.1f} / {r.build_store_rss:.1f} MiB | {r.verify_rss:.1f} MiB |"
            )
    return (
        "## Packages: a leaver's package with one large document\n\n"
        "`benchmarks/bench_package.py`. Each step runs in a fresh Python process; peak RSS is "
        "that process's own `VmHWM` (interpreter and libraries included; not `ru_maxrss`, "
        "which Linux keeps across `exec` and so also counts the benchmark process the step "
        "was forked from). *Build* = manifest, "
        "signature, tar, age encryption to a file, the document streamed from a file with a "
        "known SHA-256 and hashed as it goes (to check it). *Build from the store* = the same, "
        "the document read through the store's reader from its sealed copy (AES-GCM, checked "
        "against its SHA-256 as it is decrypted, so the build does not hash it again), as a "
        "DSL's send builds a leaver's file. *Verify* = "
        "decryption, signature, recipient and every entry's SHA-256 (pass 1 of opening; the "
        "ciphertext is not hashed again: the node hashed it as it arrived). "
        "`age` = Debian's age encrypting / decrypting the same document bytes.\n\n"
        "| document | build | build from the store | verify | age -e | age -d "
        "| build / age -e | from the store / age -e | verify / age -d "
        "| build peak RSS (file / store) | verify peak RSS |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> int:
    action, spec_file = sys.argv[1], Path(sys.argv[2])
    spec = json.loads(spec_file.read_text())
    code = os.environ.get("HANDOVER_BENCH_CODE")
    if code:
        sys.path.insert(0, code)
    if action == "build":
        _child_build(spec)
    elif action == "build-store":
        _child_build_from_store(spec)
    elif action == "verify":
        _child_verify(spec)
    else:
        raise SystemExit(f"unknown action {action}")
    _write_hwm()
    return 0


if __name__ == "__main__":
    sys.exit(main())
