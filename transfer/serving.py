"""A node served: its HTTP API (TLS), the scheduler's sweeps, started and stopped together.

:func:`serving` is what ``handover serve`` runs once :meth:`transfer.node.Node.open`
has assembled the node; the command only adds the signal handling around it. The
benchmarks serve a node through it too, so that what they measure is the code a
deployment runs (the same application, scheduler jobs and audit log instance).

This module imports aiohttp, APScheduler and every part of the API: the CLI imports
it only when ``serve`` runs.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from transfer.api.app import create_app
from transfer.api.listener import GuardedSite, ListenerLimits
from transfer.api.peer import services_for
from transfer.audit.trail import AuditTrail
from transfer.directory.administration import KeyAdministration
from transfer.errors import ConfigError, HandoverError, OutOfSpaceError
from transfer.exchange.receipt_push import ReceiptPusher
from transfer.exchange.retention_sweep import AfterAcceptanceRetention
from transfer.exchange.sweeps import schedule_outbox_sweeps
from transfer.metrics import CONTENT_TYPE, SWEEP_RUNS, SWEEP_SKIPPED_BUSY, SWEEPS_RUNNING, Metrics
from transfer.node import Node
from transfer.private_files import tighten
from transfer.referrals.service import referral_deadline_sweep
from transfer.space import SpaceWatch
from transfer.tls import make_self_signed, server_context
from transfer.web import WebServices
from transfer.wording import plural

log = logging.getLogger("handover.serve")

#: How often the alert sweeps run (KCSIE deadlines, overdue actions), on top of the alerts
#: raised as the data changes: a due date passing at midnight is seen within this.
ALERT_SWEEP_MINUTES: Final = 10
#: How long a stopping node lets running sweeps finish before it stops them.
STOP_GRACE_SECONDS: Final = 20.0
#: Audit entries promised this long ago and still not written are written by the sweep
#: (a process sharing the database died before writing them; see AuditLog.replay_intents).
INTENT_AGE: Final = timedelta(minutes=1)


@dataclass(frozen=True)
class Running:
    """A node that is being served: where it listens, and its parts for inspection."""

    node: Node
    app: web.Application
    scheduler: AsyncIOScheduler
    scheme: str
    host: str
    #: The port actually bound (the one asked for, or the one the system chose for 0).
    port: int
    #: The listening site (its connections per address, for diagnostics).
    site: GuardedSite
    #: This process's counters (served on ``server.metrics_port`` when it is set).
    metrics: Metrics

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


async def _sweep_retention(node: Node) -> None:
    report = await node.store.run_retention()
    if report.erased_pupils:
        log.info("retention sweep erased %s", plural(len(report.erased_pupils), "pupil"))


async def _report_space(node: Node) -> None:
    """Alert the DSL teams that the node ran out of space (once the database takes it)."""
    if node.store.space.pending_since is not None:
        orgs = [org.id for org in await node.store.list_organisations()]
        await node.store.space.report(node.alerts, orgs)


async def _checkpoint(node: Node) -> None:
    await node.audit_log.checkpoint()


async def _replay_intents(node: Node) -> None:
    await node.audit_log.replay_intents(older_than=INTENT_AGE)


async def recover(node: Node) -> None:
    """What a crash may have left, put right before the node serves (``docs/reliability.md``):
    audit entries promised by committed changes, and drafts whose build was cut short."""
    while await node.audit_log.replay_intents() > 0:
        pass
    await node.outbox.discard_stale_drafts()


class _JobTasks:
    """The scheduler's jobs as tracked tasks, so that a stop can wait for them.

    A sweep still running when it is due again is not started a second time: the due run
    returns at once and counts itself in ``handover_sweep_skipped_busy_total`` (quietly: in
    a burst a delivery sweep outlasts its interval all the time, and the running one picks
    up the work anyway). APScheduler's own limit (``max_instances``), which logged a WARNING
    for every such run, is raised above one so that it never applies: this check (no await
    between reading and marking a sweep busy, so one event loop cannot start it twice) is
    the limit.
    """

    #: APScheduler's ``max_instances`` for every job: the running sweep and the due run that
    #: finds it busy and returns at once, with room to spare.
    MAX_INSTANCES: Final = 3

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.running: set[asyncio.Task[Any]] = set()
        self.busy: set[str] = set()
        self.metrics = metrics if metrics is not None else Metrics()

    def wrap(self, func: Callable[..., Awaitable[Any]], name: str) -> Callable[..., Awaitable[Any]]:
        labels = {"sweep": name}
        self.metrics.set(SWEEPS_RUNNING, 0, labels)

        @functools.wraps(func)
        async def tracked(*args: Any, **kwargs: Any) -> Any:
            if name in self.busy:
                self.metrics.inc(SWEEP_SKIPPED_BUSY, labels)
                log.debug("%s still running when due again: not started twice", name)
                return None
            self.busy.add(name)
            self.metrics.inc(SWEEP_RUNS, labels)
            self.metrics.set(SWEEPS_RUNNING, 1, labels)
            task = asyncio.current_task()
            if task is not None:
                self.running.add(task)
            try:
                return await func(*args, **kwargs)
            finally:
                self.busy.discard(name)
                self.metrics.set(SWEEPS_RUNNING, 0, labels)
                if task is not None:
                    self.running.discard(task)

        return tracked

    def track(self, scheduler: AsyncIOScheduler) -> None:
        for job in scheduler.get_jobs():
            job.modify(func=self.wrap(job.func, job.name), max_instances=self.MAX_INSTANCES)

    async def stop(self, scheduler: AsyncIOScheduler, grace: float) -> None:
        """No new runs; let the running ones finish (``grace`` seconds at most); then stop."""
        scheduler.pause()
        running = [t for t in self.running if not t.done()]
        late: set[asyncio.Task[Any]] = set()
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
        scheduler.shutdown(wait=False)  # cancels what is still running
        await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the loop's next turn
        if late:
            await asyncio.gather(*late, return_exceptions=True)
            log.warning(
                "stopped %s still running after %d s (each is idempotent: the next start "
                "takes it up again)",
                plural(len(late), "sweep"),
                grace,
            )


def tls_context(node: Node) -> ssl.SSLContext | None:
    """The server's TLS context from ``[server]`` (None behind a TLS proxy)."""
    cfg = node.config.server
    if cfg.behind_proxy:
        return None
    if cfg.tls_cert and cfg.tls_key:
        return server_context(cfg.tls_cert, cfg.tls_key)
    if cfg.dev_tls:
        tls_dir = node.data_dir / "tls"
        cert, key = tls_dir / "dev-cert.pem", tls_dir / "dev-key.pem"
        if not cert.exists():
            make_self_signed(cert, key)
        return server_context(cert, key)
    raise ConfigError(
        "no TLS: set server.tls_cert and server.tls_key, or server.dev_tls = true "
        "for development, or server.behind_proxy = true behind a TLS proxy"
    )


