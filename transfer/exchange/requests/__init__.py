"""Transfer requests: a receiving school asks the previous school for a pupil's file.

The requesting school's DSL names a pupil on its roll (by UPN) and the school
the pupil came from. The request travels as a signed peer request
(``POST /peer/v1/transfer-requests``) to the holder's node, where it is
matched to the holder's pupil by UPN only: a request for a UPN the holder does
not know is shown as such, and nothing about any other pupil is revealed. The
holder's DSL authorises it (the leaver's file is queued through
:meth:`transfer.exchange.outbox.Outbox.queue_leaver_file`; the package id goes
back in the decision) or declines it with a reason; the decision travels back
(``POST /peer/v1/transfer-requests/{id}/decision``).

Everything this node still owes the other node (a request or a decision) is
kept in the database (``transfer_requests.outbound``) and sent by
:meth:`TransferRequests.send_due`, a sweep safe to run in several processes
(a lease per row), with exponential back-off until ``transfer.give_up_hours``.

Audited on both sides: ``request.created``, ``request.sent``,
``request.received``, ``request.authorised``, ``request.declined``,
``request.decision.sent``, ``request.decision.received`` (ids only; never the
names, the note or the reason, which are kept in the table and the pupils'
chronologies).

The code is in parts, one a module, joined here by :class:`TransferRequests`:
:mod:`~transfer.exchange.requests.core` (plumbing and reading),
:mod:`~transfer.exchange.requests.requesting` (the requesting school),
:mod:`~transfer.exchange.requests.holding` (the holding school),
:mod:`~transfer.exchange.requests.sending` (the sweep) and
:mod:`~transfer.exchange.requests.models` (the protocols, records and bodies).
"""

from __future__ import annotations

from transfer.exchange.requests.holding import HoldingSide
from transfer.exchange.requests.models import (
    AUTHORISING_GRACE,
    PEER_PATH,
    AuthoriseRequest,
    DeclineRequest,
    DirectoryLookup,
    LeaverFileQueue,
    NewTransferRequest,
    PeerJsonClient,
    RequestState,
    Side,
    TransferRequestRecord,
    alert_key,
)
from transfer.exchange.requests.requesting import RequestingSide
from transfer.exchange.requests.sending import Sending

__all__ = [
    "AUTHORISING_GRACE",
    "PEER_PATH",
    "AuthoriseRequest",
    "DeclineRequest",
    "DirectoryLookup",
    "LeaverFileQueue",
    "NewTransferRequest",
    "PeerJsonClient",
    "RequestState",
    "Side",
    "TransferRequestRecord",
    "TransferRequests",
    "alert_key",
]


class TransferRequests(RequestingSide, HoldingSide, Sending):
    """Both sides of transfer requests on one node."""
