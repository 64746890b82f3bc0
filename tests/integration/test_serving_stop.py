"""A stopping node lets its running sweeps finish, and logs one clean line (issue 17, item 4);
a sweep still busy when due again is counted, not logged (issue 16).

``serve`` used to shut the scheduler down without waiting: every sweep running at SIGTERM
was cancelled and APScheduler logged a ``CancelledError`` traceback for each.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from transfer.metrics import SWEEP_RUNS, SWEEP_SKIPPED_BUSY, SWEEPS_RUNNING, Metrics
from transfer.serving import _JobTasks, _KnownErrorsOnOneLine


async def _run(job_seconds: float, grace: float, caplog: pytest.LogCaptureFixture) -> list[str]:
    finished: list[str] = []
    started = asyncio.Event()

    async def sweep() -> None:
        started.set()
        await asyncio.sleep(job_seconds)
        finished.append("sweep")

    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(sweep, "interval", seconds=0.05, max_instances=1)
    jobs = _JobTasks()
    jobs.track(scheduler)
    job_log, one_line = logging.getLogger("apscheduler.executors.default"), _KnownErrorsOnOneLine()
    job_log.addFilter(one_line)
    try:
        scheduler.start()
        await asyncio.wait_for(started.wait(), 10)
        caplog.clear()
        await jobs.stop(scheduler, grace)
    finally:
        job_log.removeFilter(one_line)
    assert not scheduler.running
    return finished


async def test_a_running_sweep_finishes_before_the_node_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    assert await _run(0.3, 10.0, caplog) == ["sweep"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


async def test_a_sweep_still_running_after_the_grace_is_stopped_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    assert await _run(60.0, 0.2, caplog) == []
    assert not [r for r in caplog.records if r.exc_info]
    assert "CancelledError" not in caplog.text and "Traceback" not in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("stopped 1 sweep still running")


async def test_a_sweep_still_busy_when_due_again_is_quiet_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16: during a burst the delivery sweep outlasts its interval; APScheduler logged
    "skipped: maximum number of running instances reached" at WARNING every interval."""
    caplog.set_level(logging.DEBUG)
    release = asyncio.Event()
    runs: list[int] = []

    second = asyncio.Event()

    async def deliver_due() -> None:
        runs.append(1)
        if len(runs) > 1:
            second.set()
        await release.wait()

    scheduler = AsyncIOScheduler(timezone="UTC")
    # As serving adds it: APScheduler's own limit of one running instance.
    scheduler.add_job(
        deliver_due, "interval", seconds=0.02, max_instances=1, coalesce=True, name="deliver_due"
    )
    metrics = Metrics()
    jobs = _JobTasks(metrics)
    jobs.track(scheduler)
    labels = {"sweep": "deliver_due"}
    scheduler.start()
    try:
        for _ in range(1000):  # 10 s at most
            if metrics.value(SWEEP_SKIPPED_BUSY, labels) >= 5:
                break
            await asyncio.sleep(0.01)
        assert metrics.value(SWEEP_SKIPPED_BUSY, labels) >= 5
        assert runs == [1]  # one sweep ran all along; the due ones did not start a second
        assert metrics.value(SWEEPS_RUNNING, labels) == 1
        release.set()
        await asyncio.wait_for(second.wait(), 10)  # free again: the next due run starts
    finally:
        release.set()
        await jobs.stop(scheduler, 5.0)
    assert metrics.value(SWEEP_RUNS, labels) >= 2
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == []
    text = metrics.render()
    assert "# TYPE handover_sweep_skipped_busy_total counter" in text
    skipped = int(metrics.value(SWEEP_SKIPPED_BUSY, labels))
    assert f'handover_sweep_skipped_busy_total{{sweep="deliver_due"}} {skipped}' in text
