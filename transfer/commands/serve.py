"""``handover serve``: the node's HTTP API, with the scheduler's sweeps."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from transfer.commands._common import Subparsers, add_data_dir, data_dir_of

log = logging.getLogger("handover.serve")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run the node (HTTP API and scheduled sweeps)")
    add_data_dir(p)
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.set_defaults(handler=run)


async def _serve(args: argparse.Namespace) -> int:
    # The node and the server are imported here: the rest of the CLI starts without them.
    from transfer.node import Node
    from transfer.serving import serving
    from transfer.transport.http import http_transport

    async with (
        await Node.open(data_dir_of(args), full_check=True, transport=http_transport) as node,
        serving(node, args.host, args.port or None),
    ):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))
