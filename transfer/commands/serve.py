"""``handover serve``: the node's HTTP API, with the scheduler's sweeps."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from datetime import UTC, datetime

from transfer.commands._common import Subparsers, add_data_dir, data_dir_of
from transfer.errors import ConfigError

log = logging.getLogger("handover.serve")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("serve", help="run the node (HTTP API and scheduled sweeps)")
    add_data_dir(p)
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.set_defaults(handler=run)


async def _sweep_retention(node: object) -> None:
    from transfer.node import Node

    assert isinstance(node, Node)
    report = await node.store.run_retention()
    if report.erased_pupils:
        log.info("retention sweep erased %d pupil(s)", len(report.erased_pupils))


async def _checkpoint(node: object) -> None:
    from transfer.node import Node

    assert isinstance(node, Node)
    await node.audit_log.checkpoint()


async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from transfer.api.app import create_app
    from transfer.node import Node
    from transfer.tls import make_self_signed, server_context

    data_dir = data_dir_of(args)
    async with await Node.open(data_dir) as node:
        cfg = node.config.server
        ssl_ctx = None
        if not cfg.behind_proxy:
            if cfg.tls_cert and cfg.tls_key:
                ssl_ctx = server_context(cfg.tls_cert, cfg.tls_key)
            elif cfg.dev_tls:
                cert, key = data_dir / "tls" / "dev-cert.pem", data_dir / "tls" / "dev-key.pem"
                if not cert.exists():
                    make_self_signed(cert, key)
                ssl_ctx = server_context(cert, key)
            else:
                raise ConfigError(
                    "no TLS: set server.tls_cert and server.tls_key, or server.dev_tls = true "
                    "for development, or server.behind_proxy = true behind a TLS proxy"
                )
        from transfer.exchange.peer_server import services_for
        from transfer.exchange.receipt_push import ReceiptPusher

        peer_client = node.peer
        from transfer.exchange.deadlines_sweep import DeadlineSweep
        from transfer.exchange.retention_sweep import AfterAcceptanceRetention
        from transfer.exchange.sweeps import schedule_outbox_sweeps
        from transfer.referrals.service import referral_deadline_sweep

        requests_outbox = node.outbox
        transfer_requests = node.transfer_requests(outbox=requests_outbox, client=peer_client)
        deadlines = DeadlineSweep(node.store, node.alerts, requests_outbox, node.config.transfer)
        after_accepted = AfterAcceptanceRetention(node.store, requests_outbox, node.config.transfer)
        app = create_app(
            store=node.store, accounts=node.accounts, audit=node.audit, config=node.config,
            inbox=node.inbox,
            peer=services_for(node, requests=transfer_requests, receipts=node.outbox),
            alerts=node.alerts, transfer_requests=transfer_requests, outbox=node.outbox,
            portal=node.portal, referrals=node.referrals,
        )  # fmt: skip
        receipt_pusher = ReceiptPusher(
            store=node.store, client=peer_client, config=node.config, audit_log=node.audit_log
        )
        scheduler = AsyncIOScheduler(timezone="UTC")
        scheduler.add_job(
            _sweep_retention, "interval", hours=node.config.retention.sweep_hours, args=[node],
            max_instances=1, coalesce=True,
        )  # fmt: skip
        scheduler.add_job(_checkpoint, "interval", minutes=10, args=[node], max_instances=1)
        # Deliver due outbox items and pull receipts (every transfer.sweep_seconds).
        schedule_outbox_sweeps(scheduler, node.outbox, node.config)
        scheduler.add_job(
            receipt_pusher.push_due, "interval", seconds=node.config.transfer.sweep_seconds,
            max_instances=1, coalesce=True,
        )  # fmt: skip
        # Transfer requests and decisions owed to other nodes, KCSIE deadline alerts (hourly,
        # from start-up; idempotent per day) and after-acceptance retention (hourly).
        scheduler.add_job(
            transfer_requests.send_due, "interval", seconds=node.config.transfer.sweep_seconds,
            max_instances=1, coalesce=True,
        )  # fmt: skip
        scheduler.add_job(
            deadlines.run, "interval", hours=1, next_run_time=datetime.now(UTC),
            max_instances=1, coalesce=True,
        )  # fmt: skip
        scheduler.add_job(
            after_accepted.run, "interval", hours=1, next_run_time=datetime.now(UTC),
            max_instances=1, coalesce=True,
        )  # fmt: skip
        # Expired pickup links, and referrals past their deadline (LADO: one working day).
        scheduler.add_job(
            node.portal.sweep_expired, "interval", hours=1, next_run_time=datetime.now(UTC),
            max_instances=1, coalesce=True,
        )  # fmt: skip
        scheduler.add_job(
            referral_deadline_sweep, "interval", hours=1, next_run_time=datetime.now(UTC),
            args=[node.referrals, node.alerts], max_instances=1, coalesce=True,
        )  # fmt: skip
        # Start-up objects live as long as the process: freezing them keeps full garbage
        # collections short (they set a chronology read's p99; see docs/store.md).
        gc.collect()
        gc.freeze()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = args.host or cfg.host, args.port or cfg.port
        site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        scheduler.start()
        scheme = "https" if ssl_ctx else "http"
        log.info("serving %s on %s://%s:%d/api/v1/", node.config.node.name, scheme, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        scheduler.shutdown(wait=False)
        await runner.cleanup()
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))
