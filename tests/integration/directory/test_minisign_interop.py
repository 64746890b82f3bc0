"""Debian's ``minisign`` checks a directory as published, and signs with the authority key."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from keys import minisign
from tests.integration.directory.support import T0, document, entry, keyset
from transfer.directory.document import (
    authority_secret_key_text,
    trusted_comment,
    verify_document,
)

MINISIGN = shutil.which("minisign")


@pytest.fixture(autouse=True)
def _need_minisign() -> None:
    if MINISIGN is None:
        pytest.fail("Debian's minisign is not installed: run `make tools`")


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert MINISIGN is not None
    return subprocess.run(
        [MINISIGN, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_minisign_verifies_a_directory_and_signs_with_the_authority_key(tmp_path: Path) -> None:
    secret = minisign.SecretKey.generate()
    pub = tmp_path / "authority.pub"
    pub.write_text(secret.public_key.to_text())
    key = tmp_path / "authority.key"
    key.write_text(authority_secret_key_text(secret))
    _, data, sig = document(secret, [entry(keyset("100001"))])
    doc_path = tmp_path / "directory.json"
    doc_path.write_bytes(data)
    (tmp_path / "directory.json.minisig").write_text(sig)

    ok = _run("-V", "-p", pub, "-m", doc_path)
    assert ok.returncode == 0, ok.stderr
    assert "Trusted comment: handover-directory-v1 serial=1" in ok.stdout

    doc_path.write_bytes(data.replace(b"Riverside", b"Rivershed"))
    bad = _run("-V", "-p", pub, "-m", doc_path)
    assert bad.returncode != 0

    # minisign reads our passphrase-free authority key file and signs; we accept the result.
    doc_path.write_bytes(data)
    other_sig = tmp_path / "by-minisign.minisig"
    signed = _run("-S", "-s", key, "-m", doc_path, "-x", other_sig, "-t", trusted_comment(1))
    assert signed.returncode == 0, signed.stderr
    got = verify_document(data, other_sig.read_text(), authority=secret.public_key, now=T0)
    assert got.document.serial == 1
