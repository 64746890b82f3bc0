"""The checkpoint file (``audit/latest-checkpoint.note``) is written off the event loop, and
two checkpoints signed at once leave the newer one in it.

A node signs a checkpoint for each receipt it issues (issue 16's burst: one per package);
the file's fsync on the event loop stopped every request the process served meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.audit.conftest import event
from transfer.audit.checkpoint import parse_checkpoint
from transfer.audit.log import AuditLog


def _anchor_size(path: Path) -> int:
    return parse_checkpoint(path.read_text(encoding="utf-8"))[1].size


async def test_the_event_loop_runs_on_while_the_checkpoint_file_is_flushed(
    log: AuditLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await log.append(event(0))
    slow_disk = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        slow_disk.set()
        time.sleep(0.3)  # a busy disk
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.ensure_future(ticker())
    try:
        stored = await log.checkpoint()
    finally:
        beat.cancel()
    assert slow_disk.is_set()  # the file was written (and flushed) by this checkpoint
    assert _anchor_size(tmp_path / "data" / "audit" / "latest-checkpoint.note") == stored.size
    # On the loop, the 0.3 s flush would have let the ticker run at most once or twice.
    assert ticks >= 10


async def test_a_newer_checkpoint_is_not_overwritten_by_an_older_one_still_being_flushed(
    open_log: Callable[..., AuditLog], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two logs over one database and one data directory: two serve processes of one node.
    first, second = open_log(), open_log()
    anchor = tmp_path / "data" / "audit" / "latest-checkpoint.note"
    flushing = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if not flushing.is_set():  # the first write (the older checkpoint) is slow
            flushing.set()
            time.sleep(0.3)
        real_fsync(fd)

    try:
        await first.append(event(0))
        monkeypatch.setattr(os, "fsync", fsync)
        older = asyncio.ensure_future(first.checkpoint())
        assert await asyncio.to_thread(flushing.wait, 10)  # the older one is being flushed
        await second.append(event(1))
        newer = await second.checkpoint()
        assert (await older).size == 1 and newer.size == 2
        assert _anchor_size(anchor) == 2
    finally:
        await first.close()
        await second.close()
