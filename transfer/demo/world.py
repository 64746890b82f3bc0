"""A small world of real nodes on loopback: data directories, keys, TLS, a signed directory.

Used by ``handover demo`` and by the end-to-end tests. Everything is done the
way an operator would: ``handover init`` for each node, a directory authority
that collects each organisation's entry (``directory export-entry``), signs
the directory, and each node pins the authority's key (after comparing its
fingerprint) and imports the signed directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.directory import OrgKind
from transfer.demo.procs import ServeProcess, free_port
from transfer.errors import ConfigError


@dataclass(frozen=True)
class NodeSpec:
    """One node to build: its short name and the organisations it hosts."""

    name: str
    title: str
    schools: Sequence[tuple[str, str, str]] = ()  # (URN, LAESTAB, name)
    agencies: Sequence[tuple[str, str, str]] = ()  # (id, kind, name)
    emails: dict[str, str] = field(default_factory=dict)  # org id -> registered address
    towns: dict[str, str] = field(default_factory=dict)  # org id -> town, in the directory
    extra_config: str = ""


@dataclass(frozen=True)
class OffNodeAgency:
    """An agency with no node: listed in the directory with keys the demo made for it."""

    org_id: str
    kind: OrgKind
    name: str
    email: str


@dataclass
class WorldNode:
    spec: NodeSpec
    data_dir: Path
    base_url: str
    port: int
    kek_file: Path
    admin_password: str
    serve: ServeProcess

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class World:
    root: Path
    trust_file: Path
    authority_dir: Path
    directory_file: Path
    nodes: dict[str, WorldNode]
    agency_identities: dict[str, Path]

    def start(self, *names: str) -> None:
        for name in names or tuple(self.nodes):
            self.nodes[name].serve.start()
        for name in names or tuple(self.nodes):
            self.nodes[name].serve.wait_ready()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.serve.stop()


def run_cli(argv: Sequence[str]) -> str:
    """Run one ``handover`` command in this process; its output, or ConfigError naming it."""
    from transfer.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(argv))
    if code != 0:
        raise ConfigError(f"'handover {' '.join(argv[:2])}' failed: {err.getvalue().strip()}")
    return out.getvalue()


def _node_env() -> dict[str, str]:
    """Each node reads its own config file: no HANDOVER_* variable from our environment."""
    return {k: "" for k in os.environ if k.startswith("HANDOVER_")}


def build_world(
    root: Path,
    specs: Sequence[NodeSpec],
    *,
    agencies: Sequence[OffNodeAgency] = (),
    sweep_seconds: float = 1.0,
    retry_base_seconds: float = 1.0,
) -> World:
    """Create every node's data directory, keys, certificate and directory under ``root``."""
    from keys.agekeys import encode_identity
    from keys.keyset import KeySet
    from transfer.commands.init import initialise, write_config
    from transfer.directory.document import entry_from_keyset
    from transfer.private_files import write_private
    from transfer.tls import make_self_signed

    root.mkdir(parents=True, exist_ok=True)
    secrets_dir = root / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    trust_file = root / "trust.pem"
    nodes: dict[str, WorldNode] = {}
    trust: list[str] = []
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("HANDOVER_")}
    try:
        for spec in specs:
            data_dir = root / "nodes" / spec.name
            port = free_port()
            base_url = f"https://127.0.0.1:{port}"
            kek_file = secrets_dir / f"{spec.name}.kek"
            fd = os.open(kek_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            write_config(data_dir, spec.title)
            write_private(
                data_dir / "handover.toml",
                f"# {spec.title}: a demo node on loopback.\n"
                f'[node]\nname = "{spec.title}"\nbase_url = "{base_url}"\n\n'
                f'[security]\nkek_file = "{kek_file}"\n\n'
                f'[server]\nhost = "127.0.0.1"\nport = {port}\ndev_tls = true\n\n'
                f'[transfer]\nca_file = "{trust_file}"\nsweep_seconds = {sweep_seconds}\n'
                f"retry_base_seconds = {retry_base_seconds}\nretry_max_seconds = 10.0\n"
                f"{spec.extra_config}".encode(),
            )
            cert, key = data_dir / "tls" / "dev-cert.pem", data_dir / "tls" / "dev-key.pem"
            # A distinct subject per node: OpenSSL finds a trust anchor by its subject name.
            make_self_signed(cert, key, hostname=f"{spec.name}.handover-demo.test")
            trust.append(cert.read_text(encoding="ascii"))
            admin_password = secrets.token_urlsafe(15)
            asyncio.run(
                initialise(
                    data_dir,
                    name=spec.title,
                    schools=list(spec.schools),
                    agencies=list(spec.agencies),
                    admin="admin",
                    admin_password=admin_password,
                )
            )
            serve = ServeProcess(
                spec.name,
                data_dir,
                base_url,
                root / "logs" / f"{spec.name}.log",
                ca_file=trust_file,
                env=_node_env(),
            )
            nodes[spec.name] = WorldNode(
                spec, data_dir, base_url, port, kek_file, admin_password, serve
            )
        trust_file.write_text("".join(trust), encoding="ascii")

        # The directory authority: its key, then every organisation's entry, then signed.
        authority_dir = root / "authority"
        directory_file = authority_dir / "directory.json"
        run_cli(["directory", "authority-keygen", "--out", str(authority_dir)])
        run_cli(
            [
                "directory",
                "new",
                "--authority-name",
                "Demo Local Authority",
                "--out",
                str(directory_file),
            ]
        )
        entries_dir = authority_dir / "entries"
        entries_dir.mkdir(exist_ok=True)
        for node in nodes.values():
            org_ids = [s[0] for s in node.spec.schools] + [a[0] for a in node.spec.agencies]
            for org_id in org_ids:
                entry = entries_dir / f"{org_id}.json"
                argv = [
                    "directory",
                    "export-entry",
                    "--data-dir",
                    str(node.data_dir),
                    "--org",
                    org_id,
                    "--out",
                    str(entry),
                ]
                if org_id in node.spec.emails:
                    argv += ["--email", node.spec.emails[org_id]]
                run_cli(argv)
                town = node.spec.towns.get(org_id)
                run_cli(
                    [
                        "directory",
                        "add-org",
                        "--file",
                        str(directory_file),
                        "--entry",
                        str(entry),
                        *(["--town", town] if town else []),
                    ]
                )
        identities: dict[str, Path] = {}
        for agency in agencies:
            ks = KeySet.generate(agency.org_id)
            identity = secrets_dir / f"{agency.org_id}.key"
            fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(encode_identity(ks.decryption_keys()[0].secret) + "\n")
            identities[agency.org_id] = identity
            entry = entries_dir / f"{agency.org_id}.json"
            record = entry_from_keyset(
                ks,
                name=agency.name,
                kind=agency.kind,
                endpoint=None,
                email=agency.email,
            )
            entry.write_text(record.model_dump_json(), encoding="utf-8")
            run_cli(["directory", "add-org", "--file", str(directory_file), "--entry", str(entry)])
        run_cli(
            [
                "directory",
                "sign",
                "--file",
                str(directory_file),
                "--key",
                str(authority_dir / "authority.key"),
            ]
        )
        fingerprint = _authority_fingerprint(authority_dir / "authority.pub")
        for node in nodes.values():
            run_cli(
                [
                    "directory",
                    "pin",
                    "--data-dir",
                    str(node.data_dir),
                    "--authority-key",
                    str(authority_dir / "authority.pub"),
                    "--fingerprint",
                    fingerprint,
                ]
            )
            run_cli(
                [
                    "directory",
                    "import",
                    "--data-dir",
                    str(node.data_dir),
                    "--file",
                    str(directory_file),
                ]
            )
    finally:
        for k in [k for k in os.environ if k.startswith("HANDOVER_")]:
            del os.environ[k]
        os.environ.update(saved)
    return World(root, trust_file, authority_dir, directory_file, nodes, identities)


def _authority_fingerprint(pub: Path) -> str:
    from keys import minisign
    from transfer.directory.document import authority_fingerprint

    return authority_fingerprint(minisign.PublicKey.from_text(pub.read_bytes()))
