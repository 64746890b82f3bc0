"""``handover directory``: who is who. The authority's tools and the node's.

For a directory authority (files only, no node): ``authority-keygen``, ``new``,
``add-org``, ``set-town``, ``revoke``, ``sign``, ``serve``, ``show``.

For a node (``--data-dir``): ``pin`` the authority's key, ``import`` its signed
directory, ``export-entry`` of one of the node's organisations for the
authority, ``add-local`` an entry by hand after confirming its fingerprint,
``list`` what the node knows. See ``docs/directory.md``.

The two sides are :mod:`.authority` and :mod:`.node_side`, each with its actions'
arguments; :mod:`.files` holds what both share (whole-file writes, times, key files).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from transfer.commands._common import Subparsers, add_data_dir
from transfer.commands.directory.authority import add_authority_actions
from transfer.commands.directory.node_side import add_node_actions


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "directory",
        help="who is who: the signed directory of organisations and their keys",
        description=(
            "Make, sign and serve a directory (as a directory authority), or pin its key, "
            "import it and add local entries (on a node)."
        ),
    )
    dsub = parser.add_subparsers(dest="directory_command", metavar="ACTION", required=True)

    def add(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int], *, node: bool
    ) -> argparse.ArgumentParser:
        p = dsub.add_parser(name, help=help_text, description=help_text)
        if node:
            add_data_dir(p)
        p.set_defaults(handler=handler)
        return p

    add_authority_actions(add)
    add_node_actions(add)
