"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from transfer.errors import NotFoundError, PolicyError

if TYPE_CHECKING:
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


async def staff_actor(node: Node, org: str, username: str) -> Actor:
    """The active staff member of ``org`` a command acts as (audited as them, ``via="cli"``)."""
    staff = await node.store.find_staff(org, username)
    if staff is None:
        raise NotFoundError(f"{username!r} is not a staff member of {org}")
    if not staff.active:
        raise PolicyError(f"the account {username!r} is deactivated")
    return await node.store.actor_for(staff.id)


def run_as_staff(
    args: argparse.Namespace, work: Callable[[Node, Actor], Awaitable[T]], *, user: str = "username"
) -> T:
    """Open the node in ``--data-dir``, act as ``--org`` and ``args.<user>``, run ``work``."""
    from transfer.node import Node

    async def go() -> T:
        async with await Node.open(data_dir_of(args)) as node:
            return await work(node, await staff_actor(node, args.org, getattr(args, user)))

    return asyncio.run(go())
