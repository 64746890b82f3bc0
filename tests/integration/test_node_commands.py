"""init, retention, demo and serve, run as a user would: the real command in a subprocess."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HANDOVER = [sys.executable, "-m", "transfer.cli"]


def _run(
    args: list[str], env: dict[str, str], timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HANDOVER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        umask=0o022,  # the usual umask: the node's files must not rely on it
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    e["HANDOVER_KEK"] = secrets.token_hex(32)
    e["HOME"] = str(tmp_path / "home")
    return e


def test_init_creates_orgs_and_refuses_bad_input(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "node"
    env["HANDOVER_ADMIN_PASSWORD"] = "a long enough pass phrase 42"
    r = _run(
        [
            "init",
            "--data-dir",
            str(data),
            "--school",
            "123456:8012000:Hillside",
            "--agency",
            "lado-bristol:lado:Bristol LADO",
            "--admin",
            "admin",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    assert "school 123456 Hillside: key fingerprint" in r.stdout
    assert "agency lado-bristol" in r.stdout
    assert (data / "handover.toml").exists() and (data / "handover.db").exists()
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    # The same school twice is refused with one line and a non-zero exit.
    again = _run(["init", "--data-dir", str(data), "--school", "123456:8012000:Hillside"], env)
    assert again.returncode != 0
    assert again.stderr.strip().splitlines()[-1].startswith("handover: error: organisation")
    # An invalid URN is named.
    bad = _run(["init", "--data-dir", str(data), "--school", "12345:8012000:X"], env)
    assert bad.returncode != 0 and "URN" in bad.stderr
    # A weak administrator password is refused before anything is created.
    env["HANDOVER_ADMIN_PASSWORD"] = "short"
    weak = _run(
        ["init", "--data-dir", str(data), "--school", "234567:8012001:Other", "--admin", "admin"],
        env,
    )
    assert weak.returncode != 0
    # Without the KEK the node refuses to start and says how to fix it.
    no_kek = {k: v for k, v in env.items() if k != "HANDOVER_KEK"}
    r2 = _run(["retention", "run", "--data-dir", str(data)], no_kek)
    assert r2.returncode == 3 and "HANDOVER_KEK" in r2.stderr
    r3 = _run(["retention", "run", "--data-dir", str(data)], env)
    assert r3.returncode == 0 and "0 pupils erased, 0 tombstones left" in r3.stdout
    r4 = _run(["retention", "run", "--data-dir", str(tmp_path / "missing")], env)
    assert r4.returncode != 0 and "handover init" in r4.stderr


def test_demo_hands_over_a_file_between_two_real_nodes(tmp_path: Path, env: dict[str, str]) -> None:
    import hashlib
    import json

    work = tmp_path / "demo"
    env.pop("HANDOVER_KEK")
    r = _run(["demo", "--workdir", str(work)], env, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for step in (
        "delivered: the signed delivered receipt came back and verified",
        "accepted and imported",
        "accepted: the signed accepted receipt",
        "referral accepted by the MASH, reference MASH-2026-0415",
        "offline bundle",
        "audit log intact",
        "MASH       downloaded a document",
    ):
        assert step in out, step
    evidence = work / "evidence"
    # web.json: each node's web address and the demo people, authenticators enrolled.
    web = json.loads((work / "web.json").read_text())
    assert (work / "web.json").stat().st_mode & 0o777 == 0o600
    for node in web["nodes"]:
        assert node["url"].startswith("https://127.0.0.1:") and node["ca_file"]
        roles = sorted(r for a in node["accounts"] for r in a["roles"])
        assert roles == sorted(
            ["dsl", "deputy_dsl", "staff", "head_teacher", "auditor", "administrator"]
        )
        assert all(
            len(a["totp_secret"]) == 32 and a["display_name"] and a["org"] for a in node["accounts"]
        )
    code = _run(["demo-code", "--workdir", str(work), "s.patel"], env)
    assert code.returncode == 0 and re.fullmatch(r"\d{6}\n", code.stdout), code.stderr
    ambiguous = _run(["demo-code", "--workdir", str(work), "admin"], env)
    assert ambiguous.returncode != 0 and "--node" in ambiguous.stderr
    # Each node's data directory is where the issue says, and commands work on it afterwards.
    for name in ("primary", "secondary"):
        v = _run(["audit", "verify", "--data-dir", str(work / "nodes" / name)], env)
        assert v.returncode == 0 and "intact" in v.stdout, v.stderr
    # No KEK inside a data directory.
    assert not any(p.suffix == ".kek" for p in (work / "nodes").rglob("*"))
    # Every file of the nodes' data directories is 0600, every folder 0700; so are the
    # secret keys in the evidence (mash.key was 0644).
    nodes = work / "nodes"
    opened = [p for p in nodes.rglob("*") if p.stat().st_mode & 0o077]
    assert opened == [], [f"{oct(p.stat().st_mode & 0o777)} {p}" for p in opened]
    for secret in (evidence / "mash.key", evidence / "riverside.key"):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    assert evidence.stat().st_mode & 0o777 == 0o700

    # Anyone can re-check the handover with age, tar, minisign and sha256sum alone.
    pkg = next(evidence.glob("leaver-file-*.age"))
    plain = subprocess.run(
        ["age", "-d", "-i", str(evidence / "riverside.key"), str(pkg)],
        capture_output=True,
        check=True,
    ).stdout
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-x", "-C", str(unpacked)], input=plain, check=True)
    hillside = str(evidence / "hillside.pub")
    v = subprocess.run(
        ["minisign", "-Vm", str(unpacked / "manifest.json"), "-p", hillside],
        capture_output=True,
        text=True,
    )
    assert v.returncode == 0, v.stderr
    manifest = json.loads((unpacked / "manifest.json").read_bytes())
    assert manifest["recipient"]["org_id"] == "654321"
    digest = hashlib.sha256(pkg.read_bytes()).hexdigest()
    for kind in ("delivered", "viewed", "accepted"):
        receipt = evidence / f"receipt-{kind}.json"
        v = subprocess.run(
            ["minisign", "-Vm", str(receipt), "-p", str(evidence / "riverside.pub")],
            capture_output=True,
            text=True,
        )
        assert v.returncode == 0, v.stderr
        body = json.loads(receipt.read_bytes())
        assert body["kind"] == kind and body["ciphertext_sha256"] == digest
    accepted = json.loads((evidence / "receipt-accepted.json").read_bytes())
    assert (
        accepted["manifest_sha256"]
        == hashlib.sha256((unpacked / "manifest.json").read_bytes()).hexdigest()
    )
    # A flipped byte in a receipt fails minisign.
    bad = tmp_path / "bad.json"
    raw = bytearray((evidence / "receipt-accepted.json").read_bytes())
    raw[10] ^= 1
    bad.write_bytes(bytes(raw))
    (tmp_path / "bad.json.minisig").write_bytes(
        (evidence / "receipt-accepted.json.minisig").read_bytes()
    )
    v = subprocess.run(
        ["minisign", "-Vm", str(bad), "-p", str(evidence / "riverside.pub")],
        capture_output=True,
        text=True,
    )
    assert v.returncode != 0
    # The demo prints each school's fingerprint and the exact command that verifies the
    # package with Handover as the receiving school (issue 11, item 21): it works as printed.
    shown = _run(["keys", "show", "654321", "--data-dir", str(work / "nodes" / "secondary")], env)
    fingerprint = next(
        line.split(":", 1)[1].strip()
        for line in shown.stdout.splitlines()
        if line.startswith("fingerprint:")
    )
    assert f"Riverside Academy (654321): {fingerprint}" in out
    printed = next(line.strip() for line in out.splitlines() if "handover package verify" in line)
    assert f"--fingerprint {fingerprint}" in printed and str(pkg) in printed
    verified = subprocess.run(
        [*HANDOVER, *shlex.split(printed)[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith(f"OK: package {manifest['package_id']} (leaver_file)")
    # The offline bundle is there with its instructions; the nodes were stopped.
    assert (evidence / "offline-bundle" / "README.txt").exists()
    # A second run refuses to overwrite; --fresh would rebuild.
    again = _run(["demo", "--workdir", str(work)], env)
    assert again.returncode != 0 and "--fresh" in again.stderr


def test_serve_answers_over_tls(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "node"
    r = _run(["init", "--data-dir", str(data), "--school", "123456:8012000:Hillside"], env)
    assert r.returncode == 0, r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*HANDOVER, "serve", "--data-dir", str(data), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ctx = ssl.create_default_context(cafile=None)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + 60
        body = b""
        while time.monotonic() < deadline:
            try:
                url = f"https://127.0.0.1:{port}/api/v1/openapi.json"
                with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                    body = resp.read()
                break
            except OSError:
                time.sleep(0.3)
        assert b'"openapi": "3.1' in body or b'"openapi":"3.1' in body
        assert (data / "tls" / "dev-cert.pem").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
