"""A stopping node lets its running sweeps finish, and logs one clean line (issue 17, item 4).

``serve`` used to shut the scheduler down without waiting: every sweep running at SIGTERM
was cancelled and APScheduler logged a ``CancelledError`` traceback for each.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

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
