"""``handover init``: create a data directory (database, sealed keys, config) for organisations."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from transfer.commands._common import Subparsers, add_data_dir, data_dir_of
from transfer.config import CONFIG_FILE
from transfer.errors import ConflictError, InputError
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


@dataclass(frozen=True)
class _Plan:
    """Every organisation and the administrator ``init`` is to create, each checked."""

    schools: list[tuple[str, str, str]]
    agencies: list[tuple[str, str, str]]
    admin: str | None


def _plan(
    schools: list[tuple[str, str, str]],
    agencies: list[tuple[str, str, str]],
    admin: str | None,
    admin_password: str | None,
) -> _Plan:
    """Check every input by the rules the store and accounts apply; create nothing."""
    from transfer.auth.passwords import check_password_policy
    from transfer.store.organisations import new_agency, new_school, staff_username

    plan = _Plan([], [], None)
    seen: set[str] = set()
    for urn, laestab, school_name in schools:
        name, urn, laestab = new_school(name=school_name, urn=urn, laestab=laestab)
        if urn in seen:
            raise InputError(f"organisation {urn!r} is given twice; nothing was created")
        seen.add(urn)
        plan.schools.append((urn, laestab, name))
    for agency_id, kind, agency_name in agencies:
        name, agency_id, kind = new_agency(agency_id=agency_id, name=agency_name, kind=kind)
        if agency_id in seen:
            raise InputError(f"organisation {agency_id!r} is given twice; nothing was created")
        seen.add(agency_id)
        plan.agencies.append((agency_id, kind, name))
    if admin and plan.schools:
        username = staff_username(admin)
        check_password_policy(admin_password or "", username)
        return _Plan(plan.schools, plan.agencies, username)
    return plan


@dataclass(frozen=True)
class _Footprint:
    """What was there before ``init`` ran, so that a failed init takes away all it made.

    Only for a node not set up before: ``init`` adding organisations to a working
    node checks everything first and never deletes anything.
    """

    data_dir: Path
    url: str
    #: The node was set up before (extending it): nothing is removed on failure.
    set_up: bool
    dir_existed: bool
    entries: frozenset[str]
    #: A SQLite file outside the data directory that this init creates.
    new_outside_file: Path | None
    #: A PostgreSQL database that held no tables before.
    blank_postgres: bool

    @classmethod
    async def take(cls, data_dir: Path, url: str) -> _Footprint:
        from transfer.identity import was_set_up
        from transfer.store.db import sqlite_path
        from transfer.store.lookups import table_names

        existed, entries, outside = _files_before(data_dir, sqlite_path(url))
        set_up = existed and was_set_up(data_dir)
        blank_pg = False
        if sqlite_path(url) is None and not set_up:
            blank_pg = not await table_names(url)
        return cls(data_dir, url, set_up, existed, entries, outside, blank_pg)

    async def undo(self) -> None:
        """Remove what this init made: new files in the data directory, a new database."""
        if self.set_up:
            return
        self._remove_files()
        if self.blank_postgres:
            from transfer.store.lookups import drop_all_tables

            await drop_all_tables(self.url)

    def _remove_files(self) -> None:
        if not self.dir_existed:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        elif self.data_dir.exists():
            for name in set(os.listdir(self.data_dir)) - self.entries:
                path = self.data_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if self.new_outside_file is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.new_outside_file}{suffix}").unlink(missing_ok=True)


def _files_before(data_dir: Path, db_file: Path | None) -> tuple[bool, frozenset[str], Path | None]:
    """Whether the data directory exists, what it holds, and a new SQLite file outside it."""
    existed = data_dir.exists()
    entries = frozenset(os.listdir(data_dir)) if existed else frozenset()
    outside = None
    if db_file is not None and not db_file.resolve().is_relative_to(data_dir.resolve()):
        outside = None if db_file.exists() else db_file
    return existed, entries, outside


async def initialise(
    data_dir: Path,
    *,
    name: str,
    schools: list[tuple[str, str, str]],
    agencies: list[tuple[str, str, str]],
    admin: str | None,
    admin_password: str | None,
) -> list[str]:
    """Create the organisations, their key sets and (optionally) an administrator each.

    Every input is checked first (names, identifiers, the administrator's username and
    password, organisations already on the node, the configuration and the KEK), so a
    refusal creates nothing. Should creating fail anyway (a full disk, a lost database
    connection), a node that was not set up before is left as it was: the data
    directory's new files, and a database this init started, are removed.
    """
    from transfer.config import load_config, load_kek

    plan = _plan(schools, agencies, admin, admin_password)
    config = load_config(data_dir)
    load_kek(config)
    footprint = await _Footprint.take(data_dir, config.database_url(data_dir))
    try:
        return await _create(data_dir, name, plan, admin_password or "")
    except BaseException:
        await footprint.undo()
        raise


async def _create(data_dir: Path, name: str, plan: _Plan, admin_password: str) -> list[str]:
    from transfer.node import Node
    from transfer.transport.http import http_transport

    created_config = write_config(data_dir, name)
    lines = [f"config: {data_dir / CONFIG_FILE}" + (" (new)" if created_config else "")]
    async with await Node.open(data_dir, transport=http_transport) as node:
        held = {o.id for o in await node.store.list_organisations()}
        clash = [
            o for o in [s[0] for s in plan.schools] + [a[0] for a in plan.agencies] if o in held
        ]
        if clash:
            raise ConflictError(
                f"organisation {clash[0]!r} already exists on this node; nothing was created"
            )
        for urn, laestab, school_name in plan.schools:
            org = await node.store.create_school(name=school_name, urn=urn, laestab=laestab)
            keyset = await node.keys.create(org.id)
            lines.append(f"school {org.id} {org.name}: key fingerprint {keyset.fingerprint}")
            if plan.admin:
                await node.accounts.bootstrap_account(
                    org.id,
                    username=plan.admin,
                    display_name="Administrator",
                    roles=["administrator"],
                    password=admin_password,
                )
                lines.append(
                    f"  administrator {plan.admin!r} created (enrol TOTP at first sign-in)"
                )
        for agency_id, kind, agency_name in plan.agencies:
            org = await node.store.create_agency(name=agency_name, agency_id=agency_id, kind=kind)
            keyset = await node.keys.create(org.id)
            lines.append(f"agency {org.id} {org.name}: key fingerprint {keyset.fingerprint}")
        await node.audit_log.checkpoint()
        await node.establish_identity()
    # Close whatever an earlier version left readable to others (0600/0700 throughout).
    await asyncio.to_thread(tighten, data_dir)
    return lines


def run(args: argparse.Namespace) -> int:
    from transfer.config import load_config, load_kek

    data_dir = data_dir_of(args)
    # What can be refused without the password is refused before it is asked for.
    _plan(args.school, args.agency, None, None)
    load_kek(load_config(data_dir))
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
