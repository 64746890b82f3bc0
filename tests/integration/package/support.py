"""Package files on disk for the integration tests, and running the real ``handover``."""

from __future__ import annotations

import io
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from keys.keyset import KeySet
from schemas.manifest import Recipient, Sender, Subject
from tests.unit.package.support import CREATED, Parties, make_manifest, sample_entries
from transfer.age import X25519Identity, X25519Recipient, encrypt
from transfer.package.build import BuiltPackage, EntrySource, build_package
from transfer.package.layout import sign_manifest, write_package_tar

REPO = Path(__file__).resolve().parents[3]
HANDOVER = REPO / ".venv" / "bin" / "handover"


def identity(ks: KeySet) -> X25519Identity:
    return X25519Identity.from_private_bytes(ks.encryption.secret)


@dataclass(frozen=True)
class Files:
    """A built package and the files an outsider would be given."""

    package: Path
    identity_file: Path  # the recipient's AGE-SECRET-KEY-1... file
    sender_pub: Path  # the sender's minisign public key
    built: BuiltPackage


def entries_with_document(size: int = 300_000) -> list[EntrySource]:
    return [
        *sample_entries(),
        EntrySource.from_bytes("documents/" + "fe" * 32, os.urandom(size)),
    ]


def build_files(
    p: Parties,
    tmp: Path,
    *,
    entries: list[EntrySource] | None = None,
    recipients: list[X25519Recipient] | None = None,
    recipient_org: str | None = None,
    created_at: datetime = CREATED,
) -> Files:
    tmp.mkdir(parents=True, exist_ok=True)
    package = tmp / "package.age"
    with package.open("wb") as f:
        built = build_package(
            f,
            kind="leaver_file",
            sender=Sender(
                org_id=p.sender.org_id,
                key_fingerprint=p.sender.fingerprint,
                signing_key_id=p.sender.key_id_hex,
            ),
            recipient=Recipient(
                org_id=recipient_org or p.recipient.org_id,
                key_fingerprint=p.recipient.fingerprint,
            ),
            subject=Subject(upn="A123456789012", surname="Smith", forename="Jo"),
            entries=entries_with_document() if entries is None else entries,
            signer=p.sender.minisign_secret_key(),
            recipients=recipients or [identity(p.recipient).recipient],
            created_at=created_at,
            records_schema={"pupil": 1, "concern": 1},
        )
    identity_file = tmp / "recipient-key.txt"
    identity_file.write_text(identity(p.recipient).to_string() + "\n")
    identity_file.chmod(0o600)
    sender_pub = tmp / "sender.pub"
    sender_pub.write_text(p.sender.minisign_public_key_text())
    return Files(package, identity_file, sender_pub, built)


def stale_signature_package(p: Parties, path: Path) -> None:
    """A tar whose record was changed after signing, re-encrypted (validly) to the recipient."""
    sources = sample_entries()
    manifest = make_manifest(p, sources)
    data, sig = sign_manifest(manifest, p.sender.minisign_secret_key())
    plain = io.BytesIO()
    write_package_tar(plain, manifest, data, sig, sources)
    tampered = plain.getvalue().replace(b'"surname":"Smith"', b'"surname":"Smyth"', 1)
    assert tampered != plain.getvalue()
    path.write_bytes(encrypt(tampered, [identity(p.recipient).recipient]))


def run_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    # The editable install may resolve `transfer` as a namespace package from outside the
    # repository; point Python at the checkout explicitly.
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def handover_all(
    *calls: tuple[list[str | Path], Path], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Several ``handover`` runs at once (each start-up takes a second or more)."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(handover, *args, cwd=cwd, env=env) for args, cwd in calls]
        return [f.result() for f in futures]


def handover(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HANDOVER), *map(str, args)],
        capture_output=True,
        text=True,
        env=env or run_env(),
        timeout=120,
        check=False,
        cwd=cwd,
    )
