"""``handover age``: keygen, encrypt and decrypt, run as a real process."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from transfer.age import X25519Identity, decrypt, read_identities_file

REPO = Path(__file__).resolve().parents[2]
HANDOVER = REPO / ".venv" / "bin" / "handover"
AGE = shutil.which("age")
PASSPHRASE_ENV = "HANDOVER_AGE_PASSPHRASE"


def _env(passphrase: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env["PYTHONPATH"] = str(REPO)
    if passphrase is not None:
        env[PASSPHRASE_ENV] = passphrase
    return env


def handover(
    *args: str | Path, cwd: Path, stdin: bytes = b"", passphrase: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(HANDOVER), "age", *map(str, args)],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=_env(passphrase),
        timeout=120,
        start_new_session=True,  # no controlling terminal: a passphrase prompt cannot hang
    )


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = proc.stderr.decode()
    assert text.count("\n") == 1 and text.startswith("handover: error: "), text
    return text


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An identity file made by ``handover age keygen -o``, and its recipient."""
    directory = tmp_path_factory.mktemp("key")
    path = directory / "key.txt"
    proc = handover("keygen", "-o", path, cwd=directory)
    assert proc.returncode == 0, proc.stderr
    recipient = proc.stderr.decode().strip().removeprefix("Public key: ")
    return path, recipient


