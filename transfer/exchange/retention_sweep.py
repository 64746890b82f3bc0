"""After-acceptance retention: what happens to the sender's copy once the file is accepted.

``transfer.after_accepted`` is the school's policy:

* ``"keep"`` (the default): nothing happens here; the sender's copy follows the
  normal retention (date of birth + ``retention.cp_years_after_dob`` years).
* ``"erase"``: ``transfer.erase_after_days`` days after the receiving school's
  **accepted** receipt, the sending school's copy of that pupil is
  crypto-shredded (:meth:`transfer.store.service.Store.erase_pupil`: the
  pupil's data key destroyed, sealed text and documents deleted, a tombstone
  kept). The signed receipts stay in the outbox as evidence.

A pupil is only erased when the accepted package is still the latest leaver's
file for that pupil, the pupil still has a leaving date that has passed, and
the pupil has not been erased already; so a pupil who came back (leaving date
cleared) or whose file is on its way somewhere else is left alone. The sweep
is idempotent and safe to run in several processes (erasure locks the pupil
and does nothing the second time).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import sqlalchemy as sa

from schemas.manifest import PackageKind
from schemas.records import TombstoneRecord
from transfer.alerts import england_day
from transfer.config import TransferSection
from transfer.errors import HandoverError
from transfer.store.permissions import Actor, Role
from transfer.store.service import Store
from transfer.store.tables import Pupil
from transfer.wording import plural

log = logging.getLogger("handover.retention")

#: Who the store records as having erased (the tombstone's ``erased_by``).
ERASER: Final = "after-acceptance"


class AcceptedPackages(Protocol):
    """``transfer.exchange.outbox.Outbox``, as far as this sweep needs it."""

    async def accepted_before(self, org_id: str, when: datetime) -> Any: ...

    async def latest_for_pupil(
        self, org_id: str, pupil_id: str, kind: PackageKind = "leaver_file"
    ) -> Any: ...


def node_actor(org_id: str) -> Actor:
    """The node itself, acting under the school's after-acceptance policy."""
    return Actor(
        staff_id=ERASER,
        org_id=org_id,
        roles=frozenset({Role.DSL}),
        display_name="Handover (after-acceptance retention)",
    )


class AfterAcceptanceRetention:
    """One run erases every sender's copy that the policy says is due (see module docs)."""

    def __init__(self, store: Store, outbox: AcceptedPackages, transfer: TransferSection) -> None:
        self.store = store
        self.outbox = outbox
        self.transfer = transfer

    async def run(self, now: datetime | None = None) -> list[TombstoneRecord]:
        if self.transfer.after_accepted != "erase":
            return []
        at = now or self.store.now()
        cutoff = at - timedelta(days=self.transfer.erase_after_days)
        today = england_day(at)
        done: list[TombstoneRecord] = []
        for org in await self.store.list_organisations():
            for package in await self.outbox.accepted_before(org.id, cutoff):
                if package.kind != "leaver_file":
                    continue
                for pupil_id in package.pupil_ids:
                    tomb = await self._erase(org.id, pupil_id, package.id, today)
                    if tomb is not None:
                        done.append(tomb)
        if done:
            log.info("after-acceptance retention erased %s", plural(len(done), "pupil"))
        return done

    async def _erase(
        self, org_id: str, pupil_id: str, package_id: str, today: Any
    ) -> TombstoneRecord | None:
        async with self.store.sessions() as s:
            row = (
                await s.execute(
                    sa.select(Pupil.erased_at, Pupil.leaving_date).where(
                        Pupil.id == pupil_id, Pupil.org_id == org_id
                    )
                )
            ).first()
        if row is None or row.erased_at is not None:
            return None
        if row.leaving_date is None or row.leaving_date > today:
            return None
        latest = await self.outbox.latest_for_pupil(org_id, pupil_id, "leaver_file")
        if latest is None or latest.id != package_id or latest.state != "accepted":
            return None
        try:
            tomb = await self.store.erase_pupil(node_actor(org_id), pupil_id)
        except HandoverError as err:
            log.error(
                "after-acceptance erasure of pupil %s failed: %s", pupil_id, err.diagnostics()
            )
            await self.store.record_event(
                "transfer.retention.erase",
                "node",
                org_id,
                {"pupil": pupil_id, "package": package_id},
                "failed",
                reason=err.slug,
            )
            return None
        await self.store.record_event(
            "transfer.retention.erase",
            "node",
            org_id,
            {"pupil": pupil_id, "package": package_id},
            after_days=self.transfer.erase_after_days,
        )
        return tomb
