"""``handover keys`` as a user runs it: a real process, a real data directory, Debian's age."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from keys import agekeys
from keys.keyfiles import KeyFiles
from keys.minisign import PublicKey
from keys.sealing import KekProtection

REPO = Path(__file__).resolve().parents[2]
HANDOVER = REPO / ".venv" / "bin" / "handover"
AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")
MINISIGN = shutil.which("minisign")
KEK_HEX = "5a" * 32
ORG = "urn:school:100001"


@pytest.fixture(scope="module", autouse=True)
def _need_tools() -> None:
    if not (AGE and AGE_KEYGEN and MINISIGN):
        pytest.fail("Debian's age and minisign are not installed: run `make tools`")


def _env(kek: str | None = KEK_HEX) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    # The editable install may resolve `transfer` as a namespace package from
    # outside the repository; point Python at the checkout explicitly.
    env["PYTHONPATH"] = str(REPO)
    if kek is not None:
        env["HANDOVER_KEK"] = kek
    return env


def handover(
    data_dir: Path, *args: str | Path, kek: str | None = KEK_HEX, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HANDOVER), "keys", args[0], "--data-dir", str(data_dir), *map(str, args[1:])],
        capture_output=True,
        text=True,
        env=_env(kek),
        input=stdin,
        timeout=60,
        check=False,
        cwd=data_dir.parent,
    )


def _field(stdout: str, name: str) -> str:
    m = re.search(rf"^{name}:\s+(\S+)$", stdout, re.M)
    assert m, stdout
    return m.group(1)


def _age_roundtrip(tmp_path: Path, recipient: str, identity_file: Path, payload: bytes) -> bytes:
    assert AGE is not None
    plain = tmp_path / "plain.bin"
    plain.write_bytes(payload)
    enc = tmp_path / f"enc-{recipient[-8:]}.age"
    if enc.exists():
        enc.unlink()
    subprocess.run([AGE, "-r", recipient, "-o", str(enc), str(plain)], check=True, timeout=60)
    out = subprocess.run(
        [AGE, "-d", "-i", str(identity_file), str(enc)], capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "node"
    d.mkdir()
    return d


def test_generate_show_and_export_public(data_dir: Path, tmp_path: Path) -> None:
    res = handover(data_dir, "generate", ORG)
    assert res.returncode == 0, res.stderr
    fp = _field(res.stdout, "fingerprint")
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}", fp)
    recipient = _field(res.stdout, "age recipient")
    key_id = _field(res.stdout, "minisign key id")
    show = handover(data_dir, "show", ORG)
    assert show.returncode == 0
    assert _field(show.stdout, "fingerprint") == fp
    assert _field(show.stdout, "age recipient") == recipient
    pub_file = tmp_path / "org.pub"
    exp = handover(data_dir, "export-public", ORG, "--minisign", pub_file)
    assert exp.returncode == 0, exp.stderr
    assert _field(exp.stdout, "age recipient") == recipient
    assert PublicKey.from_text(pub_file.read_text()).key_id_hex == key_id
    # a signature by the stored key verifies with minisign against the exported file
    ks = KeyFiles.for_data_dir(data_dir, KekProtection(bytes.fromhex(KEK_HEX))).load(ORG)
    f = tmp_path / "manifest.json"
    f.write_bytes(b"{}")
    (tmp_path / "manifest.json.minisig").write_text(
        ks.sign(b"{}", trusted_comment="handover-manifest-v1 test")
    )
    assert MINISIGN is not None
    v = subprocess.run([MINISIGN, "-V", "-p", str(pub_file), "-m", str(f)], capture_output=True)
    assert v.returncode == 0, v.stderr
    listing = handover(data_dir, "list")
    assert listing.stdout.split() == [ORG]
    key_file = data_dir / "keys" / "urn%3Aschool%3A100001.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert recipient.encode() not in key_file.read_bytes()  # nothing readable without the KEK


def test_generate_twice_is_a_conflict(data_dir: Path) -> None:
    assert handover(data_dir, "generate", ORG).returncode == 0
    res = handover(data_dir, "generate", ORG)
    assert res.returncode == 5
    assert "already has keys" in res.stderr
    assert "Traceback" not in res.stderr


def test_identity_export_is_guarded_and_works_with_age(data_dir: Path, tmp_path: Path) -> None:
    gen = handover(data_dir, "generate", ORG)
    recipient = _field(gen.stdout, "age recipient")
    out = tmp_path / "org.key"
    refused = handover(data_dir, "export-identity", ORG, "-o", out)
    assert refused.returncode == 6
    assert "--yes-i-understand" in refused.stderr
    assert not out.exists()
    ok = handover(data_dir, "export-identity", ORG, "--yes-i-understand", "-o", out)
    assert ok.returncode == 0, ok.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    assert "AGE-SECRET-KEY-1" in text and "AGE-SECRET-KEY-1" not in ok.stdout + ok.stderr
    payload = os.urandom(100_000)
    assert _age_roundtrip(tmp_path, recipient, out, payload) == payload
    again = handover(data_dir, "export-identity", ORG, "--yes-i-understand", "-o", out)
    assert again.returncode == 5 and "already exists" in again.stderr


def test_rotation_keeps_old_key_for_packages_in_flight(data_dir: Path, tmp_path: Path) -> None:
    old_recipient = _field(handover(data_dir, "generate", ORG).stdout, "age recipient")
    # a package is encrypted to the old key and is "in flight"
    assert AGE is not None
    (tmp_path / "pkg").write_bytes(b"leaver file")
    subprocess.run(
        [AGE, "-r", old_recipient, "-o", str(tmp_path / "pkg.age"), str(tmp_path / "pkg")],
        check=True,
    )
    rot = handover(data_dir, "rotate", ORG)
    assert rot.returncode == 0, rot.stderr
    new_recipient = _field(rot.stdout, "age recipient")
    assert new_recipient != old_recipient
    out = tmp_path / "all.key"
    assert (
        handover(data_dir, "export-identity", ORG, "--yes-i-understand", "-o", out).returncode == 0
    )
    assert len(agekeys.parse_identity_file(out.read_text())) == 2
    dec = subprocess.run(
        [AGE, "-d", "-i", str(out), str(tmp_path / "pkg.age")], capture_output=True
    )
    assert dec.returncode == 0 and dec.stdout == b"leaver file"
    assert _age_roundtrip(tmp_path, new_recipient, out, b"new") == b"new"
    show = handover(data_dir, "show", ORG).stdout
    assert old_recipient in show and "replaced" in show


def test_revoke(data_dir: Path) -> None:
    key_id = _field(handover(data_dir, "generate", ORG).stdout, "minisign key id")
    naive = handover(data_dir, "revoke", ORG, "--at", "2026-11-01T09:00:00")
    assert naive.returncode == 2 and "time zone" in naive.stderr
    garbage = handover(data_dir, "revoke", ORG, "--at", "yesterday")
    assert garbage.returncode == 2 and "ISO 8601" in garbage.stderr
    res = handover(data_dir, "revoke", ORG, "--at", "2026-11-01T09:00:00Z")
    assert res.returncode == 0, res.stderr
    assert f"Signing key {key_id} is revoked from 2026-11-01T09:00:00Z" in res.stdout
    assert _field(res.stdout, "minisign key id") != key_id
    show = handover(data_dir, "show", ORG).stdout
    assert f"{key_id}" in show and "REVOKED from 2026-11-01T09:00:00Z" in show
    later = handover(data_dir, "revoke", ORG, "--at", "2026-11-02T09:00:00Z", "--key-id", key_id)
    assert later.returncode == 6 and "earlier, not later" in later.stderr
    unknown = handover(data_dir, "revoke", ORG, "--at", "now", "--key-id", "0011223344556677")
    assert unknown.returncode == 4
    current = _field(res.stdout, "minisign key id")
    by_id = handover(data_dir, "revoke", ORG, "--at", "now", "--key-id", current)
    assert by_id.returncode == 0, by_id.stderr
    assert "New keys were made" in by_id.stdout
    assert _field(by_id.stdout, "minisign key id") not in (current, key_id)


def test_wrong_or_missing_kek(data_dir: Path) -> None:
    assert handover(data_dir, "generate", ORG).returncode == 0
    wrong = handover(data_dir, "show", ORG, kek="77" * 32)
    assert wrong.returncode == 7
    assert "key-encryption key" in wrong.stderr and "Traceback" not in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    missing = handover(data_dir, "show", ORG, kek=None)
    assert missing.returncode == 3 and "HANDOVER_KEK" in missing.stderr
    absent = handover(data_dir, "show", "urn:school:404")
    assert absent.returncode == 4 and "handover keys generate" in absent.stderr


def test_import_identity_from_age_keygen(data_dir: Path, tmp_path: Path) -> None:
    assert AGE_KEYGEN is not None
    key_file = tmp_path / "recovered.key"
    subprocess.run([AGE_KEYGEN, "-o", str(key_file)], check=True, capture_output=True)
    public = re.search(r"# public key: (age1\S+)", key_file.read_text())
    assert public
    res = handover(data_dir, "import-identity", ORG, key_file)
    assert res.returncode == 0, res.stderr
    assert _field(res.stdout, "age recipient") == public.group(1)
    # importing it again into the existing organisation adds nothing
    again = handover(data_dir, "import-identity", ORG, "-", stdin=key_file.read_text())
    assert again.returncode == 0 and again.stdout.startswith("0 keys added")
    # a file encrypted to the recovered key opens with what the node now exports
    out = tmp_path / "export.key"
    assert (
        handover(data_dir, "export-identity", ORG, "--yes-i-understand", "-o", out).returncode == 0
    )
    assert _age_roundtrip(tmp_path, public.group(1), out, b"recovered") == b"recovered"
    bad = tmp_path / "bad.key"
    bad.write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    broken = handover(data_dir, "import-identity", ORG, bad)
    assert broken.returncode == 2 and "line 1" in broken.stderr


def test_key_events_reach_the_tamper_evident_audit_log(data_dir: Path, tmp_path: Path) -> None:
    assert handover(data_dir, "generate", ORG).returncode == 0
    refused = handover(data_dir, "export-identity", ORG, "-o", tmp_path / "no.txt")
    assert refused.returncode != 0
    out = tmp_path / "id.txt"
    ok = handover(data_dir, "export-identity", ORG, "--yes-i-understand", "-o", out)
    assert ok.returncode == 0, ok.stderr

    def audit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HANDOVER), "audit", *args, "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            env=_env(KEK_HEX),
            timeout=60,
            check=False,
        )

    shown = audit("show", "--action", "key.export")
    assert shown.returncode == 0, shown.stderr
    lines = [ln for ln in shown.stdout.splitlines() if "key.export" in ln]
    assert len(lines) == 2, shown.stdout
    assert any(" refused " in ln for ln in lines) and any(" ok " in ln for ln in lines)
    assert "AGE-SECRET-KEY" not in shown.stdout
    assert "key.generate" in audit("show").stdout
    verified = audit("verify")
    assert verified.returncode == 0, verified.stderr
