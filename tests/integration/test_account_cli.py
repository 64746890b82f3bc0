"""``handover account``: create, list and TOTP enrolment, run as a user would (subprocess)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pytest

from transfer.auth import codes

HANDOVER = [sys.executable, "-m", "transfer.cli"]
ADMIN_PASSWORD = "a long enough pass phrase 42"
DSL_PASSWORD = "another long pass phrase 17"
KEY_LINE = re.compile(r"^  ((?:[A-Z2-7]{4} ?)+)$", re.MULTILINE)
RECOVERY = re.compile(r"^  ([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})$", re.MULTILINE)


def _run(
    args: list[str], env: dict[str, str], *, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HANDOVER, "account", *args],
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def node(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env["HANDOVER_KEK"] = secrets.token_hex(32)
    env["HOME"] = str(tmp_path / "home")
    env["HANDOVER_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    data = tmp_path / "node"
    r = subprocess.run(
        [
            *HANDOVER,
            "init",
            "--data-dir",
            str(data),
            "--school",
            "123456:8012000:Hillside",
            "--admin",
            "admin",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return data, env


def _secret(stdout: str) -> str:
    match = KEY_LINE.search(stdout)
    assert match, stdout
    return match.group(1).replace(" ", "")


def _fresh_code(secret: str) -> str:
    """A current code in a time step of its own (a code is accepted once per step)."""
    totp = pyotp.TOTP(secret)
    if 30 - time.time() % 30 < 3:
        time.sleep(3.5)
    return totp.now()


def _wrong(code: str) -> str:
    return f"{(int(code) + 500_000) % 1_000_000:06d}"


def test_create_then_enrol_at_the_prompt(node: tuple[Path, dict[str, str]]) -> None:
    data, env = node
    d = ["--data-dir", str(data), "--org", "123456"]
    env["HANDOVER_PASSWORD"] = DSL_PASSWORD
    r = _run(["create", *d, "--user", "dee", "--name", "Dee Okoro", "--role", "dsl"], env)
    assert r.returncode == 0, r.stderr
    assert "account 'dee' created in 123456: dsl" in r.stdout
    assert "enrol-totp" in r.stdout
    listed = _run(["list", *d], env)
    assert listed.returncode == 0, listed.stderr
    (dee_line,) = [line for line in listed.stdout.splitlines() if line.startswith("dee ")]
    assert "not set up" in dee_line and dee_line.endswith("active")

    proc = subprocess.Popen(
        [*HANDOVER, "account", "enrol-totp", *d, "--user", "dee"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    shown = ""
    while not KEY_LINE.search(shown):
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        shown += line
    secret = _secret(shown)
    # The QR code drawn is exactly the otpauth URI of this secret for this account.
    uri = codes.provisioning_uri(secret, account="dee@123456", issuer="Handover")
    assert codes.terminal_qr(uri) in shown
    code = _fresh_code(secret)
    out, err = proc.communicate(f"{_wrong(code)}\n{code[:3]} {code[3:]}\n", timeout=120)
    assert proc.returncode == 0, err
    assert "does not match" in err and "2 more tries" in err
    recovery = RECOVERY.findall(out)
    assert len(recovery) == 10 and len(set(recovery)) == 10
    assert secret not in out + err  # the key was shown once, before the prompt only

    listed = _run(["list", *d], env)
    (dee_line,) = [line for line in listed.stdout.splitlines() if line.startswith("dee ")]
    assert "set up" in dee_line and "not set up" not in dee_line
    again = _run(["enrol-totp", *d, "--user", "dee"], env)
    assert again.returncode != 0 and "already set up" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    # The recovery codes printed are the real ones: one signs in, once.
    asyncio.run(_sign_in_with_recovery(data, env, recovery[0]))


async def _sign_in_with_recovery(data: Path, env: dict[str, str], code: str) -> None:
    from transfer.auth.service import SignInFailed
    from transfer.node import Node
    from transfer.transport.http import http_transport

    saved = os.environ.get("HANDOVER_KEK")
    os.environ["HANDOVER_KEK"] = env["HANDOVER_KEK"]
    try:
        async with await Node.open(data, transport=http_transport) as n:
            ok = await n.accounts.sign_in("123456", "dee", DSL_PASSWORD, recovery_code=code)
            assert ok.state == "signed_in"
            with pytest.raises(SignInFailed):
                await n.accounts.sign_in("123456", "dee", DSL_PASSWORD, recovery_code=code)
    finally:
        if saved is None:
            del os.environ["HANDOVER_KEK"]
        else:
            os.environ["HANDOVER_KEK"] = saved


def test_enrolment_left_waiting_then_confirmed_with_code(
    node: tuple[Path, dict[str, str]],
) -> None:
    data, env = node
    d = ["--data-dir", str(data), "--org", "123456", "--user", "admin"]
    env["HANDOVER_PASSWORD"] = ADMIN_PASSWORD
    early = _run(["enrol-totp", *d, "--code", "123456"], env)
    assert early.returncode != 0 and "no enrolment is waiting" in early.stderr

    first = _run(["enrol-totp", *d], env)  # no terminal input: it waits
    assert first.returncode == 1
    assert "enrolment is waiting" in first.stderr and "--code DIGITS" in first.stderr
    secret = _secret(first.stdout)
    listed = _run(["list", "--data-dir", str(data), "--org", "123456"], env)
    assert "waiting" in listed.stdout

    code = _fresh_code(secret)
    wrong = _run(["enrol-totp", *d, "--code", _wrong(code)], env)
    assert wrong.returncode != 0 and "does not match" in wrong.stderr
    letters = _run(["enrol-totp", *d, "--code", "12ab56"], env)
    assert letters.returncode != 0 and "digits" in letters.stderr
    ok = _run(["enrol-totp", *d, "--code", code], env)
    assert ok.returncode == 0, ok.stderr
    assert len(RECOVERY.findall(ok.stdout)) == 10


def test_refusals(node: tuple[Path, dict[str, str]]) -> None:
    data, env = node
    d = ["--data-dir", str(data), "--org", "123456"]
    env["HANDOVER_PASSWORD"] = "not the admin password at all"
    bad_password = _run(["enrol-totp", *d, "--user", "admin"], env)
    assert bad_password.returncode != 0
    assert bad_password.stderr.strip().startswith("handover: error: the organisation, username")
    assert KEY_LINE.search(bad_password.stdout) is None  # nothing shown without the password
    unknown = _run(["enrol-totp", *d, "--user", "nobody"], env)
    assert unknown.returncode != 0 and "no active account 'nobody'" in unknown.stderr
    other_org = _run(["list", "--data-dir", str(data), "--org", "654321"], env)
    assert other_org.returncode != 0 and "654321" in other_org.stderr

    weak = dict(env, HANDOVER_PASSWORD="short")
    r = _run(["create", *d, "--user", "sam", "--name", "Sam", "--role", "staff"], weak)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    env["HANDOVER_PASSWORD"] = DSL_PASSWORD
    r = _run(["create", *d, "--user", "sam", "--name", "Sam", "--role", "janitor"], env)
    assert r.returncode != 0 and "unknown role 'janitor'" in r.stderr
    r = _run(["create", *d, "--user", "admin", "--name", "Again", "--role", "staff"], env)
    assert r.returncode != 0
    no_password = {k: v for k, v in env.items() if k != "HANDOVER_PASSWORD"}
    r = _run(["create", *d, "--user", "sam", "--name", "Sam", "--role", "staff"], no_password)
    assert r.returncode != 0 and "HANDOVER_PASSWORD" in r.stderr
    listed = _run(["list", *d], env)
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()[2:]] == ["admin"]
