"""The outbox: packages this node sends to other nodes, and what became of each.

A DSL queues a leaver's file (:meth:`Outbox.queue_leaver_file`): the package
is built from the store, signed with the organisation's key and encrypted to
the receiver's ``age1…`` recipient from the directory, into
``data_dir/outgoing/<id>.age.tmp``, fsynced and renamed to ``<id>.age``.
Packages built elsewhere (referrals) come in through :meth:`Outbox.queue_file`.

States (``docs/delivery.md``)::

    draft -> queued -> delivered -> viewed -> accepted | rejected
               |  ^
               v  | resend
             failed          queued/failed -> cancelled (only before delivery)

The delivery sweep (:meth:`Outbox.deliver_flowing`, or one batch: :meth:`Outbox.deliver_due`)
keeps up to ten deliveries going, claiming each due item with a
lease (``claimed_by``, ``lease_until``): on PostgreSQL inside a
``SELECT ... FOR UPDATE SKIP LOCKED`` transaction, on SQLite by a conditional
``UPDATE``; so several ``serve`` processes never deliver one item at the same
time, and the item of a killed process is picked up again when its lease
runs out (the receiver answers the same package id with the same receipt, so
nothing arrives twice). An upload resumes from the offset the receiver holds
and streams the file chunk by chunk; it ends with the receiver's signed
``delivered`` receipt, verified before it is recorded. Every change of state
has a time, is a row in ``outgoing_events``, is audited and is a line in each
pupil's chronology.

The code is in parts, one a module, joined here by :class:`Outbox`:
:mod:`~transfer.exchange.outbox.core` (plumbing and reading),
:mod:`~transfer.exchange.outbox.queue` (queueing),
:mod:`~transfer.exchange.outbox.changes` (cancel, resend),
:mod:`~transfer.exchange.outbox.delivery` (the upload and its retries),
:mod:`~transfer.exchange.outbox.receipts` (receipts) and
:mod:`~transfer.exchange.outbox.records` (states, errors, the records it answers).
"""

from __future__ import annotations

from transfer.exchange.outbox.changes import OutboxChanges
from transfer.exchange.outbox.delivery import OutboxDelivery
from transfer.exchange.outbox.queue import OutboxQueue
from transfer.exchange.outbox.records import (
    MAX_REASON,
    OUTGOING_DIR,
    REASON_FIELD,
    REASON_TABLE,
    STALE_DRAFT,
    STATES,
    LeaseLostError,
    LeaverFileToAgencyError,
    OutboxDirectory,
    OutgoingEvent,
    OutgoingReceipt,
    OutgoingRecord,
    PackageFileDamagedError,
    PackageFileMissingError,
    PackageState,
    ReasonNeeded,
    ReasonRequiredError,
    ReceiptListener,
    SendChecks,
    check_reason,
    is_destination,
)

__all__ = [
    "MAX_REASON",
    "OUTGOING_DIR",
    "REASON_FIELD",
    "REASON_TABLE",
    "STALE_DRAFT",
    "STATES",
    "LeaseLostError",
    "LeaverFileToAgencyError",
    "Outbox",
    "OutboxDirectory",
    "OutgoingEvent",
    "OutgoingReceipt",
    "OutgoingRecord",
    "PackageFileDamagedError",
    "PackageFileMissingError",
    "PackageState",
    "ReasonNeeded",
    "ReasonRequiredError",
    "ReceiptListener",
    "SendChecks",
    "check_reason",
    "is_destination",
]


class Outbox(OutboxQueue, OutboxChanges, OutboxDelivery):
    """The packages one node sends. One per process; several processes may share a database."""
