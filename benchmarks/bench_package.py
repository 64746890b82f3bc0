"""Packages: building and verifying a leaver's package with one large document.

For each document size (100 MiB and 1 GiB by default; ``HANDOVER_BENCH_PACKAGE_MIB`` as a
comma-separated list of MiB overrides), a fresh process builds the package (tar -> age -> file,
the document read from a file whose SHA-256 is known, as the store's are) and another verifies
it (decrypt, signature, every hash). Each is timed and its peak resident memory taken from
``wait4``. Debian's ``age`` encrypting and decrypting the same document is the yardstick.
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
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

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
    from keys.keyset import KeySet
    from schemas.manifest import Recipient, Sender, Subject
    from transfer.age import X25519Identity
    from transfer.package.build import EntrySource, build_package

    sender = KeySet.from_private_dict(json.loads(spec["sender"]))
    to = KeySet.from_private_dict(json.loads(spec["to"]))
    doc = Path(spec["doc"])
    size = doc.stat().st_size

    def chunks() -> Iterator[bytes]:
        with doc.open("rb") as f:
            while chunk := f.read(64 * 1024):
                yield chunk

    entries = [
        EntrySource.from_json("records/pupil.json", {"schema_version": 1, "surname": "Bench"}),
        EntrySource(
            path=f"documents/{spec['sha256']}",
            size=size,
            sha256=spec["sha256"],
            opener=chunks,
        ),
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


def run() -> str:
    from keys.keyset import KeySet
    from transfer.age import X25519Identity

    age = shutil.which("age")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    sender = KeySet.generate("urn:school:100001", now=when)
    to = KeySet.generate("urn:school:100002", now=when)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp_name:
        tmp = Path(tmp_name)
        key_file = tmp / "key.txt"
        identity = X25519Identity.from_private_bytes(to.encryption.secret)
        key_file.write_text(identity.to_string() + "\n")
        for mib in SIZES:
            doc = tmp / "document.bin"
            sha = _write_document(doc, mib * MIB)
            spec_file = tmp / "spec.json"
            spec = {
                "sender": json.dumps(sender.to_private_dict()),
                "to": json.dumps(to.to_private_dict()),
                "doc": str(doc),
                "sha256": sha,
                "out": str(tmp / "package.age"),
            }
            spec_file.write_text(json.dumps(spec))
            hwm = tmp / "hwm.txt"
            build_s, build_rss = _measure(_python("build", spec_file), hwm)
            verify_s, verify_rss = _measure(_python("verify", spec_file), hwm)
            if age:
                enc_s, _ = _measure(
                    [age, "-r", identity.recipient.to_string(), "-o", str(tmp / "a.age"), str(doc)]
                )
                dec_s, _ = _measure(
                    [age, "-d", "-i", str(key_file), "-o", str(tmp / "a.out"), str(tmp / "a.age")]
                )
                (tmp / "a.age").unlink()
                (tmp / "a.out").unlink()
                ratio_b, ratio_v = f"{build_s / enc_s:.2f}", f"{verify_s / dec_s:.2f}"
                age_cols = f"{enc_s:.2f} s | {dec_s:.2f} s"
            else:
                ratio_b = ratio_v = "n/a"
                age_cols = "n/a | n/a"
            rows.append(
                f"| {mib} MiB | {build_s:.2f} s | {verify_s:.2f} s | {age_cols} | "
                f"{ratio_b} | {ratio_v} | {build_rss:.1f} MiB | {verify_rss:.1f} MiB |"
            )
            (tmp / "package.age").unlink()
            doc.unlink()
    return (
        "## Packages: a leaver's package with one large document\n\n"
        "`benchmarks/bench_package.py`. Each step runs in a fresh Python process; peak RSS is "
        "that process's own `VmHWM` (interpreter and libraries included; not `ru_maxrss`, "
        "which Linux keeps across `exec` and so also counts the benchmark process the step "
        "was forked from). *Build* = manifest, "
        "signature, tar, age encryption to a file, the document streamed from a file with a "
        "known SHA-256 (as the store's are) and hashed again as it goes. *Verify* = "
        "decryption, signature, recipient and every entry's SHA-256 (pass 1 of opening). "
        "`age` = Debian's age encrypting / decrypting the same document bytes.\n\n"
        "| document | build | verify | age -e | age -d | build / age -e | verify / age -d "
        "| build peak RSS | verify peak RSS |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> int:
    action, spec_file = sys.argv[1], Path(sys.argv[2])
    spec = json.loads(spec_file.read_text())
    if action == "build":
        _child_build(spec)
    elif action == "verify":
        _child_verify(spec)
    else:
        raise SystemExit(f"unknown action {action}")
    _write_hwm()
    return 0


if __name__ == "__main__":
    sys.exit(main())
