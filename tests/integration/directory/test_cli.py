"""``handover directory`` as people run it: the real command in a subprocess, real files,
a real socket for ``serve`` and ``import --url``, and one-line refusals with their exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys import minisign
from tests.integration.directory.support import HANDOVER, T0, cli_env, document, entry, keyset
from transfer.directory.document import authority_secret_key_text


def run(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HANDOVER, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def ok(env: dict[str, str], *args: str | Path) -> str:
    r = run(env, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def refused(env: dict[str, str], code: int, *args: str | Path) -> str:
    """The command fails with ``code`` and exactly one line on stderr; return that line."""
    r = run(env, *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("handover: error: "), r.stderr
    return lines[0]


def fingerprint_in(text: str) -> str:
    found = re.search(r"fingerprint:?\s+([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})", text)
    assert found, text
    return found.group(1)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


@pytest.fixture
def served(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[Path, Path, str]]:
    """An authority with a signed directory listing node A's school, served on a real socket.

    Yields (authority dir, directory.json, URL of the served directory).
    """
    auth = tmp_path / "auth"
    out = ok(env, "directory", "authority-keygen", "--out", auth)
    assert "no passphrase" in out
    assert oct((auth / "authority.key").stat().st_mode & 0o777) == "0o600"
    node_a = tmp_path / "node-a"
    ok(env, "init", "--data-dir", node_a, "--school", "100001:8010001:Hillside Primary")
    entry_file = tmp_path / "hillside.json"
    out = ok(
        env,
        "directory",
        "export-entry",
        "--data-dir",
        node_a,
        "--org",
        "100001",
        "--email",
        "dsl@hillside.example",
        "--out",
        entry_file,
    )
    exported = json.loads(entry_file.read_text())
    assert fingerprint_in(out) == exported["fingerprint"]
    assert exported["email"] == "dsl@hillside.example" and exported["kind"] == "school"
    doc = tmp_path / "directory.json"
    ok(env, "directory", "new", "--authority-name", "Testshire County Council", "--out", doc)
    ok(env, "directory", "add-org", "--file", doc, "--entry", entry_file)
    line = refused(env, 5, "directory", "add-org", "--file", doc, "--entry", entry_file)
    assert "already in the directory" in line and "--replace" in line
    out = ok(env, "directory", "sign", "--file", doc, "--key", auth / "authority.key")
    assert "serial 1 signed" in out and (tmp_path / "directory.json.minisig").exists()
    shown = ok(env, "directory", "show", "--file", doc, "--authority-key", auth / "authority.pub")
    assert "signature:    valid" in shown and "100001" in shown and "Hillside" in shown

    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [*HANDOVER, "directory", "serve", "--file", str(doc), "--host", "127.0.0.1", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/directory\.json", banner)
        assert found, (banner, (tmp_path / "serve.log").read_text())
        yield auth, doc, f"http://127.0.0.1:{found.group(1)}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_directory_serve_names_no_server_version(
    served: tuple[Path, Path, str],
) -> None:
    """``directory serve`` faces the network too: the node's listener, not aiohttp's."""
    _, _, url = served
    with urllib.request.urlopen(url + "directory.json", timeout=30) as r:
        assert r.headers["Server"] == "Handover"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + "nothing-here", timeout=30)
    assert refused.value.code == 404 and refused.value.headers["Server"] == "Handover"


def test_authority_to_node_over_a_real_socket(
    tmp_path: Path, env: dict[str, str], served: tuple[Path, Path, str]
) -> None:
    auth, doc, url = served
    node_b = tmp_path / "node-b"
    ok(env, "init", "--data-dir", node_b, "--school", "100002:8010002:Oak Academy")
    # Importing before pinning is refused.
    line = refused(env, 6, "directory", "import", "--data-dir", node_b, "--url", url)
    assert "no directory authority is pinned" in line
    # Pinning shows the fingerprint and wants it confirmed.
    pub = auth / "authority.pub"
    line = refused(env, 2, "directory", "pin", "--data-dir", node_b, "--authority-key", pub)
    actual = fingerprint_in(line.replace("fingerprint is", "fingerprint:"))
    line = refused(
        env,
        6,
        "directory",
        "pin",
        "--data-dir",
        node_b,
        "--authority-key",
        pub,
        "--fingerprint",
        "0000-0000-0000-0000",
    )
    assert "does not match" in line
    out = ok(
        env,
        "directory",
        "pin",
        "--data-dir",
        node_b,
        "--authority-key",
        pub,
        "--fingerprint",
        actual.lower().replace("-", " "),
    )
    assert actual in out
    out = ok(env, "directory", "import", "--data-dir", node_b, "--url", url)
    assert "serial 1 imported: 1 organisation," in out
    listed = ok(env, "directory", "list", "--data-dir", node_b)
    assert re.search(r"100001\s+authority\s+school", listed)
    assert re.search(r"100002\s+own\s+school", listed)
    assert "Testshire County Council" in listed
    again = ok(env, "directory", "import", "--data-dir", node_b, "--url", url)
    assert "already held" in again

    # The authority revokes Hillside's key and signs serial 2; the node picks it up.
    key_id = json.loads(doc.read_text())["organisations"][0]["key_id"]
    old_doc, old_sig = doc.read_bytes(), (tmp_path / "directory.json.minisig").read_bytes()
    revoke = ["directory", "revoke", "--file", doc, "--org", "100001", "--key-id", key_id]
    line = refused(env, 2, *revoke, "--at", "yesterday", "--reason", "laptop stolen")
    assert "--at" in line and "ISO 8601" in line
    ok(
        env,
        "directory",
        "revoke",
        "--file",
        doc,
        "--org",
        "100001",
        "--key-id",
        key_id,
        "--at",
        "2026-11-01T09:00:00Z",
        "--reason",
        "laptop stolen",
    )
    assert not (tmp_path / "directory.json.minisig").exists()  # edited: old signature removed
    ok(env, "directory", "sign", "--file", doc, "--key", auth / "authority.key")
    out = ok(env, "directory", "import", "--data-dir", node_b, "--url", url)
    assert "serial 2 imported" in out and "1 revocation;" in out
    listed = ok(env, "directory", "list", "--data-dir", node_b)
    assert f"{key_id} from 2026-11-01T09:00:00Z  laptop stolen" in listed

    # Rollback to serial 1: refused, and serial 2 stays.
    old = tmp_path / "old"
    old.mkdir()
    (old / "directory.json").write_bytes(old_doc)
    (old / "directory.json.minisig").write_bytes(old_sig)
    line = refused(
        env, 6, "directory", "import", "--data-dir", node_b, "--file", old / "directory.json"
    )
    assert "serial 1, older than serial 2" in line
    # Tampered: refused as an integrity failure.
    (old / "directory.json").write_bytes(doc.read_bytes().replace(b"Hillside", b"Hillsid3"))
    (old / "directory.json.minisig").write_bytes((tmp_path / "directory.json.minisig").read_bytes())
    line = refused(
        env, 7, "directory", "import", "--data-dir", node_b, "--file", old / "directory.json"
    )
    assert "does not match its signature" in line
    assert "serial 2" in ok(env, "directory", "list", "--data-dir", node_b)
    # Nothing is served but the two files.
    missing = run(env, "directory", "import", "--data-dir", node_b, "--url", url + "authority.key")
    assert missing.returncode == 2 and "404" in missing.stderr


def test_node_refusals_expired_wrong_authority_and_local_entries(
    tmp_path: Path, env: dict[str, str]
) -> None:
    node = tmp_path / "node"
    ok(env, "init", "--data-dir", node, "--school", "100002:8010002:Oak Academy")
    secret = minisign.SecretKey.generate()
    pub = tmp_path / "authority.pub"
    pub.write_text(secret.public_key.to_text())
    (tmp_path / "authority.key").write_text(authority_secret_key_text(secret))
    line = refused(env, 2, "directory", "pin", "--data-dir", node, "--authority-key", pub)
    fp = fingerprint_in(line.replace("fingerprint is", "fingerprint:"))
    ok(env, "directory", "pin", "--data-dir", node, "--authority-key", pub, "--fingerprint", fp)

    def write(name: str, data: bytes, sig: str) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        path.with_name(name + ".minisig").write_text(sig)
        return path

    # A directory whose next update was due in September (grace long past).
    _, data, sig = document(secret, [entry(keyset("100009"))], serial=99, now=T0)
    stale = write("stale.json", data, sig)
    line = refused(env, 6, "directory", "import", "--data-dir", node, "--file", stale)
    assert "expired" in line and "serial 100" in line
    # Signed by someone else.
    _, data, sig = document(minisign.SecretKey.generate(), [], serial=0)
    line = refused(
        env, 7, "directory", "import", "--data-dir", node, "--file", write("other.json", data, sig)
    )
    assert "not by the directory authority this node trusts" in line
    # A missing signature file is named.
    (tmp_path / "bare.json").write_bytes(data)
    line = refused(
        env, 2, "directory", "import", "--data-dir", node, "--file", tmp_path / "bare.json"
    )
    assert "bare.json.minisig does not exist" in line

    # A local entry, by hand: the fingerprint read out must match.
    lado = keyset("lado-testshire")
    entry_file = tmp_path / "lado.json"
    entry_file.write_text(entry(lado, "Testshire LADO", "lado").model_dump_json())
    line = refused(
        env,
        6,
        "directory",
        "add-local",
        "--data-dir",
        node,
        "--entry",
        entry_file,
        "--fingerprint",
        "ABCD-EFGH-JKMN-PQRS",
    )
    assert "does not match" in line
    line = refused(
        env,
        2,
        "directory",
        "add-local",
        "--data-dir",
        node,
        "--entry",
        entry_file,
        "--fingerprint",
        "not-a-fingerprint",
    )
    assert "16 letters and digits" in line
    assert "lado-testshire" not in ok(env, "directory", "list", "--data-dir", node)
    out = ok(
        env,
        "directory",
        "add-local",
        "--data-dir",
        node,
        "--entry",
        entry_file,
        "--fingerprint",
        lado.fingerprint,
    )
    assert "added" in out
    assert re.search(
        r"lado-testshire\s+local\s+lado", ok(env, "directory", "list", "--data-dir", node)
    )
    # A damaged entry file is refused before anything is stored.
    broken = json.loads(entry_file.read_text())
    broken["fingerprint"] = "ABCD-EFGH-JKMN-PQRS"
    entry_file.write_text(json.dumps(broken))
    line = refused(
        env,
        2,
        "directory",
        "add-local",
        "--data-dir",
        node,
        "--entry",
        entry_file,
        "--fingerprint",
        "ABCD-EFGH-JKMN-PQRS",
    )
    assert "not the fingerprint of the keys given" in line
    # The tamper-evident audit log recorded the refusals and the addition (never a secret).
    lines = ok(env, "audit", "show", "--data-dir", node, "--action", "directory.*", "--json")
    events = [json.loads(x) for x in lines.splitlines() if x.strip()]
    seen = [(e["action"], e["outcome"]) for e in events]
    assert ("directory.import", "refused") in seen and ("directory.pin", "ok") in seen
    assert ("directory.add_local", "refused") in seen and ("directory.add_local", "ok") in seen


def test_the_authority_sets_a_town_when_adding_or_later(
    tmp_path: Path, env: dict[str, str]
) -> None:
    auth = tmp_path / "auth"
    ok(env, "directory", "authority-keygen", "--out", auth)
    doc = tmp_path / "directory.json"
    ok(env, "directory", "new", "--authority-name", "Testshire County Council", "--out", doc)
    riverside, hillside = tmp_path / "riverside.json", tmp_path / "hillside.json"
    riverside.write_text(entry(keyset("100002")).model_dump_json())
    hillside.write_text(entry(keyset("100001"), "Hillside Primary").model_dump_json())
    # A bad town is refused in one line, and nothing is written.
    before = doc.read_bytes()
    line = refused(
        env,
        2,
        "directory",
        "add-org",
        "--file",
        doc,
        "--entry",
        riverside,
        "--town",
        "Yate\u202eetaY",
    )
    assert "the town is not valid" in line and "U+202E RIGHT-TO-LEFT OVERRIDE" in line
    assert doc.read_bytes() == before
    out = ok(env, "directory", "add-org", "--file", doc, "--entry", riverside, "--town", "Yate")
    assert "100002 (Riverside Academy) added" in out
    ok(env, "directory", "add-org", "--file", doc, "--entry", hillside)
    # Later: a town for an entry already in the directory (or a corrected one).
    out = ok(env, "directory", "set-town", "--file", doc, "--org", "100001", "--town", " Bristol ")
    assert "100001 (Hillside Primary) is in Bristol." in out
    line = refused(
        env, 2, "directory", "set-town", "--file", doc, "--org", "999999", "--town", "Bath"
    )
    assert "organisation 999999 is not in the directory" in line
    ok(env, "directory", "sign", "--file", doc, "--key", auth / "authority.key")
    shown = ok(env, "directory", "show", "--file", doc, "--authority-key", auth / "authority.pub")
    assert "signature:    valid" in shown
    assert "Hillside Primary, Bristol" in shown and "Riverside Academy, Yate" in shown
    towns = {e["org_id"]: e["town"] for e in json.loads(doc.read_text())["organisations"]}
    assert towns == {"100001": "Bristol", "100002": "Yate"}
