"""The outbox's scheduled sweeps: deliver what is due, pull receipts not yet pushed.

Both are idempotent and keep their state in the database, so they are safe
to run in several ``serve`` processes at once and after any crash: a
delivery is claimed with a lease (see :mod:`transfer.exchange.outbox`), and a
receipt already held is not recorded twice. A sweep never raises into the
scheduler: an unexpected error is logged and the next sweep tries again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transfer.config import Config
    from transfer.exchange.outbox import Outbox

__all__ = ["deliver_due", "pull_receipts", "schedule_outbox_sweeps"]

log = logging.getLogger("handover.sweeps")

#: Deliveries one process keeps going at once.
BATCH = 10
#: Items one sweep tries before leaving the rest to the next sweep.
MOST = 200


async def deliver_due(outbox: Outbox, *, window: int = BATCH, most: int = MOST) -> int:
    """Deliver due items, ``window`` at a time (the next claimed as each one ends); how many
    were tried."""
    try:
        # Drafts whose build was cut short (their builder died) block their pupil's file
        # (discarded first, inside the sweep).
        return await outbox.deliver_flowing(window=window, most=most)
    except Exception:
        log.exception("the delivery sweep stopped on an unexpected error; the next one retries")
    return 0


async def pull_receipts(outbox: Outbox) -> int:
    """Ask receivers for receipts of delivered packages; how many new receipts were recorded."""
    try:
        return await outbox.pull_receipts()
    except Exception:
        log.exception("the receipt sweep stopped on an unexpected error; the next one retries")
        return 0


def schedule_outbox_sweeps(scheduler: Any, outbox: Outbox, config: Config) -> None:
    """Add both sweeps to an APScheduler ``AsyncIOScheduler``, every ``transfer.sweep_seconds``."""
    every = config.transfer.sweep_seconds
    scheduler.add_job(
        deliver_due,
        "interval",
        seconds=every,
        args=[outbox],
        id="outbox.deliver",
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        pull_receipts,
        "interval",
        seconds=max(every, 60.0),
        args=[outbox],
        id="outbox.pull_receipts",
        max_instances=1,
        coalesce=True,
    )
