"""``handover package inspect|verify|open`` as a user runs them: a real process, real files."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from tests.integration.package.support import (
    Files,
    build_files,
    handover,
    handover_all,
    run_env,
    stale_signature_package,
)
from tests.unit.package.support import Parties, parties
from transfer.age import X25519Identity

KEK_HEX = "5a" * 32


@pytest.fixture
def p() -> Parties:
    return parties()


@pytest.fixture
def files(p: Parties, tmp_path: Path) -> Files:
    return build_files(p, tmp_path / "given")


def _who(p: Parties, files: Files) -> list[str | Path]:
    return [
        "-i",
        files.identity_file,
        "--org",
        p.recipient.org_id,
        "--fingerprint",
        p.recipient.fingerprint,
        "--sender-key",
        files.sender_pub,
    ]


def _leftovers(where: Path) -> list[str]:
    return sorted(x.name for x in where.iterdir() if x.name.startswith((".handover", "out")))


def test_verify_prints_one_ok_line(p: Parties, files: Files, tmp_path: Path) -> None:
    res = handover("package", "verify", files.package, *_who(p, files), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("OK: package ")
    assert str(files.built.manifest.package_id) in lines[0]
    assert files.built.ciphertext_sha256 in lines[0]
    assert res.stderr == ""  # no progress when standard error is not a terminal


def test_inspect_shows_the_manifest_without_extracting(
    p: Parties, files: Files, tmp_path: Path
) -> None:
    res = handover("package", "inspect", files.package, *_who(p, files), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "signature checked" in res.stdout
    assert "(addressed to us)" in res.stdout
    assert "Smith, Jo" in res.stdout
    for e in files.built.manifest.entries:
        assert f"{e.sha256}" in res.stdout and e.path in res.stdout
    res = handover("package", "inspect", files.package, "--json", *_who(p, files), cwd=tmp_path)
    assert json.loads(res.stdout)["package_id"] == str(files.built.manifest.package_id)
    # Without saying who we are, inspect still checks the signature and says what it did not.
    res = handover(
        "package",
        "inspect",
        files.package,
        "-i",
        files.identity_file,
        "--sender-key",
        files.sender_pub,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "NOT checked" in res.stdout
    assert sorted(x.name for x in tmp_path.iterdir()) == ["given"]


def test_open_extracts_only_after_everything_checks(
    p: Parties, files: Files, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    res = handover("package", "open", files.package, "-o", out, *_who(p, files), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "NOT encrypted" in res.stdout
    assert (out / "manifest.json").read_bytes() == files.built.manifest_bytes
    for e in files.built.manifest.entries:
        assert hashlib.sha256((out / e.path).read_bytes()).hexdigest() == e.sha256
    # An existing directory is never written into.
    again = handover("package", "open", files.package, "-o", out, *_who(p, files), cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr


def _refused(
    p: Parties, files: Files, package: Path, tmp_path: Path, expected: str, *, inspect: bool = True
) -> None:
    actions = ["verify", "open", *(["inspect"] if inspect else [])]
    calls: list[tuple[list[str | Path], Path]] = []
    for action in actions:
        extra: list[str | Path] = ["-o", tmp_path / "out"] if action == "open" else []
        calls.append((["package", action, package, *extra, *_who(p, files)], tmp_path))
    for action, res in zip(actions, handover_all(*calls), strict=True):
        assert res.returncode != 0, (action, res.stdout)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert lines[0].startswith("handover: error: ")
        assert expected in lines[0], (action, lines[0])
        assert res.stdout == ""
    assert _leftovers(tmp_path) == [], _leftovers(tmp_path)


def test_a_flipped_byte_in_the_ciphertext_is_refused(
    p: Parties, files: Files, tmp_path: Path
) -> None:
    original = files.package.read_bytes()
    bad = tmp_path / "flipped.age"
    mac_at = original.index(b"\n--- ") + 8
    body_at = original.index(b"\n", original.index(b"\n-> X25519 ") + 1) + 10

    def flipped(pos: int) -> Path:
        data = bytearray(original)
        if pos < len(original) - 1000:  # in the header (text): swap for another base64 letter
            data[pos] = ord("A") if data[pos] != ord("A") else ord("B")
        else:
            data[pos] ^= 0x01
        bad.write_bytes(bytes(data))
        return bad

    # In the payload, past the manifest: inspect does not read that far, verify and open do.
    pos = len(original) - 100
    _refused(p, files, flipped(pos), tmp_path, "could not be decrypted", inspect=False)
    _refused(p, files, flipped(mac_at), tmp_path, "could not be decrypted", inspect=False)
    _refused(p, files, flipped(body_at), tmp_path, "not encrypted to any of our keys")


def test_a_re_encrypted_tar_with_a_stale_signature_is_refused(
    p: Parties, files: Files, tmp_path: Path
) -> None:
    bad = tmp_path / "stale.age"
    stale_signature_package(p, bad)
    _refused(p, files, bad, tmp_path, "the package was altered after it was signed")


def test_a_package_for_another_recipient_key_is_refused(
    p: Parties, files: Files, tmp_path: Path
) -> None:
    other = build_files(p, tmp_path / "other", recipients=[X25519Identity.generate().recipient])
    _refused(p, files, other.package, tmp_path, "not encrypted to any of our keys", inspect=False)


def test_a_package_addressed_to_another_school_is_refused(
    p: Parties, files: Files, tmp_path: Path
) -> None:
    other = build_files(p, tmp_path / "other", recipient_org="urn:school:123456")
    _refused(
        p, files, other.package, tmp_path, "addressed to another organisation (urn:school:123456)"
    )


def test_an_unknown_sender_key_is_refused(p: Parties, files: Files, tmp_path: Path) -> None:
    stranger = KeySet.generate("urn:school:100001")
    files.sender_pub.write_text(stranger.minisign_public_key_text())
    _refused(p, files, files.package, tmp_path, "not a known key of the sender urn:school:100001")


def test_with_i_we_must_say_who_we_are(p: Parties, files: Files, tmp_path: Path) -> None:
    res = handover(
        "package",
        "verify",
        files.package,
        "-i",
        files.identity_file,
        "--sender-key",
        files.sender_pub,
        cwd=tmp_path,
    )
    assert res.returncode != 0 and "--org and --fingerprint" in res.stderr


def test_the_node_key_store_supplies_our_keys_and_the_senders(p: Parties, tmp_path: Path) -> None:
    """Both schools hosted on one node: no -i, no --sender-key."""
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    store = KeyFiles.for_data_dir(data_dir, KekProtection(bytes.fromhex(KEK_HEX)))
    sender = asyncio.run(store.create("urn:school:100001"))
    recipient = asyncio.run(store.create("urn:school:100002"))
    files = build_files(
        Parties(sender, recipient), tmp_path / "given", created_at=datetime.now(UTC)
    )
    env = run_env({"HANDOVER_KEK": KEK_HEX})
    base: list[str | Path] = ["--data-dir", data_dir, "--org", recipient.org_id]
    res = handover("package", "verify", files.package, *base, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("OK: ")
    # Once the sender revokes its key from before the package was made, it is refused.
    asyncio.run(store.revoke("urn:school:100001", at=sender.signing.created_at))
    res = handover("package", "verify", files.package, *base, cwd=tmp_path, env=env)
    assert res.returncode != 0
    assert "was revoked" in res.stderr


def test_with_i_and_no_node_the_sender_key_must_be_given(
    p: Parties, files: Files, tmp_path: Path
) -> None:
    res = handover(
        "package",
        "verify",
        files.package,
        "-i",
        files.identity_file,
        "--org",
        p.recipient.org_id,
        "--fingerprint",
        p.recipient.fingerprint,
        "--data-dir",
        tmp_path / "no-node",
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    assert "--sender-key FILE" in res.stderr
