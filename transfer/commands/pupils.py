"""``handover pupils import-ctf``: load the roll from a Common Transfer File.

The command acts as a named member of the organisation's staff (``--org`` and
``--as USERNAME``) with that person's permissions (an administrator or the DSL
team imports CTFs), audited as them with ``via="cli"``. The whole file is
checked first; any mistake imports nothing and names the line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from transfer.commands._common import Subparsers, add_data_dir, run_as_staff
from transfer.errors import InputError
from transfer.wording import plural

if TYPE_CHECKING:
    from schemas.records import CTFImportResult
    from transfer.node import Node
    from transfer.store.permissions import Actor


def register(sub: Subparsers) -> None:
    p = sub.add_parser("pupils", help="the roll: import a Common Transfer File")
    inner = p.add_subparsers(dest="pupils_command", metavar="ACTION", required=True)
    imp = inner.add_parser(
        "import-ctf",
        help="import a CTF (XML) whole: pupils added or updated by UPN, leavers recorded",
        description="Import a Common Transfer File whole, or nothing: pupils are added or "
        "updated by UPN; a CTF from your school records leavers' leaving dates and "
        "destinations. A CTF addressed to another school needs --force.",
    )
    add_data_dir(imp)
    imp.add_argument("--org", required=True, help="your school's organisation id")
    imp.add_argument(
        "--as", dest="username", required=True, metavar="USERNAME", help="who is acting"
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="the CTF (XML)")
    imp.add_argument(
        "--force",
        action="store_true",
        help="import a CTF addressed to another school (your own leavers' CTF, say)",
    )
    imp.add_argument("--json", action="store_true", help="print JSON")
    imp.set_defaults(handler=_import_ctf)


def _import_ctf(args: argparse.Namespace) -> int:
    from transfer.store.pupils import CTFAddressedElsewhereError

    try:
        data = args.file.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{args.file} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {args.file}: {exc.strerror}") from None

    async def work(node: Node, actor: Actor) -> CTFImportResult:
        return await node.store.import_ctf(actor, data, force=args.force)

    try:
        result = run_as_staff(args, work)
    except CTFAddressedElsewhereError as exc:
        raise CTFAddressedElsewhereError(
            exc.message.replace("confirm it (force)", "confirm it with --force"),
            detail=exc.detail,
        ) from None
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2, sort_keys=True))
        return 0
    what = "leavers recorded" if result.leavers else "joiners"
    print(
        f"CTF from LAESTAB {result.source_laestab} imported ({what}): "
        f"{plural(result.created, 'pupil')} added, {plural(result.updated, 'pupil')} updated"
    )
    return 0
