"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from transfer.errors import InputError, NotFoundError, PolicyError

if TYPE_CHECKING:
    from schemas.records import StaffRecord
    from transfer.auth.records import Principal
    from transfer.node import Node
    from transfer.store.permissions import Actor

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = Any

T = TypeVar("T")

DATA_DIR_ENV = "HANDOVER_DATA_DIR"


def default_data_dir() -> Path:
    """``$HANDOVER_DATA_DIR``, else ``$XDG_DATA_HOME/handover``, else ``~/.local/share/...``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "handover"


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-dir`` to a command that works on a node's data."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"the node's data directory (default: ${DATA_DIR_ENV}, then ~/.local/share/handover)",
    )


def data_dir_of(args: argparse.Namespace) -> Path:
    given: Path | None = getattr(args, "data_dir", None)
    return (given or default_data_dir()).expanduser().resolve()


def add_acting(parser: argparse.ArgumentParser, *, dest: str = "username") -> None:
    """Add ``--as USERNAME`` and ``--sign-in`` to a command that acts for a member of staff.

    ``--as`` alone: the operator acts for that person, with their permissions, and
    is recorded as the operator acting for them (audit actor ``operator``; never as
    the person). With ``--sign-in`` the command asks for the person's password and
    authenticator code in the terminal (never on the command line) and acts as
    them, recorded as them.
    """
    parser.add_argument(
        "--as",
        dest=dest,
        required=True,
        metavar="USERNAME",
        help="act for this member of staff, with their permissions; recorded in the audit log "
        "as the server operator acting for them (add --sign-in to act as them)",
    )
    parser.add_argument(
        "--sign-in",
        dest="sign_in",
        action="store_true",
        help="sign in as USERNAME: asks for their password and authenticator code in the "
        "terminal, and is recorded as them",
    )


def ask_secret(prompt: str) -> str:
    """A secret typed at the terminal, not echoed (never taken from the command line)."""
    if not sys.stdin.isatty():
        raise InputError(
            "--sign-in asks for the password and code in a terminal; run the command in one, "
            "or leave out --sign-in to act as the operator for that person"
        )
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise InputError("no answer was typed; nothing was done") from None


async def _enrolled(node: Node, staff_id: str) -> bool:
    state = await node.accounts.overview.credential_state(staff_id)
    return state.two_factor == "set up"


async def _staff_record(node: Node, org: str, username: str) -> StaffRecord:
    staff = await node.store.find_staff(org, username)
    if staff is None:
        raise NotFoundError(f"{username!r} is not a staff member of {org}")
    if not staff.active:
        raise PolicyError(f"the account {username!r} is deactivated")
    return staff


async def staff_actor(node: Node, org: str, username: str) -> Actor:
    """The operator acting for ``username`` of ``org``: their permissions, audited as the
    operator acting for them (``Actor.operator``)."""
    staff = await _staff_record(node, org, username)
    return replace(await node.store.actor_for(staff.id), operator=True)


async def sign_in_at_terminal(node: Node, org: str, username: str) -> Principal:
    """Sign ``username`` in with the password and code typed at the terminal."""
    staff = await _staff_record(node, org, username)
    password = ask_secret(f"Password for {username}: ")
    code: str | None = None
    recovery: str | None = None
    if await _enrolled(node, staff.id):
        typed = "".join(
            ask_secret("Code from the authenticator app (or a recovery code): ").split()
        )
        if typed.isdigit():
            code = typed
        else:
            recovery = typed
    result = await node.accounts.sign_in(org, username, password, totp=code, recovery_code=recovery)
    if result.state != "signed_in":
        principal = await node.accounts.authenticate(result.token, allow_enrolment=True)
        await node.accounts.sign_out(principal)
        raise PolicyError(
            f"{username!r} must set up two-factor sign-in first: "
            f"handover account enrol-totp --org {org} --user {username}"
        )
    return await node.accounts.authenticate(result.token)


@contextlib.asynccontextmanager
async def acting(
    node: Node, args: argparse.Namespace, *, user: str = "username"
) -> AsyncIterator[Actor]:
    """Who a command acts as: the person signed in (``--sign-in``; signed out at the end),
    or the operator acting for them (``--as`` alone)."""
    username = getattr(args, user)
    if not getattr(args, "sign_in", False):
        yield await staff_actor(node, args.org, username)
        return
    principal = await sign_in_at_terminal(node, args.org, username)
    try:
        yield principal.actor
    finally:
        await node.accounts.sign_out(principal)


def run_as_staff(
    args: argparse.Namespace, work: Callable[[Node, Actor], Awaitable[T]], *, user: str = "username"
) -> T:
    """Open the node in ``--data-dir``, act for ``--org`` and ``args.<user>``, run ``work``."""
    import asyncio  # here, not at the top: `handover age` and `package` run without it

    from transfer.node import Node
    from transfer.transport.http import http_transport

    async def go() -> T:
        async with (
            await Node.open(data_dir_of(args), transport=http_transport) as node,
            acting(node, args, user=user) as who,
        ):
            return await work(node, who)

    return asyncio.run(go())
