"""Route 3: the offline bundle, opened by following its README.txt with Debian's age,
GNU tar, minisign and sha256sum (a recipient key, and a passphrase typed on a terminal)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from receivers.offline import COMMANDS_END, COMMANDS_START, write_offline_bundle
from schemas.records import NewConcern
from schemas.referrals import SelectedItem
from tests.integration.referrals.test_service import T0
from tests.support.referrals import Setting, police_form
from transfer.errors import ConflictError
from transfer.referrals.forms import parse_form

TOOLS = ("age", "tar", "minisign", "sha256sum", "bash")


@pytest.fixture(autouse=True)
def _need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing standard tools {missing}: run `make tools`")


def _commands(readme: str) -> str:
    m = re.search(re.escape(COMMANDS_START) + r"\n(.*?)\n" + re.escape(COMMANDS_END), readme, re.S)
    assert m, "README.txt has lost its commands"
    return m.group(1)


async def _draft(st: Setting, upn: str = "H801200001001") -> tuple[str, str]:
    sc = st.school
    pupil = await sc.pupil(upn)
    concern = await sc.store.record_concern(
        sc.staff,
        NewConcern(
            pupil_ids=(pupil.id,),
            category="online_safety",
            happened_at=T0,
            account="BUNDLE-MARKER images shared by Lee Park",
        ),
    )
    draft = await st.referrals.draft(
        sc.dsl, pupil_id=pupil.id, agency_org_id="police-avon", form=parse_form(police_form())
    )
    await st.referrals.select(sc.dsl, draft.id, [SelectedItem(kind="concern", id=concern.id)])
    return draft.id, concern.id


def _env(**extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "HOME": "/nonexistent",
        **extra,
    }


def _run(script: str, cwd: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=_env(KEY=str(key)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _check_opened(folder: Path, concern_id: str) -> None:
    opened = folder / "opened"
    form = json.loads((opened / "records" / "referral.json").read_text())
    assert form["kind"] == "police" and form["place"] == "Online"
    record = json.loads((opened / "records" / "concerns" / f"{concern_id}.json").read_text())
    assert record["account"].startswith("BUNDLE-MARKER")


async def test_bundle_to_the_agency_key_opens_with_the_readme_commands(
    setting: Setting, tmp_path: Path
) -> None:
    st, sc = setting, setting.school
    referral_id, concern_id = await _draft(st)
    bundle = await write_offline_bundle(st.referrals, sc.dsl, referral_id, tmp_path / "out")
    assert bundle.passphrase is None
    folder = bundle.path
    assert sorted(p.name for p in folder.iterdir()) == sorted(bundle.files)
    assert b"BUNDLE-MARKER" not in (folder / "referral.age").read_bytes()
    key = tmp_path / "agency-key.txt"
    key.write_text(st.agencies["police"].identity.to_string() + "\n")
    readme = (folder / "README.txt").read_text()
    assert st.school_keys.key_id_hex in readme and "Avon and Somerset Police" in readme
    res = await asyncio.to_thread(_run, _commands(readme), folder, key)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "referral checked" in res.stdout
    assert f"handover-bundle-v1 package={bundle.package_id}" in res.stdout
    assert "handover-manifest-v1" in res.stdout and "recipient=police-avon" in res.stdout
    _check_opened(folder, concern_id)
    record = await st.referrals.get(sc.dsl, referral_id)
    assert record.state == "sent" and record.route == "offline"
    assert record.package_id == bundle.package_id

    # The hand-over is recorded by the DSL: delivered, with to whom and how.
    handed = await st.referrals.record_handover(
        sc.dsl, referral_id, to_whom="DC Amir Khan", how="encrypted USB stick, in person"
    )
    assert handed.state == "delivered" and handed.handover is not None
    assert handed.handover["how"] == "encrypted USB stick, in person"
    with pytest.raises(ConflictError, match="already recorded"):
        await st.referrals.record_handover(sc.dsl, referral_id, to_whom="x", how="y")


async def test_a_tampered_bundle_is_refused_by_the_readme_commands(
    setting: Setting, tmp_path: Path
) -> None:
    st, sc = setting, setting.school
    referral_id, _ = await _draft(st)
    bundle = await write_offline_bundle(st.referrals, sc.dsl, referral_id, tmp_path / "out")
    package = bundle.path / "referral.age"
    data = bytearray(package.read_bytes())
    data[-100] ^= 1
    package.write_bytes(bytes(data))
    key = tmp_path / "agency-key.txt"
    key.write_text(st.agencies["police"].identity.to_string() + "\n")
    readme = (bundle.path / "README.txt").read_text()
    res = await asyncio.to_thread(_run, _commands(readme), bundle.path, key)
    assert res.returncode != 0
    assert "FAILED" in res.stdout + res.stderr
    assert not (bundle.path / "opened").exists()


def _run_on_terminal(script: str, cwd: Path, passphrase: str) -> tuple[int, str]:
    """bash on a pseudo-terminal: age reads the passphrase from /dev/tty only."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(cwd)
        os.execve("/bin/bash", ["bash", "-c", script], _env())
    transcript = b""
    answered = False
    deadline = time.monotonic() + 120
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
            if not answered and b"passphrase" in transcript.lower():
                os.write(fd, passphrase.encode() + b"\n")
                answered = True
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), transcript.decode(errors="replace")