def test_keygen_writes_private_file(tmp_path: Path, keyfile: tuple[Path, str]) -> None:
    path, recipient = keyfile
    assert recipient.startswith("age1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert f"# public key: {recipient}\n" in text
    (ident,) = read_identities_file(text)
    assert ident.recipient.to_string() == recipient
    again = handover("keygen", "-o", path, cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in one_line_error(again)
    assert path.read_text() == text


def test_keygen_to_stdout(tmp_path: Path) -> None:
    proc = handover("keygen", cwd=tmp_path)
    assert proc.returncode == 0
    (ident,) = read_identities_file(proc.stdout.decode())
    assert proc.stderr.decode() == f"Public key: {ident.recipient.to_string()}\n"


def test_round_trip_files_and_pipes(tmp_path: Path, keyfile: tuple[Path, str]) -> None:
    path, recipient = keyfile
    data = os.urandom(200_000)
    (tmp_path / "plain").write_bytes(data)
    enc = handover("encrypt", "-r", recipient, "-o", "out.age", "plain", cwd=tmp_path)
    assert enc.returncode == 0, enc.stderr
    dec = handover("decrypt", "-i", path, "-o", "back", "out.age", cwd=tmp_path)
    assert dec.returncode == 0, dec.stderr
    assert (tmp_path / "back").read_bytes() == data
    # Standard input and output when no file is named.
    piped = handover("encrypt", "-r", recipient, cwd=tmp_path, stdin=data)
    assert piped.returncode == 0
    out = handover("decrypt", "-i", path, cwd=tmp_path, stdin=piped.stdout)
    assert out.returncode == 0 and out.stdout == data


def test_armor_and_recipients_file(tmp_path: Path, keyfile: tuple[Path, str]) -> None:
    path, recipient = keyfile
    other = X25519Identity.generate()
    (tmp_path / "recipients.txt").write_text(
        f"# the receiving school\n{recipient}\n\n# its second key\n{other.recipient}\n"
    )
    enc = handover("encrypt", "-R", "recipients.txt", "-a", cwd=tmp_path, stdin=b"armored")
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert decrypt(enc.stdout, [other]) == b"armored"
    dec = handover("decrypt", "-i", path, cwd=tmp_path, stdin=enc.stdout)
    assert dec.stdout == b"armored"


def test_passphrase_from_environment(tmp_path: Path) -> None:
    enc = handover("encrypt", "-p", "-a", cwd=tmp_path, stdin=b"pass", passphrase="s3cret words")
    assert enc.returncode == 0, enc.stderr
    assert b"s3cret" not in enc.stdout and b"s3cret" not in enc.stderr
    dec = handover("decrypt", cwd=tmp_path, stdin=enc.stdout, passphrase="s3cret words")
    assert dec.returncode == 0 and dec.stdout == b"pass"
    wrong = handover("decrypt", cwd=tmp_path, stdin=enc.stdout, passphrase="other words")
    assert wrong.returncode == 7
    assert "not encrypted to any of the given identities" in one_line_error(wrong)
    # No terminal and no variable: a clear error, not a hang.
    none = handover("decrypt", cwd=tmp_path, stdin=enc.stdout)
    assert none.returncode == 2 and PASSPHRASE_ENV in one_line_error(none)


def test_passphrase_cannot_be_mixed(tmp_path: Path, keyfile: tuple[Path, str]) -> None:
    _, recipient = keyfile
    proc = handover("encrypt", "-p", "-r", recipient, cwd=tmp_path, passphrase="pw")
    assert proc.returncode == 2 and "-p" in one_line_error(proc)


def test_usage_errors(tmp_path: Path, keyfile: tuple[Path, str]) -> None:
    path, _ = keyfile
    missing = handover("decrypt", "-i", path, "-o", "x", "nope.age", cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in one_line_error(missing)
    norec = handover("encrypt", cwd=tmp_path, stdin=b"x")
    assert norec.returncode == 2 and "recipient" in one_line_error(norec)
    bad = handover("encrypt", "-r", "age1notakey", cwd=tmp_path, stdin=b"x")
    assert bad.returncode == 2 and "age1" in one_line_error(bad)
    assert not (tmp_path / "x").exists()


def _no_leftovers(directory: Path, *names: str) -> None:
    for name in names:
        assert not (directory / name).exists()
    assert not [p for p in directory.iterdir() if p.name.endswith(".part")]


def test_tampered_file_leaves_no_output(tmp_path: Path, keyfile: tuple[Path, str]) -> None:
    path, recipient = keyfile
    data = os.urandom(3 * 65536 + 10)
    (tmp_path / "plain").write_bytes(data)
    assert (
        handover("encrypt", "-r", recipient, "-o", "ok.age", "plain", cwd=tmp_path).returncode == 0
    )
    blob = bytearray((tmp_path / "ok.age").read_bytes())
    blob[-(65536 + 100)] ^= 0x01  # inside the third chunk: two chunks verify first
    (tmp_path / "bad.age").write_bytes(bytes(blob))
    proc = handover("decrypt", "-i", path, "-o", "out.bin", "bad.age", cwd=tmp_path)
    assert proc.returncode == 7
    assert "damaged or was altered" in one_line_error(proc)
    _no_leftovers(tmp_path, "out.bin")


def test_truncated_and_wrong_key_leave_no_output(tmp_path: Path, keyfile: tuple[Path, str]) -> None:
    path, recipient = keyfile
    (tmp_path / "plain").write_bytes(os.urandom(150_000))
    assert (
        handover("encrypt", "-r", recipient, "-o", "ok.age", "plain", cwd=tmp_path).returncode == 0
    )
    blob = (tmp_path / "ok.age").read_bytes()
    (tmp_path / "cut.age").write_bytes(blob[:-20])
    proc = handover("decrypt", "-i", path, "-o", "out.bin", "cut.age", cwd=tmp_path)
    assert proc.returncode == 7 and "damaged" in one_line_error(proc)
    _no_leftovers(tmp_path, "out.bin")

    other = tmp_path / "other.txt"
    other.write_text(X25519Identity.generate().to_string() + "\n")
    proc = handover("decrypt", "-i", other, "-o", "out.bin", "ok.age", cwd=tmp_path)
    assert proc.returncode == 7
    assert "not encrypted to any of the given identities" in one_line_error(proc)
    _no_leftovers(tmp_path, "out.bin")


def test_interop_with_age_through_the_cli(tmp_path: Path, keyfile: tuple[Path, str]) -> None:
    if AGE is None:
        pytest.fail("Debian's age is not installed: run `make tools`")
    path, recipient = keyfile
    data = os.urandom(70_000)
    ours = handover("encrypt", "-r", recipient, cwd=tmp_path, stdin=data)
    theirs = subprocess.run(
        [AGE, "-d", "-i", str(path)], input=ours.stdout, capture_output=True, check=True
    )
    assert theirs.stdout == data
    by_age = subprocess.run(
        [AGE, "-r", recipient], input=data, capture_output=True, check=True
    ).stdout
    back = handover("decrypt", "-i", path, cwd=tmp_path, stdin=by_age)
    assert back.returncode == 0 and back.stdout == data
