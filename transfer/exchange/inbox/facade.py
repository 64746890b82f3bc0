"""The one object the node, the peer server, the API, the web pages and the CLI hold.

:class:`Inbox` is the shared :class:`~transfer.exchange.inbox.core.InboxCore` (its
``config`` and ``free_space`` may be replaced while it runs) with the parts beside it:
:attr:`Inbox.uploads` and :attr:`Inbox.delivery` (the peer side),
:attr:`Inbox.receipts`, :attr:`Inbox.review` and :attr:`Inbox.acceptance` (the DSL
side). Its methods only hand each call to its part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from keys.keyfiles import KeyFiles
from schemas.manifest import Subject
from schemas.peer import OfferBody
from transfer.audit.log import AuditLog
from transfer.config import Config
from transfer.exchange.importing import Importer
from transfer.exchange.inbox.accepting import Acceptance
from transfer.exchange.inbox.core import InboxCore
from transfer.exchange.inbox.delivery import Delivery
from transfer.exchange.inbox.models import (
    AcceptOutcome,
    InboxAcceptance,
    InboxDirectory,
    InboxPreview,
    IncomingSummary,
    PeerCaller,
    Via,
)
from transfer.exchange.inbox.receipts import Receipts
from transfer.exchange.inbox.review import Review
from transfer.exchange.inbox.upload import Uploads
from transfer.receipts import SignedReceipt
from transfer.space import free_bytes
from transfer.store.permissions import Actor
from transfer.store.service import Store


class Inbox(InboxCore):
    """The incoming packages of every organisation hosted on this node."""

    def __init__(
        self,
        *,
        store: Store,
        kek: bytes,
        keys: KeyFiles,
        directory: InboxDirectory,
        config: Config,
        data_dir: Path,
        audit_log: AuditLog | None = None,
        clock: Callable[[], datetime] | None = None,
        free_space: Callable[[Path], int] = free_bytes,
    ) -> None:
        super().__init__(
            store=store,
            keys=keys,
            directory=directory,
            config=config,
            data_dir=data_dir,
            audit_log=audit_log,
            clock=clock,
            free_space=free_space,
        )
        self.receipts = Receipts(self)
        self.uploads = Uploads(self, self.receipts)
        self.delivery = Delivery(self, self.receipts, self.uploads)
        self.review = Review(self, self.receipts)
        self.acceptance = Acceptance(self, self.receipts, self.review, Importer(store, kek))

    # ------------------------------------------------------------- peer: upload

    async def offer(self, caller: PeerCaller, offer: OfferBody) -> tuple[int, dict[str, Any]]:
        """Register (or resume) an upload; the answer's status and body (contracts §5)."""
        return await self.uploads.offer(caller, offer)

    async def upload_offset(self, caller: PeerCaller, package_id: str) -> int:
        """``HEAD``: how many bytes of the upload are held (its size once delivered)."""
        return await self.uploads.upload_offset(caller, package_id)

    async def receive_chunk(
        self,
        caller: PeerCaller,
        package_id: str,
        offset: int,
        digest_header: str,
        chunks: AsyncIterator[bytes],
    ) -> int:
        """Write one chunk at ``offset``; the new offset. All of the chunk or none of it."""
        return await self.uploads.receive_chunk(caller, package_id, offset, digest_header, chunks)

    async def complete(self, caller: PeerCaller, package_id: str) -> SignedReceipt:
        """Check the whole upload and its manifest; store it as delivered; the receipt."""
        return await self.delivery.complete(caller, package_id)

    async def receipts_for_sender(self, caller: PeerCaller, package_id: str) -> list[SignedReceipt]:
        """Every receipt issued for the package, oldest first (only to its sender)."""
        return await self.receipts.for_sender(caller, package_id)

    # ------------------------------------------------------------------ DSL side

    async def list(
        self, actor: Actor, *, state: str | None = None, via: Via = "api"
    ) -> list[IncomingSummary]:
        """The organisation's delivered packages (newest first); ``state`` filters."""
        return await self.review.list(actor, state=state, via=via)

    async def subjects(
        self, actor: Actor, package_ids: Sequence[str], *, via: Via = "web"
    ) -> dict[str, Subject]:
        """Who each open package says it is about (from its signed manifest only)."""
        return await self.review.subjects(actor, package_ids, via=via)

    async def show(self, actor: Actor, package_id: str, *, via: Via = "api") -> InboxPreview:
        """Verify the whole package and preview it; the first view sends a viewed receipt."""
        return await self.review.show(actor, package_id, via=via)

    async def reject(
        self, actor: Actor, package_id: str, reason: str, *, via: Via = "api"
    ) -> IncomingSummary:
        """Refuse the package with a reason; the rejected receipt is queued for the sender."""
        return await self.review.reject(actor, package_id, reason, via=via)

    async def accept(
        self,
        actor: Actor,
        package_id: str,
        *,
        pupil_id: str | None = None,
        create_new: bool = False,
        reference: str | None = None,
        via: Via = "api",
    ) -> AcceptOutcome:
        """Verify the package again and import it; the accepted receipt is queued."""
        return await self.acceptance.accept(
            actor,
            package_id,
            pupil_id=pupil_id,
            create_new=create_new,
            reference=reference,
            via=via,
        )

    async def accept_referral(
        self, actor: Actor, package_id: str, *, reference: str | None, via: Via = "api"
    ) -> IncomingSummary:
        """Accept a referral with the agency's reference: verified in full, kept, not imported."""
        return await self.acceptance.accept_referral(
            actor, package_id, reference=reference, via=via
        )

    async def accept_package(
        self,
        actor: Actor,
        package_id: str,
        *,
        pupil_id: str | None = None,
        create_new: bool = False,
        reference: str | None = None,
        via: Via = "api",
    ) -> InboxAcceptance:
        """Accept whatever the package is: a referral with ``reference``, else import it."""
        return await self.acceptance.accept_package(
            actor,
            package_id,
            pupil_id=pupil_id,
            create_new=create_new,
            reference=reference,
            via=via,
        )