def _app_and_scheduler(node: Node) -> tuple[web.Application, AsyncIOScheduler]:
    """The API application and the scheduler with every sweep a node runs (not started)."""
    peer_client = node.peer
    requests_outbox = node.outbox
    transfer_requests = node.transfer_requests(outbox=requests_outbox, client=peer_client)
    deadlines = node.deadlines
    after_accepted = AfterAcceptanceRetention(node.store, requests_outbox, node.config.transfer)
    app = create_app(
        store=node.store,
        accounts=node.accounts,
        audit=node.audit,
        config=node.config,
        inbox=node.inbox,
        peer=services_for(node, requests=transfer_requests, receipts=node.outbox),
        alerts=node.alerts,
        transfer_requests=transfer_requests,
        outbox=node.outbox,
        portal=node.portal,
        referrals=node.referrals,
        web_pages=WebServices(
            store=node.store,
            accounts=node.accounts,
            config=node.config,
            audit=node.audit,
            web_key=node.web_key,
            alerts=node.alerts,
            inbox=node.inbox,
            trail=AuditTrail(node.audit_log, node.audit),
            key_admin=KeyAdministration(node.store, node.keys, node.directory),
            transfer_requests=transfer_requests,
            directory=node.directory,
            outbox=node.outbox,
        ),
    )
    receipt_pusher = ReceiptPusher(
        store=node.store, client=peer_client, config=node.config, audit_log=node.audit_log
    )
    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(
        _sweep_retention,
        "interval",
        hours=node.config.retention.sweep_hours,
        args=[node],
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(_checkpoint, "interval", minutes=10, args=[node], max_instances=1)
    # A full disk is logged where it is met; the DSL teams are told once it can be recorded.
    scheduler.add_job(
        _report_space,
        "interval",
        seconds=node.config.transfer.sweep_seconds,
        args=[node],
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        _replay_intents,
        "interval",
        seconds=node.config.transfer.sweep_seconds,
        args=[node],
        max_instances=1,
        coalesce=True,
    )
    # Deliver due outbox items and pull receipts (every transfer.sweep_seconds).
    schedule_outbox_sweeps(scheduler, node.outbox, node.config)
    scheduler.add_job(
        receipt_pusher.push_due,
        "interval",
        seconds=node.config.transfer.sweep_seconds,
        max_instances=1,
        coalesce=True,
    )
    # Transfer requests and decisions owed to other nodes, KCSIE deadline alerts (hourly,
    # from start-up; idempotent per day) and after-acceptance retention (hourly).
    scheduler.add_job(
        transfer_requests.send_due,
        "interval",
        seconds=node.config.transfer.sweep_seconds,
        max_instances=1,
        coalesce=True,
    )
    # Alerts are raised as the data changes; these sweeps catch what time alone changes (a
    # due date passing at midnight) within ALERT_SWEEP_MINUTES.
    scheduler.add_job(
        deadlines.run,
        "interval",
        minutes=ALERT_SWEEP_MINUTES,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        node.store_alerts.actions.run,
        "interval",
        minutes=ALERT_SWEEP_MINUTES,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        after_accepted.run,
        "interval",
        hours=1,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
    )
    # Expired pickup links, and referrals past their deadline (LADO: one working day).
    scheduler.add_job(
        node.portal.sweep_expired,
        "interval",
        hours=1,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        referral_deadline_sweep,
        "interval",
        hours=1,
        next_run_time=datetime.now(UTC),
        args=[node.referrals, node.alerts],
        max_instances=1,
        coalesce=True,
    )
    return app, scheduler


class _KnownErrorsOnOneLine(logging.Filter):
    """A scheduled job that failed with a :class:`HandoverError`: one line, no traceback.

    APScheduler logs every failed run with its traceback; for our own errors (a
    damaged database, a full disk) the message says all the operator needs, once
    per run. Anything else keeps its traceback.
    """

    def __init__(self, space: SpaceWatch | None = None) -> None:
        super().__init__()
        self.space = space

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError):
            return False  # a sweep stopped by a stopping node: the stop logs it once
        if isinstance(exc, HandoverError):
            job = record.args[0] if isinstance(record.args, tuple) and record.args else "a job"
            record.msg, record.args = "%s failed: %s", (job, exc.diagnostics())
            record.exc_info, record.exc_text = None, None
            if isinstance(exc, OutOfSpaceError) and self.space is not None:
                if "_report_space" not in str(job):
                    self.space.mark()
        return True


