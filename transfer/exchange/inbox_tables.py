"""The receiving side's tables: incoming packages, the receipts issued for them, and the
replay table of signed peer requests.

Created by the Alembic migration ``inbox_0001`` (never by ``create_all``); a test
checks that the two agree. No package content is ever a column here: a package's
ciphertext lives in ``data_dir/incoming`` then ``data_dir/inbox`` until it is
accepted or rejected; a receipt is the signed JSON that was sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from transfer.states.incoming import INCOMING, Incoming, IncomingEvent
from transfer.store.db import Base
from transfer.store.models import UTCDateTime

#: The states of an incoming package (transfer/states/incoming.py is the machine).
RECEIVING: Final = Incoming.RECEIVING.value
DELIVERED: Final = Incoming.DELIVERED.value
VIEWED: Final = Incoming.VIEWED.value
ACCEPTED: Final = Incoming.ACCEPTED.value
REJECTED: Final = Incoming.REJECTED.value
#: The upload completed but the package failed a check (hash, signature, addressee): deleted.
REFUSED: Final = Incoming.REFUSED.value
STATES = tuple(state.value for state in Incoming)
#: States in which a DSL may still accept or reject.
OPEN_STATES = tuple(state.value for state in INCOMING.sources(IncomingEvent.ACCEPT))

#: Push states of an issued receipt.
PUSH_NONE: Final = "none"  # delivered receipts: returned in the response to ``complete``
PUSH_PENDING: Final = "pending"
PUSH_DONE: Final = "pushed"
PUSH_FAILED: Final = "failed"


class IncomingPackage(Base):
    """A package another organisation is sending (or has sent) to one of ours."""

    __tablename__ = "incoming_packages"
    __table_args__ = (Index("ix_incoming_packages_recipient_state", "recipient_org_id", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    recipient_org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    sender_org_id: Mapped[str] = mapped_column(String(64))
    sender_name: Mapped[str] = mapped_column(String(200))
    #: The signing key id of the request that offered the package.
    sender_key_id: Mapped[str] = mapped_column(String(16))
    package_kind: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(BigInteger)
    ciphertext_sha256: Mapped[str] = mapped_column(String(64))
    #: Bytes received, written and fsynced (the resume point).
    received: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20))
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    entries: Mapped[int | None] = mapped_column(Integer)
    content_size: Mapped[int | None] = mapped_column(BigInteger)
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    viewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The staff member (of the recipient organisation) who accepted or rejected it.
    decided_by: Mapped[str | None] = mapped_column(String(36))
    #: The pupil the package was imported into.
    pupil_id: Mapped[str | None] = mapped_column(String(36))
    #: Why the package was refused (a problem slug and a short reason, never content).
    refused_reason: Mapped[str | None] = mapped_column(String(300))


class IssuedReceipt(Base):
    """A signed receipt this node issued, and its delivery back to the sender's node."""

    __tablename__ = "inbox_receipts"
    __table_args__ = (Index("ix_inbox_receipts_push", "push_state", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    package_id: Mapped[str] = mapped_column(ForeignKey("incoming_packages.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    #: ``SignedReceipt.to_json()``, exactly as sent.
    data: Mapped[bytes] = mapped_column(LargeBinary)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    push_state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    pushed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PeerNonce(Base):
    """A nonce of a signed peer request, kept while a replay of it could still be accepted."""

    __tablename__ = "peer_nonces"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


INBOX_TABLES = frozenset({"incoming_packages", "inbox_receipts", "peer_nonces"})
