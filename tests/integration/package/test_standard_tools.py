"""An outsider checks a package with Debian's age, GNU tar, minisign and sha256sum only.

The script is taken verbatim from ``docs/verify-with-standard-tools.md`` ("Checking a
package with standard tools"), so the documented commands are the tested ones: here
against crafted packages (altered, with an unlisted file, with a link); against the
demo's real package it runs with every other documented command, in
``tests/docs/test_documented_commands.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from schemas.manifest import ManifestEntry
from tests.docs.blocks import marked_block
from tests.integration.package.support import Files, build_files, identity
from tests.unit.package.support import (
    Parties,
    RawMember,
    parties,
    raw_tar,
    signed_members,
    source_members,
)
from transfer.age import encrypt
from transfer.package.build import EntrySource

DOC = Path(__file__).resolve().parents[3] / "docs" / "verify-with-standard-tools.md"
TOOLS = ("age", "tar", "minisign", "sha256sum", "bash")


@pytest.fixture(scope="module", autouse=True)
def _need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing standard tools {missing}: run `make tools`")


def documented_script() -> str:
    return marked_block(DOC, "standard-tools-script")


def run_script(files: Files, package: Path, work: Path) -> subprocess.CompletedProcess[str]:
    work.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PACKAGE": str(package),
        "KEY": str(files.identity_file),
        "SENDER_PUB": str(files.sender_pub),
        "LC_ALL": "C",
    }
    return subprocess.run(
        ["bash", "-c", documented_script()],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def p() -> Parties:
    return parties()


def test_a_package_checks_with_standard_tools(p: Parties, tmp_path: Path) -> None:
    files = build_files(p, tmp_path / "given")
    res = run_script(files, files.package, tmp_path / "work")
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = files.built.manifest
    assert "Signature and comment signature verified" in res.stdout
    assert (
        f"Trusted comment: handover-manifest-v1 package={manifest.package_id} "
        f"recipient={p.recipient.org_id} sha256={files.built.manifest_sha256}"
    ) in res.stdout
    for entry in manifest.entries:
        assert f"{entry.path}: OK" in res.stdout
    assert "package checked" in res.stdout
    opened = tmp_path / "work" / "opened"
    assert (opened / "manifest.json").read_bytes() == files.built.manifest_bytes


def _reencrypted(p: Parties, files: Files, members: list[RawMember], path: Path) -> Path:
    path.write_bytes(encrypt(raw_tar(members), [identity(p.recipient).recipient]))
    return path


def test_standard_tools_catch_an_altered_file(p: Parties, tmp_path: Path) -> None:
    files = build_files(p, tmp_path / "given")
    sources = [EntrySource.from_bytes("records/pupil.json", b'{"surname":"Smith"}')]
    _, head = signed_members(p, sources)
    body = [RawMember("records/pupil.json", b'{"surname":"Smyth"}')]
    bad = _reencrypted(p, files, head + body, tmp_path / "altered.age")
    res = run_script(files, bad, tmp_path / "work")
    assert res.returncode != 0
    assert "records/pupil.json: FAILED" in res.stdout


def test_standard_tools_catch_an_altered_manifest(p: Parties, tmp_path: Path) -> None:
    files = build_files(p, tmp_path / "given")
    sources = [EntrySource.from_bytes("records/pupil.json", b"{}")]
    _, head = signed_members(p, sources)
    head[0] = RawMember("manifest.json", head[0].data.replace(b"Smith", b"Smyth"))
    bad = _reencrypted(p, files, head + source_members(sources), tmp_path / "m.age")
    res = run_script(files, bad, tmp_path / "work")
    assert res.returncode != 0
    assert "Signature verification failed" in res.stderr + res.stdout


def test_standard_tools_catch_an_unlisted_file_and_a_link(p: Parties, tmp_path: Path) -> None:
    files = build_files(p, tmp_path / "given")
    sources = [EntrySource.from_bytes("records/pupil.json", b"{}")]
    _, head = signed_members(p, sources)
    extra = [*head, *source_members(sources), RawMember("records/extra.json", b"{}")]
    res = run_script(files, _reencrypted(p, files, extra, tmp_path / "x.age"), tmp_path / "w1")
    assert res.returncode != 0
    assert "records/extra.json" in res.stdout
    link = [
        *head,
        *source_members(sources),
        RawMember("evil", type=tarfile.SYMTYPE, linkname="/etc"),
    ]
    res = run_script(files, _reencrypted(p, files, link, tmp_path / "l.age"), tmp_path / "w2")
    assert res.returncode != 0
    assert "refused, not a regular file" in res.stdout
    assert not (tmp_path / "w2" / "opened" / "evil").exists()


def test_the_manifest_entries_grep_matches_a_json_parser(p: Parties, tmp_path: Path) -> None:
    """Steps 4-5 read the canonical manifest with grep/sed; they must agree with JSON."""
    files = build_files(p, tmp_path / "given")
    data = files.built.manifest_bytes.decode()
    grepped = re.findall(r'"path":"([^"]*)","sha256":"([0-9a-f]*)"', data)
    parsed = [ManifestEntry.model_validate(e) for e in json.loads(data)["entries"]]
    assert grepped == [(e.path, e.sha256) for e in parsed]
    assert files.built.manifest_bytes == files.built.manifest.canonical_bytes()
