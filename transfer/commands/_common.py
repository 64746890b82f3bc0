"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = Any

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
