"""The commands people run by hand start without the server's libraries (issue 16).

``handover age``, ``handover package verify`` and ``handover audit verify`` each run to
the end in a real process, which then lists every module it loaded; what a command does
not need (aiohttp, the store's models, Alembic...) must not be among them, so that
start-up stays short (measured, not asserted here: ``benchmarks/bench_startup.py``).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.package.support import Files, build_files, run_env
from tests.unit.package.support import parties
from transfer.age import X25519Identity, encrypt
from transfer.commands.init import initialise

#: Runs the CLI in this process, then writes the names of every module loaded to argv[1].
_PROBE = """
import json, sys
out, sys.argv = sys.argv[1], ["handover", *sys.argv[2:]]
import transfer.cli
try:
    code = transfer.cli.main(sys.argv[1:])
finally:
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
sys.exit(code)
"""

#: Libraries of the server and the store that none of these commands needs (a package is
#: in ``sys.modules`` as soon as any of its modules is).
SERVER_ONLY = {"aiohttp", "apscheduler", "alembic", "jinja2", "transfer.api", "transfer.web"}


def _loaded(tmp_path: Path, *argv: str | Path, env: dict[str, str] | None = None) -> set[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *map(str, argv)],
        capture_output=True,
        text=True,
        env=env or run_env(),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text()))


def test_age_decrypt_loads_no_asyncio_pydantic_or_database(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(identity.to_string() + "\n")
    (tmp_path / "in.age").write_bytes(encrypt(b"hello", [identity.recipient]))
    loaded = _loaded(tmp_path, "age", "decrypt", "-i", key, "-o", tmp_path / "out", "in.age")
    assert (tmp_path / "out").read_bytes() == b"hello"
    assert "transfer.age" in loaded  # the probe saw the command's own modules
    unwanted = SERVER_ONLY | {"asyncio", "pydantic", "sqlalchemy", "transfer.config"}
    assert unwanted & loaded == set()


def test_package_verify_with_given_keys_loads_no_database_or_server(tmp_path: Path) -> None:
    p = parties()
    files: Files = build_files(p, tmp_path / "given")
    loaded = _loaded(
        tmp_path,
        "package",
        "verify",
        files.package,
        "-i",
        files.identity_file,
        "--org",
        p.recipient.org_id,
        "--fingerprint",
        p.recipient.fingerprint,
        "--sender-key",
        files.sender_pub,
    )
    assert "transfer.package.open" in loaded
    unwanted = SERVER_ONLY | {"asyncio", "sqlalchemy", "transfer.config", "keys.keyfiles"}
    assert unwanted & loaded == set()


async def test_audit_verify_loads_the_log_not_the_store_or_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kek = secrets.token_hex(32)
    monkeypatch.setenv("HANDOVER_KEK", kek)
    data = tmp_path / "node"
    await initialise(
        data,
        name="t",
        schools=[("123456", "8012000", "Hillside")],
        agencies=[],
        admin=None,
        admin_password=None,
    )
    env = run_env({"HANDOVER_KEK": kek})
    loaded = _loaded(tmp_path, "audit", "verify", "--data-dir", data, env=env)
    assert "transfer.audit.log" in loaded and "sqlalchemy" in loaded  # it reads the database
    unwanted = SERVER_ONLY | {"transfer.store.tables", "transfer.node", "multiprocessing"}
    assert unwanted & loaded == set()


@pytest.mark.parametrize(
    "command", [("age", "decrypt"), ("package", "verify"), ("audit", "verify")], ids=" ".join
)
def test_each_command_starts_without_pydantic_sqlalchemy_or_aiohttp(
    tmp_path: Path, command: tuple[str, str]
) -> None:
    """What loads before the first byte of work: the interpreter, the CLI and the command's
    own module (its ``--help``). pydantic, SQLAlchemy and aiohttp come, if at all, only with
    the work that needs them (the manifest's models, the node's database)."""
    loaded = _loaded(tmp_path, *command, "--help")
    assert f"transfer.commands.{command[0]}" in loaded
    unwanted = SERVER_ONLY | {"pydantic", "sqlalchemy", "asyncio", "transfer.config"}
    assert unwanted & loaded == set()
