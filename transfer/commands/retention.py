"""``handover retention run``: erase pupils whose retention date has passed (crypto-shredding)."""

from __future__ import annotations

import argparse
import asyncio

from transfer.commands._common import Subparsers, add_data_dir, data_dir_of
from transfer.wording import plural


def register(sub: Subparsers) -> None:
    p = sub.add_parser("retention", help="retention and erasure")
    inner = p.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    run_p = inner.add_parser(
        "run",
        help="destroy the data keys of pupils past their retention date, leaving tombstones",
    )
    add_data_dir(run_p)
    run_p.set_defaults(handler=run)


async def _run(args: argparse.Namespace) -> int:
    from transfer.node import Node
    from transfer.transport.http import http_transport

    async with await Node.open(data_dir_of(args), transport=http_transport) as node:
        report = await node.store.run_retention()
    print(
        f"retention run at {report.ran_at.isoformat()}: "
        f"{plural(len(report.erased_pupils), 'pupil')} erased, "
        f"{plural(len(report.tombstones), 'tombstone')} left"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