async def _serve_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner | None:
    """``GET /metrics`` on ``host:port`` (plain HTTP; nothing else there); None if port is 0."""
    if not port:
        return None

    async def exposition(request: web.Request) -> web.Response:
        body = metrics.render().encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot serve the metrics on {host}:{port}: {exc.strerror}") from None
    log.info("metrics on http://%s:%d/metrics", host, port)
    return runner


@asynccontextmanager
async def serving(
    node: Node, host: str | None = None, port: int | None = None
) -> AsyncIterator[Running]:
    """Serve ``node`` (API and sweeps) until the block ends; then stop both.

    ``host`` and ``port`` override ``server.host`` and ``server.port`` (port 0: any
    free port, reported in :attr:`Running.port`). Raises :class:`ConfigError` when
    TLS is not configured or the address cannot be bound.
    """
    cfg = node.config.server
    # Files an earlier version (or a hand) left readable to others are closed first.
    closed = await asyncio.to_thread(tighten, node.data_dir)
    if closed:
        log.warning(
            "closed the permissions of %d file(s) and folder(s) in %s to the node's user "
            "alone (0600/0700)",
            closed,
            node.data_dir,
        )
    ssl_ctx = tls_context(node)
    await recover(node)
    app, scheduler = _app_and_scheduler(node)
    metrics = Metrics()
    jobs = _JobTasks(metrics)
    jobs.track(scheduler)
    # Start-up objects live as long as the process: freezing them keeps full garbage
    # collections short (they set a chronology read's p99; see docs/store.md).
    gc.collect()
    gc.freeze()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host = host or cfg.host
    port = cfg.port if port is None else port
    site = GuardedSite(
        runner, host, port, limits=ListenerLimits.from_config(cfg), ssl_context=ssl_ctx
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = runner.addresses[0][1] if port == 0 and runner.addresses else port
    try:
        metrics_runner = await _serve_metrics(metrics, cfg.metrics_host, cfg.metrics_port)
    except BaseException:
        await runner.cleanup()
        raise
    job_log = logging.getLogger("apscheduler.executors.default")
    one_line = _KnownErrorsOnOneLine(node.store.space)
    job_log.addFilter(one_line)
    try:
        scheduler.start()
        scheme = "https" if ssl_ctx else "http"
        log.info("serving %s on %s://%s:%d/api/v1/", node.config.node.name, scheme, host, bound)
        yield Running(node, app, scheduler, scheme, host, bound, site, metrics)
    finally:
        if scheduler.running:
            await jobs.stop(scheduler, STOP_GRACE_SECONDS)
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()
        job_log.removeFilter(one_line)
