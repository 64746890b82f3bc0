"""When the DSL team is alerted, as soon as the data changes and by the sweeps.

:class:`StoreAlerts` listens to the store (``Store.listeners``, wired up by
``transfer.node``) and raises the alerts each change calls for, at once:

- a pupil's leaving date or destination set or changed (by hand or by a CTF
  of leavers): that pupil's KCSIE deadline is checked now
  (:class:`transfer.exchange.deadlines_sweep.DeadlineSweep`, for those pupils);
- a concern logged: the DSL team is alerted, in the app and by e-mail when
  SMTP is configured. The alert says who logged it (name and role), the
  category and a link to the concern; never the concern's text or the child.
  Triaging the concern resolves it;
- an action added with a due date already past: its owner and the DSL team
  are alerted; an action completed: its alert is resolved.

:class:`ActionSweep` raises the overdue-action alerts the scheduler's sweep
finds (a due date passes at midnight, with no change to the data). Every
alert goes through :meth:`transfer.alerts.Alerts.notify`, idempotent per key,
level and day, so a sweep and a change can both raise it safely.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from typing import Final

import sqlalchemy as sa

from transfer.alerts import ENGLAND, Alerts
from transfer.exchange.deadlines_sweep import DeadlineSweep
from transfer.store.changes import StoreChange
from transfer.store.permissions import Role
from transfer.store.service import Store
from transfer.store.tables import Action, Category, Concern, ConcernPupil, Staff

__all__ = [
    "ActionSweep",
    "StoreAlerts",
    "action_key",
    "concern_key",
    "concern_link",
    "role_label",
]

log = logging.getLogger("handover.alerts")

#: The most senior role names a person in an alert.
_ROLE_LABELS: Final = (
    (Role.DSL, "DSL"),
    (Role.DEPUTY_DSL, "deputy DSL"),
    (Role.HEAD_TEACHER, "head teacher"),
    (Role.ADMINISTRATOR, "administrator"),
    (Role.STAFF, "member of staff"),
    (Role.AUDITOR, "auditor"),
)


def role_label(roles: Sequence[str]) -> str:
    """The role a person is named by: "DSL", "deputy DSL", "member of staff"..."""
    held = set(roles)
    return next((label for role, label in _ROLE_LABELS if role.value in held), "member of staff")


def concern_key(concern_id: str) -> str:
    return f"concern:{concern_id}"


def action_key(action_id: str) -> str:
    return f"action-overdue:{action_id}"


def concern_link(base_url: str, concern_id: str) -> str:
    """Where the DSL opens the concern: its page in the web app (signing in first)."""
    return f"{base_url.rstrip('/')}/concerns/{concern_id}"


def _long(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


class ActionSweep:
    """Alerts the owner and the DSL team of each action past its due date and not done."""

    def __init__(self, store: Store, alerts: Alerts, *, base_url: str) -> None:
        self.store = store
        self.alerts = alerts
        self.base_url = base_url

    async def run(
        self, today: date | None = None, *, action_ids: Sequence[str] | None = None
    ) -> int:
        """Raise today's overdue alert of every action due before ``today`` and not done
        (only ``action_ids`` when given); the number of new alerts."""
        today = today or self.alerts.today()
        query = (
            sa.select(Action.id, Action.due_on, Action.assignee_id, Concern.org_id, Concern.id)
            .join(Concern, Concern.id == Action.concern_id)
            .where(
                Action.done_at.is_(None),
                Action.due_on.is_not(None),
                Action.due_on < today,
                # Imported from another school's file: history, not this school's to-do.
                Action.provenance_id.is_(None),
            )
            .order_by(Concern.org_id, Action.due_on, Action.id)
        )
        if action_ids is not None:
            query = query.where(Action.id.in_(list(action_ids)))
        async with self.store.sessions() as s:
            rows = (await s.execute(query)).all()
            concern_ids = list({r[4] for r in rows})
            pupils: dict[str, str] = {}
            if concern_ids:
                for concern_id, pupil_id in (
                    await s.execute(
                        sa.select(ConcernPupil.concern_id, ConcernPupil.pupil_id)
                        .where(ConcernPupil.concern_id.in_(concern_ids))
                        .order_by(ConcernPupil.pupil_id)
                    )
                ).all():
                    pupils.setdefault(concern_id, pupil_id)
            owners = {
                r.id: r.display_name
                for r in (
                    await s.execute(
                        sa.select(Staff.id, Staff.display_name).where(
                            Staff.id.in_([r[2] for r in rows if r[2]])
                        )
                    )
                ).all()
            }
        raised = 0
        for action_id, due, owner, org_id, concern_id in rows:
            if due is None:  # filtered out by the query; for the type checker
                continue
            who = f", owned by {owners[owner]}" if owner in owners else ""
            if await self.alerts.notify(
                org_id,
                key=action_key(action_id),
                level="overdue",
                subject="An action is overdue",
                message=(
                    f"An action on a concern{who} was due on {_long(due)} and is not done. "
                    f"Open the concern: {concern_link(self.base_url, concern_id)}"
                ),
                pupil_id=pupils.get(concern_id),
                ref=action_id,
                staff_id=owner if owner in owners else None,
            ):
                raised += 1
        if action_ids is None:
            await self.alerts.retry_mail()
        return raised


class StoreAlerts:
    """The store's listener: the alerts a change calls for, raised as it is committed."""

    def __init__(
        self, store: Store, alerts: Alerts, deadlines: DeadlineSweep, *, base_url: str
    ) -> None:
        self.store = store
        self.alerts = alerts
        self.deadlines = deadlines
        self.actions = ActionSweep(store, alerts, base_url=base_url)
        self.base_url = base_url

    def attach(self) -> None:
        """Listen to the store (once)."""
        if self.on_change not in self.store.listeners:
            self.store.listeners.append(self.on_change)

    async def on_change(self, change: StoreChange) -> None:
        if change.kind == "pupil.leaving":
            await self.deadlines.run(pupil_ids=change.pupil_ids)
        elif change.kind == "concern.recorded" and change.record_id is not None:
            await self.concern_logged(change)
        elif change.kind == "concern.triaged" and change.record_id is not None:
            await self.alerts.resolve(change.org_id, concern_key(change.record_id))
        elif change.kind == "action.added" and change.record_id is not None:
            await self.actions.run(action_ids=[change.record_id])
        elif change.kind == "action.completed" and change.record_id is not None:
            await self.alerts.resolve(change.org_id, action_key(change.record_id))

    async def concern_logged(self, change: StoreChange) -> bool:
        """Tell the DSL team a concern was logged: who, the category, a link; no content."""
        assert change.record_id is not None
        async with self.store.sessions() as s:
            concern = await s.get(Concern, change.record_id)
            if concern is None:
                return False
            label = await s.scalar(
                sa.select(Category.label).where(
                    Category.org_id == concern.org_id, Category.key == concern.category_key
                )
            )
            staff = await s.get(Staff, concern.recorded_by)
        who = (
            f"{staff.display_name} ({role_label(staff.roles)})"
            if staff is not None
            else "A member of staff"
        )
        category = label or concern.category_key
        at = concern.recorded_at.astimezone(ENGLAND)
        when = f"{at:%I:%M%p}".lstrip("0").lower() + f" on {_long(at.date())}"
        return await self.alerts.notify(
            concern.org_id,
            key=concern_key(concern.id),
            level="info",
            subject=f"New concern logged: {category}",
            message=(
                f"{who} logged a concern in the category {category} at {when}. "
                f"Open it in Handover: {concern_link(self.base_url, concern.id)}"
            ),
            pupil_id=change.pupil_ids[0] if change.pupil_ids else None,
            ref=concern.id,
        )