async def test_passphrase_bundle_as_zip_opens_with_age_on_a_terminal(
    setting: Setting, tmp_path: Path
) -> None:
    st, sc = setting, setting.school
    referral_id, concern_id = await _draft(st)
    bundle = await write_offline_bundle(
        st.referrals,
        sc.dsl,
        referral_id,
        tmp_path / "out",
        passphrase=True,
        as_zip=True,
        scrypt_log_n=15,
    )
    assert bundle.passphrase is not None
    assert re.fullmatch(r"([0-9A-HJKMNP-TV-Z]{4}-){5}[0-9A-HJKMNP-TV-Z]{4}", bundle.passphrase)
    assert bundle.path.suffix == ".zip" and bundle.path.is_file()
    # The passphrase is stored nowhere: not in the bundle, the database or the audit trail.
    assert bundle.passphrase.encode() not in bundle.path.read_bytes()
    for db in sc.data_dir.parent.glob("handover.db*"):
        assert bundle.passphrase.encode() not in db.read_bytes()
    assert bundle.passphrase not in json.dumps([e.detail for e in sc.audit.events], default=str)
    unpacked = tmp_path / "agency"
    with zipfile.ZipFile(bundle.path) as z:
        z.extractall(unpacked)
    folder = unpacked / bundle.path.stem
    readme = (folder / "README.txt").read_text()
    assert "PASSPHRASE" in readme and "unzip" in readme
    code, transcript = await asyncio.to_thread(
        _run_on_terminal, _commands(readme), folder, bundle.passphrase
    )
    assert code == 0, transcript
    assert "referral checked" in transcript
    _check_opened(folder, concern_id)
    # A wrong passphrase opens nothing.
    (folder / "opened").rename(folder / "first")
    code, transcript = await asyncio.to_thread(
        _run_on_terminal, _commands(readme), folder, "WRONG-PASS"
    )
    assert code != 0
    assert not any((folder / "opened").rglob("*"))


async def test_a_bundle_is_for_its_writer_alone(setting: Setting, tmp_path: Path) -> None:
    """Written into ``exports/`` of the data directory by the API: 0700 folders, 0600 files,
    whatever the umask (it was 0755/0644)."""
    st, sc = setting, setting.school
    old = os.umask(0o022)
    try:
        out = tmp_path / "data" / "exports" / "referrals"
        folder = (await write_offline_bundle(st.referrals, sc.dsl, (await _draft(st))[0], out)).path
        zipped = await write_offline_bundle(
            st.referrals, sc.dsl, (await _draft(st, upn="X801200001002"))[0], out, as_zip=True
        )
    finally:
        os.umask(old)
    entries = [out.parent, out, folder, *folder.iterdir(), zipped.path]
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in entries}
    assert all(m in ("0o700", "0o600") for m in modes.values()), modes
