"""The receiving school's inbox: uploads from other nodes, then the DSL's preview, accept, reject.

:class:`Inbox` (:mod:`.facade`) is the one object callers hold; each of its calls goes
to one part:

- :mod:`.upload`: the peer side, called by :mod:`transfer.api.peer` once a
  request's signature has checked. ``offer`` registers a package *before any byte*;
  ``receive_chunk`` streams one chunk to ``data_dir/incoming/<id>.part`` at the held
  offset, hashing as it goes, fsynced before the new offset is committed.
- :mod:`.delivery`: ``complete`` checks size and SHA-256 of the whole ciphertext,
  decrypts *only the manifest* (in memory), checks its signature, sender and addressee,
  moves the file to ``data_dir/inbox/<id>.age`` and issues the signed **delivered**
  receipt. Idempotent.
- :mod:`.receipts`: signs and stores every receipt. Receipts other than "delivered" are
  queued and pushed to the sender's node by :mod:`transfer.exchange.receipt_push`; all
  of them are also served to the sender on request.
- :mod:`.review`: the DSL side (the recipient organisation's DSL team,
  ``Permission.RECEIVE_TRANSFER``): ``list``, ``show`` (verify the whole package,
  preview it with the plaintext only in memory; first view issues a **viewed** receipt)
  and ``reject`` (**rejected** receipt, with the reason).
- :mod:`.accepting`: ``accept`` (verify again and import,
  :mod:`transfer.exchange.importing`; **accepted** receipt); a **referral** is kept, not
  imported, with the agency's reference (``accept_referral``); ``accept_package``
  chooses between the two by the package's kind. Once accepted or rejected the
  ciphertext is deleted (but a referral's): the imported records live in the store,
  where erasure can reach them.
- :mod:`.reading`: the worker-thread parts (verify a package, keep and parse its
  records, the preview as a DSL reads it); :mod:`.core`: the state and plumbing the
  parts share; :mod:`.models`: the errors and the answers' models.
"""

from transfer.exchange.inbox.facade import Inbox
from transfer.exchange.inbox.models import (
    AcceptOutcome,
    InboxAcceptance,
    InboxPreview,
    IncomingSummary,
    PeerCaller,
    PupilMatch,
    ReferenceRequiredError,
    is_referral,
)

__all__ = [
    "AcceptOutcome",
    "Inbox",
    "InboxAcceptance",
    "InboxPreview",
    "IncomingSummary",
    "PeerCaller",
    "PupilMatch",
    "ReferenceRequiredError",
    "is_referral",
]
