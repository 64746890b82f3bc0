"""Interop of transfer.age with Debian's ``age`` and with ``pyrage``, both ways.

Plaintext is generated with ``os.urandom`` into temporary files and compared by
SHA-256; nothing of the large sizes is held in memory.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from transfer.age import (
    AgeReader,
    AgeWriter,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    decrypt,
    encrypt,
)

AGE = shutil.which("age")
SIZES = [
    pytest.param(0, id="0B"),
    pytest.param(1, id="1B"),
    pytest.param(65_535, id="64KiB-1"),
    pytest.param(65_536, id="64KiB"),
    pytest.param(65_537, id="64KiB+1"),
    pytest.param(10_000_000, id="10MB"),
    pytest.param(300_000_000, id="300MB", marks=pytest.mark.slow),
]
BLOCK = 1 << 20


@pytest.fixture(scope="module")
def age_bin() -> str:
    if AGE is None:
        pytest.fail("Debian's age is not installed: run `make tools`")
    return AGE


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[X25519Identity, Path]:
    """Our identity, and the same identity as an age identity file."""
    ident = X25519Identity.generate()
    path = tmp_path_factory.mktemp("keys") / "key.txt"
    path.write_text(f"# test key\n{ident.to_string()}\n")
    return ident, path


def make_plaintext(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            block = os.urandom(min(BLOCK, left))
            digest.update(block)
            fh.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def our_encrypt(src: Path, dst: Path, recipients: list[object], armor: bool = False) -> None:
    with src.open("rb") as fin, dst.open("wb") as fout:
        with AgeWriter(fout, recipients, armor=armor) as writer:  # type: ignore[arg-type]
            while block := fin.read(BLOCK):
                writer.write(block)


def our_decrypt_sha256(src: Path, identities: list[object]) -> str:
    digest = hashlib.sha256()
    with src.open("rb") as fin:
        reader = AgeReader(fin, identities)  # type: ignore[arg-type]
        buf = bytearray(BLOCK)
        while n := reader.readinto(buf):
            digest.update(memoryview(buf)[:n])
    return digest.hexdigest()


@pytest.fixture(scope="module", params=SIZES)
def plain(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str, int]]:
    """One random plaintext file per size, shared by the four directions, then deleted."""
    size: int = request.param
    path = tmp_path_factory.mktemp("plain") / "plain.bin"
    yield path, make_plaintext(path, size), size
    path.unlink()


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory emptied after the test (large files do not pile up)."""
    yield tmp_path
    for f in tmp_path.iterdir():
        f.unlink()


def test_we_encrypt_age_decrypts(
    age_bin: str, key: tuple[X25519Identity, Path], plain: tuple[Path, str, int], work: Path
) -> None:
    ident, key_file = key
    src, digest, size = plain
    enc, out = work / "enc.age", work / "out.bin"
    our_encrypt(src, enc, [ident.recipient, X25519Identity.generate().recipient])
    subprocess.run(
        [age_bin, "-d", "-i", str(key_file), "-o", str(out), str(enc)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    if size == 0 and not out.exists():
        out.touch()  # age opens its -o file lazily, on the first byte of plaintext
    assert out.stat().st_size == size
    assert sha256_file(out) == digest


def test_age_encrypts_we_decrypt(
    age_bin: str, key: tuple[X25519Identity, Path], plain: tuple[Path, str, int], work: Path
) -> None:
    ident, _ = key
    src, digest, _size = plain
    enc = work / "enc.age"
    subprocess.run(
        [age_bin, "-r", ident.recipient.to_string(), "-o", str(enc), str(src)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert our_decrypt_sha256(enc, [X25519Identity.generate(), ident]) == digest


def test_we_encrypt_pyrage_decrypts(
    key: tuple[X25519Identity, Path], plain: tuple[Path, str, int], work: Path
) -> None:
    ident, _ = key
    src, digest, _size = plain
    enc, out = work / "enc.age", work / "out.bin"
    our_encrypt(src, enc, [ident.recipient])
    pyrage.decrypt_file(str(enc), str(out), [pyrage.x25519.Identity.from_str(ident.to_string())])
    assert sha256_file(out) == digest


def test_pyrage_encrypts_we_decrypt(
    key: tuple[X25519Identity, Path], plain: tuple[Path, str, int], work: Path
) -> None:
    ident, _ = key
    src, digest, _size = plain
    enc = work / "enc.age"
    recipient = pyrage.x25519.Recipient.from_str(ident.recipient.to_string())
    pyrage.encrypt_file(str(src), str(enc), [recipient])
    assert our_decrypt_sha256(enc, [ident]) == digest


# --- armor and scrypt, small sizes --------------------------------------------


def test_armor_both_ways_with_age(
    age_bin: str, key: tuple[X25519Identity, Path], work: Path
) -> None:
    ident, key_file = key
    data = os.urandom(5000)
    ours = encrypt(data, [ident.recipient], armor=True)
    (work / "ours.age").write_bytes(ours)
    out = subprocess.run(
        [age_bin, "-d", "-i", str(key_file), str(work / "ours.age")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert out.stdout == data
    theirs = subprocess.run(
        [age_bin, "-a", "-r", ident.recipient.to_string()],
        input=data,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    assert theirs.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert decrypt(theirs, [ident]) == data


def test_armor_both_ways_with_pyrage(key: tuple[X25519Identity, Path]) -> None:
    ident, _ = key
    data = os.urandom(70_000)
    pid = pyrage.x25519.Identity.from_str(ident.to_string())
    assert pyrage.decrypt(encrypt(data, [ident.recipient], armor=True), [pid]) == data
    theirs = pyrage.encrypt(data, [pid.to_public()], armored=True)
    assert decrypt(theirs, [ident]) == data


def _age_with_passphrase(argv: list[str], passphrase: str, prompts: int) -> bytes:
    """Run age on a pseudo-terminal (it reads passphrases from /dev/tty only)."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execv(argv[0], argv)
    transcript = b""
    answered = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(fd, 1024)
            except OSError:
                break
            if not data:
                break
            transcript += data
            if answered < prompts and transcript.count(b"passphrase") > answered:
                os.write(fd, passphrase.encode() + b"\n")
                answered += 1
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, transcript
    return transcript


def test_scrypt_we_encrypt_age_decrypts(age_bin: str, work: Path) -> None:
    data = os.urandom(1000)
    (work / "p.age").write_bytes(encrypt(data, [ScryptRecipient(b"interop pass", log_n=15)]))
    out = work / "out.bin"
    _age_with_passphrase(
        [age_bin, "-d", "-o", str(out), str(work / "p.age")], "interop pass", prompts=1
    )
    assert out.read_bytes() == data


def test_scrypt_age_encrypts_we_decrypt(age_bin: str, work: Path) -> None:
    data = os.urandom(1000)
    (work / "plain").write_bytes(data)
    enc = work / "p.age"
    _age_with_passphrase(
        [age_bin, "-p", "-a", "-o", str(enc), str(work / "plain")], "interop pass", prompts=2
    )
    blob = enc.read_bytes()
    assert blob.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    assert decrypt(blob, [ScryptIdentity(b"interop pass")]) == data


def test_scrypt_with_pyrage() -> None:
    data = os.urandom(1000)
    ours = encrypt(data, [ScryptRecipient(b"pyrage pass", log_n=12)])
    assert pyrage.passphrase.decrypt(ours, "pyrage pass") == data
    theirs = pyrage.passphrase.encrypt(data, "pyrage pass")
    assert decrypt(theirs, [ScryptIdentity(b"pyrage pass")]) == data
