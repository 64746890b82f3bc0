"""Interop with Debian's ``minisign`` in both directions (``make tools`` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import minisign
from keys.keyset import KeySet
from keys.minisign import KeyMismatchError, PublicKey, SecretKey, SignatureError

MINISIGN = shutil.which("minisign")
MB = 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def _need_minisign() -> None:
    if MINISIGN is None:
        pytest.fail("Debian's minisign is not installed: run `make tools`")


def _run(*args: str | Path, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[str]:
    assert MINISIGN is not None
    return subprocess.run(
        [MINISIGN, *map(str, args)],
        input=None if input_bytes is None else input_bytes.decode(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write_random(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        remaining = size
        while remaining:
            n = min(remaining, MB)
            f.write(os.urandom(n))
            remaining -= n
    return path


@pytest.fixture
def ours(tmp_path: Path) -> tuple[SecretKey, Path]:
    secret = SecretKey.generate()
    pub = tmp_path / "ours.pub"
    pub.write_text(secret.public_key.to_text())
    return secret, pub


@pytest.fixture
def theirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    pk, sk = tmp_path / "theirs.pub", tmp_path / "theirs.key"
    res = _run("-G", "-W", "-p", pk, "-s", sk)
    assert res.returncode == 0, res.stderr
    yield pk, sk


# ------------------------------------------------- ours, checked by minisign


@pytest.mark.parametrize("size", [0, 1, 65536, 3 * MB + 17])
def test_minisign_verifies_our_signatures(
    tmp_path: Path, ours: tuple[SecretKey, Path], size: int
) -> None:
    secret, pub = ours
    f = _write_random(tmp_path / "file.bin", size)
    tc = f"handover-manifest-v1 size={size}"
    sig = minisign.sign_file(secret, f, trusted_comment=tc)
    (tmp_path / "file.bin.minisig").write_text(sig)
    res = _run("-V", "-p", pub, "-m", f)
    assert res.returncode == 0, res.stderr
    assert f"Trusted comment: {tc}" in res.stdout
    # -H: minisign itself confirms the signature is the prehashed kind
    assert _run("-V", "-H", "-p", pub, "-m", f).returncode == 0
    # -P with the one-line public key
    assert _run("-V", "-P", secret.public_key.to_base64(), "-m", f).returncode == 0


def test_minisign_refuses_our_tampered_signatures(
    tmp_path: Path, ours: tuple[SecretKey, Path]
) -> None:
    secret, pub = ours
    f = tmp_path / "m.txt"
    f.write_bytes(b"the manifest")
    sig = minisign.sign(secret, b"the manifest", trusted_comment="handover-manifest-v1 to=A")
    sigfile = tmp_path / "m.txt.minisig"
    sigfile.write_text(sig.replace("to=A", "to=B"))
    assert _run("-V", "-p", pub, "-m", f).returncode != 0
    sigfile.write_text(sig)
    f.write_bytes(b"the manifesT")
    assert _run("-V", "-p", pub, "-m", f).returncode != 0
    f.write_bytes(b"the manifest")
    assert _run("-V", "-p", pub, "-m", f).returncode == 0
    other = tmp_path / "other.pub"
    other.write_text(SecretKey.generate().public_key.to_text())
    assert _run("-V", "-p", other, "-m", f).returncode != 0


def test_minisign_verifies_an_org_keyset_signature(tmp_path: Path) -> None:
    ks = KeySet.generate("urn:school:100000")
    pub = tmp_path / "org.pub"
    pub.write_text(ks.minisign_public_key_text())
    f = tmp_path / "manifest.json"
    f.write_bytes(b'{"package": 1}')
    (tmp_path / "manifest.json.minisig").write_text(
        ks.sign(f.read_bytes(), trusted_comment="handover-manifest-v1 package=1")
    )
    res = _run("-V", "-p", pub, "-m", f)
    assert res.returncode == 0, res.stderr
    assert ks.key_id_hex in pub.read_text()


def test_streamed_signature_of_many_chunks(tmp_path: Path, ours: tuple[SecretKey, Path]) -> None:
    secret, pub = ours
    chunk = os.urandom(64 * 1024)
    f = tmp_path / "stream.bin"
    with f.open("wb") as out:
        for _ in range(80):
            out.write(chunk)
    sig = minisign.sign_stream(secret, (chunk for _ in range(80)), trusted_comment="stream")
    (tmp_path / "stream.bin.minisig").write_text(sig)
    assert _run("-V", "-p", pub, "-m", f).returncode == 0


# ------------------------------------------------- minisign's, checked by us


@pytest.mark.parametrize("size", [0, 1, 2 * MB + 5])
def test_we_verify_minisign_signatures(
    tmp_path: Path, theirs: tuple[Path, Path], size: int
) -> None:
    pk, sk = theirs
    f = _write_random(tmp_path / "data.bin", size)
    res = _run("-S", "-s", sk, "-m", f, "-t", "handover-test-v1 made by minisign")
    assert res.returncode == 0, res.stderr
    sig_text = (tmp_path / "data.bin.minisig").read_text()
    public = PublicKey.from_text(pk.read_text())
    result = minisign.verify_file(public, f, sig_text)
    assert result.trusted_comment == "handover-test-v1 made by minisign"
    assert result.prehashed
    assert minisign.verify(public, f.read_bytes(), sig_text).key_id == public.key_id


def test_we_refuse_tampered_minisign_signatures(tmp_path: Path, theirs: tuple[Path, Path]) -> None:
    pk, sk = theirs
    f = tmp_path / "doc.txt"
    f.write_bytes(b"original contents")
    assert _run("-S", "-s", sk, "-m", f, "-t", "comment one").returncode == 0
    sig_text = (tmp_path / "doc.txt.minisig").read_text()
    public = PublicKey.from_text(pk.read_text())
    with pytest.raises(SignatureError, match="does not match"):
        minisign.verify(public, b"original contentz", sig_text)
    with pytest.raises(SignatureError, match="trusted comment was altered"):
        minisign.verify(public, b"original contents", sig_text.replace("comment one", "comment 1"))
    with pytest.raises(KeyMismatchError, match="not by the expected key"):
        minisign.verify(SecretKey.generate().public_key, b"original contents", sig_text)


def test_wrong_minisign_key_refused(tmp_path: Path, theirs: tuple[Path, Path]) -> None:
    _, sk = theirs
    pk2, _sk2 = tmp_path / "second.pub", tmp_path / "second.key"
    assert _run("-G", "-W", "-p", pk2, "-s", _sk2).returncode == 0
    f = tmp_path / "x"
    f.write_bytes(b"x")
    assert _run("-S", "-s", sk, "-m", f, "-t", "t").returncode == 0
    with pytest.raises(KeyMismatchError):
        minisign.verify_file(
            PublicKey.from_text(pk2.read_text()), f, (tmp_path / "x.minisig").read_text()
        )


def test_minisign_legacy_signatures(tmp_path: Path, theirs: tuple[Path, Path]) -> None:
    pk, sk = theirs
    f = tmp_path / "legacy.txt"
    f.write_bytes(b"legacy")
    assert _run("-S", "-l", "-s", sk, "-m", f, "-t", "legacy comment").returncode == 0
    sig_text = (tmp_path / "legacy.txt.minisig").read_text()
    public = PublicKey.from_text(pk.read_text())
    with pytest.raises(SignatureError, match="legacy"):
        minisign.verify(public, b"legacy", sig_text)
    assert minisign.verify(public, b"legacy", sig_text, allow_legacy=True).prehashed is False
