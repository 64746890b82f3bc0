"""``handover init``: create a data directory (database, sealed keys, config) for organisations."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path

from transfer.commands._common import Subparsers, add_data_dir, data_dir_of
from transfer.config import CONFIG_FILE
from transfer.errors import InputError
from transfer.private_files import tighten, write_private

CONFIG_TEMPLATE = """\
# Handover node configuration. Every value is checked at start-up.
# Environment variables override it: HANDOVER_<SECTION>__<KEY>, e.g. HANDOVER_SERVER__PORT.
# The key-encryption key is never stored here: set HANDOVER_KEK or security.kek_file.

[node]
name = {name!r}
base_url = "https://localhost:8443"

[database]
# empty: the embedded SQLite database in this directory
url = ""

[server]
host = "127.0.0.1"
port = 8443
dev_tls = true
"""

ADMIN_PASSWORD_ENV = "HANDOVER_ADMIN_PASSWORD"  # noqa: S105 (a variable name)


def _school(text: str) -> tuple[str, str, str]:
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            "a school is URN:LAESTAB:NAME, e.g. 123456:8012000:Hillside"
        )
    return parts[0], parts[1], parts[2]


def _agency(text: str) -> tuple[str, str, str]:
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            "an agency is ID:KIND:NAME, KIND one of social_care, lado, police, other_agency"
        )
    return parts[0], parts[1], parts[2]


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "init",
        help="create a data directory (database, sealed keys, config) for organisations",
        description="Create or extend a node's data directory. Needs the key-encryption key in "
        "HANDOVER_KEK (64 hex characters) or security.kek_file. The first administrator's "
        f"password is read from {ADMIN_PASSWORD_ENV} or asked for.",
    )
    add_data_dir(p)
    p.add_argument("--name", default="Handover node", help="a name for this node")
    p.add_argument(
        "--school", action="append", type=_school, default=[], metavar="URN:LAESTAB:NAME"
    )
    p.add_argument("--agency", action="append", type=_agency, default=[], metavar="ID:KIND:NAME")
    p.add_argument(
        "--admin", metavar="USERNAME", help="create this administrator in each new school"
    )
    p.set_defaults(handler=run)


def write_config(data_dir: Path, name: str) -> bool:
    """Create the data directory (0700) and a commented config file if none exists."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    path = data_dir / CONFIG_FILE
    if path.exists():
        return False
    write_private(path, CONFIG_TEMPLATE.format(name=name).encode("utf-8"))
    return True


def _admin_password() -> str:
    env = os.environ.get(ADMIN_PASSWORD_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        raise InputError(
            f"no administrator password: set {ADMIN_PASSWORD_ENV} or run init in a terminal"
        )
    first = getpass.getpass("Password for the administrator (12+ characters): ")
    if first != getpass.getpass("Again: "):
        raise InputError("the two passwords differ; nothing was created")
    return first


async def initialise(
    data_dir: Path,
    *,
    name: str,
    schools: list[tuple[str, str, str]],
    agencies: list[tuple[str, str, str]],
    admin: str | None,
    admin_password: str | None,
) -> list[str]:
    """Create the organisations, their key sets and (optionally) an administrator each."""
    from transfer.node import Node

    created_config = write_config(data_dir, name)
    lines = [f"config: {data_dir / CONFIG_FILE}" + (" (new)" if created_config else "")]
    async with await Node.open(data_dir) as node:
        for urn, laestab, school_name in schools:
            org = await node.store.create_school(name=school_name, urn=urn, laestab=laestab)
            keyset = await node.keys.create(org.id)
            lines.append(f"school {org.id} {org.name}: key fingerprint {keyset.fingerprint}")
            if admin:
                await node.accounts.bootstrap_account(
                    org.id,
                    username=admin,
                    display_name="Administrator",
                    roles=["administrator"],
                    password=admin_password or "",
                )
                lines.append(f"  administrator {admin!r} created (enrol TOTP at first sign-in)")
        for agency_id, kind, agency_name in agencies:
            org = await node.store.create_agency(name=agency_name, agency_id=agency_id, kind=kind)
            keyset = await node.keys.create(org.id)
            lines.append(f"agency {org.id} {org.name}: key fingerprint {keyset.fingerprint}")
        await node.audit_log.checkpoint()
    # Close whatever an earlier version left readable to others (0600/0700 throughout).
    await asyncio.to_thread(tighten, data_dir)
    return lines


def run(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    password = _admin_password() if args.admin and args.school else None
    lines = asyncio.run(
        initialise(
            data_dir,
            name=args.name,
            schools=args.school,
            agencies=args.agency,
            admin=args.admin,
            admin_password=password,
        )
    )
    print("\n".join(lines))
    print(f"Data directory ready: {data_dir}")
    return 0
