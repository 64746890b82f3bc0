"""init, retention, demo and serve, run as a user would: the real command in a subprocess."""

from __future__ import annotations

import os
import secrets
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
        [*HANDOVER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
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
    r = _run(["init", "--data-dir", str(data), "--school", "123456:8012000:Hillside",
              "--agency", "lado-bristol:lado:Bristol LADO", "--admin", "admin"], env)  # fmt: skip
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
    weak = _run(["init", "--data-dir", str(data), "--school", "234567:8012001:Other",
                 "--admin", "admin"], env)  # fmt: skip
    assert weak.returncode != 0
    # Without the KEK the node refuses to start and says how to fix it.
    no_kek = {k: v for k, v in env.items() if k != "HANDOVER_KEK"}
    r2 = _run(["retention", "run", "--data-dir", str(data)], no_kek)
    assert r2.returncode == 3 and "HANDOVER_KEK" in r2.stderr
    r3 = _run(["retention", "run", "--data-dir", str(data)], env)
    assert r3.returncode == 0 and "0 pupil(s) erased" in r3.stdout
    r4 = _run(["retention", "run", "--data-dir", str(tmp_path / "missing")], env)
    assert r4.returncode != 0 and "handover init" in r4.stderr


def test_demo_builds_a_verifiable_leavers_file(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "demo"
    env.pop("HANDOVER_KEK")
    r = _run(["demo", "--data-dir", str(data)], env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "CTF import: 6 pupils on roll" in r.stdout
    assert "OK: package" in r.stdout and "audit log intact" in r.stdout
    # The KEK is beside, not inside, the data directory.
    assert (tmp_path / "demo.kek").exists()
    assert not any(p.suffix == ".kek" for p in data.rglob("*"))
    pkg = next((data / "evidence").glob("leaver-file-*.age"))
    # A second run refuses to overwrite; --fresh rebuilds.
    again = _run(["demo", "--data-dir", str(data)], env)
    assert again.returncode != 0 and "--fresh" in again.stderr
    # A flipped byte in the sealed file is refused by verification.
    blob = bytearray(pkg.read_bytes())
    blob[len(blob) // 2] ^= 1
    pkg.write_bytes(bytes(blob))
    v = _run(["package", "verify", str(pkg), "--data-dir", str(data), "--org", "654321"], env)
    assert v.returncode != 0 and v.stdout == ""


def test_serve_answers_over_tls(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "node"
    r = _run(["init", "--data-dir", str(data), "--school", "123456:8012000:Hillside"], env)
    assert r.returncode == 0, r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*HANDOVER, "serve", "--data-dir", str(data), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
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
