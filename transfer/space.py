"""Storage space: a full disk recognised wherever it is met, and told to whoever must act.

A full disk shows in three ways: SQLite's ``SQLITE_FULL`` ("database or disk is
full"), PostgreSQL's ``disk_full`` (SQLSTATE 53100), and ``OSError`` with
``ENOSPC`` (or ``EDQUOT``, or ``EFBIG`` for a file-size limit) from a file
write. :func:`space_shortage` recognises all three through any wrapper, and
:func:`as_out_of_space` turns them into :class:`~transfer.errors.OutOfSpaceError`
(HTTP 503, ``out-of-space``), the one error every face maps. Nothing is lost
by it: the transaction or write that failed is undone, and the node carries on
by itself once space is freed.

:class:`SpaceWatch` (one per store) remembers that the node ran short, so that
each failure is one log line without a traceback and the DSL teams of the
node's organisations get one alert a day (raised by :meth:`SpaceWatch.report`
from the scheduler, once the database can take it again).

:func:`free_bytes` is the free space of the file system that holds a path, as
an unprivileged process may use it; the inbox compares it with what an offered
upload needs.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from transfer.errors import HandoverError, OutOfSpaceError

if TYPE_CHECKING:
    from transfer.alerts import Alerts

__all__ = [
    "ALERT_KEY",
    "SpaceWatch",
    "as_out_of_space",
    "free_bytes",
    "out_of_space",
    "space_shortage",
]

log = logging.getLogger("handover.space")

#: ``errno`` values of a write that found no room (``EFBIG``: a file-size limit).
_NO_ROOM: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: SQLite's primary result code ``SQLITE_FULL``.
_SQLITE_FULL: Final = 13
#: PostgreSQL's ``disk_full``.
_POSTGRES_FULL: Final = "53100"
#: The key of the alert raised for a node that ran out of space (one open alert a day).
ALERT_KEY: Final = "node-out-of-space"
_ADVICE: Final = (
    "nothing was changed; free space on the server (docs/operations.md, 'Disk space') and "
    "try again: the node carries on by itself once there is room"
)


def space_shortage(exc: BaseException) -> str | None:
    """What ran out of room, if ``exc`` (or anything it wraps) says the disk is full.

    ``"database"`` for SQLite's ``SQLITE_FULL`` or PostgreSQL's ``disk_full``,
    ``"file"`` for a file write that failed with ``ENOSPC``, ``EDQUOT`` or ``EFBIG``;
    None for anything else.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OutOfSpaceError):
            return str(e.detail.get("store", "file"))
        if isinstance(e, sqlite3.Error):
            code = getattr(e, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF == _SQLITE_FULL) or (
                "database or disk is full" in str(e)
            ):
                return "database"
        elif isinstance(e, OSError) and e.errno in _NO_ROOM:
            return "file"
        if getattr(e, "sqlstate", None) == _POSTGRES_FULL:
            return "database"
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return None


def out_of_space(store: str, where: str) -> OutOfSpaceError:
    """The error for a full disk: which store (``database`` or ``file``) and where it is."""
    what = f"the database {where} is full" if store == "database" else f"no space left in {where}"
    return OutOfSpaceError(
        f"this node is out of storage space ({what}): {_ADVICE}", detail={"store": store}
    )


def as_out_of_space(exc: BaseException, where: str) -> OutOfSpaceError | None:
    """``exc`` as :class:`OutOfSpaceError` when it says the disk is full; otherwise None."""
    if isinstance(exc, OutOfSpaceError):
        return exc
    store = space_shortage(exc)
    return None if store is None else out_of_space(store, where)


def free_bytes(path: Path) -> int:
    """Bytes free to this (unprivileged) process on the file system holding ``path``.

    ``path`` need not exist yet: its nearest existing parent is asked.
    """
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return st.f_bavail * st.f_frsize


@dataclass
class SpaceWatch:
    """That this node ran out of space: one log line per failure, one alert when possible."""

    #: When the first failure not yet reported in an alert happened (None: none pending).
    pending_since: datetime | None = None
    #: Failures since then (requests and jobs refused for want of space).
    refused: int = 0
    #: Every failure seen by this process since it started.
    total: int = 0

    def mark(self) -> None:
        """Count one failure for want of space (already logged by whoever saw it)."""
        if self.pending_since is None:
            self.pending_since = datetime.now(UTC)
        self.refused += 1
        self.total += 1

    def noticed(self, err: HandoverError, what: str, request_id: str | None = None) -> None:
        """Record one failure for want of space and log it on one line (no traceback).

        ``what``: the request (``POST /peer/v1/packages``) or job that failed.
        """
        self.mark()
        if request_id is None:
            log.error("%s failed: %s", what, err.diagnostics())
        else:
            log.error("%s failed: %s [request %s]", what, err.diagnostics(), request_id)

    async def report(self, alerts: Alerts, org_ids: list[str]) -> bool:
        """Alert each organisation's DSL team that the node ran short of space (at most once a
        day each); True when there was something to report and it was recorded.

        Run by the scheduler: while the database itself is full the alert cannot be stored,
        so it is tried again at the next run, and then says when the shortage began.
        """
        since = self.pending_since
        if since is None:
            return False
        refused = self.refused
        when = since.strftime("%H:%M UTC on %d %B %Y")
        for org_id in org_ids:
            await alerts.notify(
                org_id,
                key=ALERT_KEY,
                level="info",
                subject="The Handover server ran out of storage space",
                message=(
                    f"Since {when} the server has refused {refused} request(s) or job(s) "
                    "because its disk was full. Nothing was lost, but changes made then were "
                    "not saved and files to or from other schools waited. Tell whoever runs "
                    "Handover for your school: they must free space on the server. Work "
                    "carries on by itself once there is room."
                ),
            )
        # Failures while the alerts were being raised stay pending for the next report.
        self.refused -= refused
        if self.refused <= 0:
            self.pending_since, self.refused = None, 0
        return True
