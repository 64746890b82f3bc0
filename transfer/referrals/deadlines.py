"""Referral deadlines: drafts due today or overdue, and the sweep that alerts the DSL team."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select

from receivers.agencies import ENGLAND
from schemas.referrals import ReferralSummary
from transfer.referrals.base import LABELS, DeadlineAlerts, ReferralsBase, cap, summary_of
from transfer.referrals.tables import Referral
from transfer.states.referral import ReferralState


def alert_key(referral_id: str) -> str:
    return f"referral:{referral_id}"


class ReferralDeadlines(ReferralsBase):
    """Which drafts are due."""

    async def overdue(self, today: date) -> list[ReferralSummary]:
        """Drafts whose deadline is today or past (across every organisation on the node)."""
        async with self.store.sessions() as s:
            rows = (
                await s.scalars(
                    select(Referral)
                    .where(Referral.state == ReferralState.DRAFT, Referral.due_on.is_not(None))
                    .where(Referral.due_on <= today)
                    .order_by(Referral.due_on)
                )
            ).all()
            return [summary_of(r) for r in rows]


async def referral_deadline_sweep(
    referrals: ReferralDeadlines, alerts: DeadlineAlerts, *, now: datetime | None = None
) -> int:
    """Alert the DSL team of every draft referral due today or overdue; the number raised.

    The coordinator runs this from the node's scheduler. Idempotent per day
    (``Alerts.notify`` is). The alert names the referral and its deadline,
    never the child or the allegation.
    """
    today = (now or referrals.store.now()).astimezone(ENGLAND).date()
    raised = 0
    for r in await referrals.overdue(today):
        assert r.due_on is not None
        late = r.due_on < today
        label = LABELS[r.kind]
        ok = await alerts.notify(
            r.org_id,
            key=alert_key(r.id),
            level="overdue" if late else "due",
            subject=f"{cap(label)} {'overdue' if late else 'due today'}",
            message=(
                f"A {label} drafted on {r.created_at.astimezone(ENGLAND).date().isoformat()} "
                f"had to be sent by the end of {r.due_on.isoformat()}"
                + (" and has not been sent." if late else ": send it today.")
                + f" Referral {r.id}."
            ),
            pupil_id=r.pupil_id,
            ref=r.id,
        )
        raised += int(ok)
    return raised
