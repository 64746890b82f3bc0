"""Alerts for an organisation's DSL team: in the app, in the log, and by e-mail.

:meth:`Alerts.notify` is how the node tells a DSL team that something needs
doing (a leaver's file due or overdue, a transfer request to answer, a LADO
referral late). It is idempotent per (organisation, key, level, day): a sweep
that runs every few minutes raises each alert once a day at most, and two
``serve`` processes racing each other raise it once (a unique constraint in
the database decides). A new alert for a key closes ("supersedes") the older
open ones, so the DSL sees one open alert per thing.

Each new alert is a row (``alerts`` table), a log line, an audit event
(``alert.raised``; ids and level only) and, when SMTP is configured, an e-mail
to the active DSL and deputy DSL accounts of the organisation that have an
e-mail address (``staff.email``). Subjects and messages are written by the
node and must never carry safeguarding text or a pupil's name: the e-mail
says what kind of thing needs doing, and the DSL signs in to see which child.

"Day" is the calendar day in England (Europe/London), since school deadlines
are.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Final, Literal, get_args
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import exc as sa_exc

from transfer.alerts.tables import alerts as alerts_table
from transfer.errors import HandoverError, InputError, NotFoundError
from transfer.mail import Mailer, valid_address
from transfer.store.permissions import DSL_TEAM, Actor, Permission, PermissionDenied, require
from transfer.store.service import Store
from transfer.store.tables import Staff

log = logging.getLogger("handover.alerts")

AlertLevel = Literal["upcoming", "due", "overdue", "info"]
LEVELS: Final = frozenset(get_args(AlertLevel))
ClosedReason = Literal["resolved", "superseded", "dismissed"]
MailState = Literal["off", "none", "sending", "sent", "failed"]
ENGLAND: Final = ZoneInfo("Europe/London")
MAX_MAIL_ATTEMPTS: Final = 5
MAX_MESSAGE: Final = 1000

_MAIL_FOOTER = (
    "\n\nSign in to Handover to see the details. This e-mail deliberately names no child."
    "\nAlert reference: {id}"
)


class AlertRecord(BaseModel):
    """One alert as the DSL team sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    org_id: str
    key: str
    level: AlertLevel
    day: date
    subject: str
    message: str
    pupil_id: str | None = None
    #: The pupil's name, filled in when listed for a DSL (never stored in the alert).
    pupil_name: str | None = None
    ref: str | None = None
    raised_at: AwareDatetime
    closed_at: AwareDatetime | None = None
    closed_reason: ClosedReason | None = None
    closed_by: str | None = None
    mail_state: MailState
    #: The member of staff the alert also concerns (an overdue action's owner), or None.
    staff_id: str | None = None


def england_day(moment: datetime) -> date:
    """The calendar day in England at ``moment`` (an aware datetime)."""
    return moment.astimezone(ENGLAND).date()


def _record(row: Any, pupil_name: str | None = None) -> AlertRecord:
    return AlertRecord(
        id=row.id,
        org_id=row.org_id,
        key=row.key,
        level=row.level,
        day=row.day,
        subject=row.subject,
        message=row.message,
        pupil_id=row.pupil_id,
        pupil_name=pupil_name,
        ref=row.ref,
        raised_at=row.raised_at,
        closed_at=row.closed_at,
        closed_reason=row.closed_reason,
        closed_by=row.closed_by,
        mail_state=row.mail_state,
        staff_id=row.staff_id,
    )


def _check_text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit or "\x00" in value:
        raise InputError(f"an alert's {what} must be 1 to {limit} characters")
    return value


class Alerts:
    """The DSL teams' alerts on this node."""

    def __init__(self, store: Store, mailer: Mailer) -> None:
        self.store = store
        self.mailer = mailer

    def today(self) -> date:
        return england_day(self.store.now())

    async def recipients(self, org_id: str, staff_id: str | None = None) -> list[str]:
        """E-mail addresses of the organisation's active DSL team, and of ``staff_id`` when
        given (the member of staff an alert also concerns): deduplicated, in order."""
        async with self.store.sessions() as s:
            rows = (
                await s.execute(
                    sa.select(Staff.id, Staff.email, Staff.roles)
                    .where(Staff.org_id == org_id, Staff.active.is_(True), Staff.email.is_not(None))
                    .order_by(Staff.username)
                )
            ).all()
        out: list[str] = []
        for person, email, roles in rows:
            wanted = set(roles) & {r.value for r in DSL_TEAM} or person == staff_id
            if email and wanted and valid_address(email) and email not in out:
                out.append(email)
        return out

    async def notify(
        self,
        org_id: str,
        *,
        key: str,
        level: AlertLevel,
        subject: str,
        message: str,
        pupil_id: str | None = None,
        ref: str | None = None,
        staff_id: str | None = None,
    ) -> bool:
        """Raise an alert unless this (key, level) was already raised today, or dismissed.

        ``staff_id``: a member of staff the alert also concerns (an overdue action's
        owner): they see it in the app too, and are e-mailed with the DSL team.
        Returns True if a new alert was raised (and e-mailed, when SMTP is configured).
        """
        if level not in LEVELS:
            raise InputError(f"unknown alert level {level!r}; levels: {', '.join(sorted(LEVELS))}")
        key = _check_text(key, "key", 200)
        subject = " ".join(_check_text(subject, "subject", 200).split())
        message = _check_text(message, "message", MAX_MESSAGE)
        if ref is not None:
            ref = _check_text(ref, "reference", 200)
        now = self.store.now()
        day = england_day(now)
        t = alerts_table
        recipients = await self.recipients(org_id, staff_id) if self.mailer.enabled else []
        mail_state: MailState = (
            "off" if not self.mailer.enabled else ("sending" if recipients else "none")
        )
        alert_id = str(uuid.uuid4())
        try:
            async with self.store.sessions() as s, s.begin():
                existing = (
                    await s.execute(
                        sa.select(t.c.level, t.c.day, t.c.closed_reason).where(
                            t.c.org_id == org_id, t.c.key == key
                        )
                    )
                ).all()
                if any(r.closed_reason == "dismissed" for r in existing):
                    return False
                if any(r.level == level and r.day == day for r in existing):
                    return False
                await s.execute(
                    sa.update(t)
                    .where(t.c.org_id == org_id, t.c.key == key, t.c.closed_at.is_(None))
                    .values(closed_at=now, closed_reason="superseded")
                )
                await s.execute(
                    sa.insert(t).values(
                        id=alert_id,
                        org_id=org_id,
                        key=key,
                        level=level,
                        day=day,
                        subject=subject,
                        message=message,
                        pupil_id=pupil_id,
                        ref=ref,
                        raised_at=now,
                        mail_state=mail_state,
                        mail_attempts=0,
                        staff_id=staff_id,
                    )
                )
        except sa_exc.IntegrityError:
            # Another process raised the same alert a moment ago (or the org is unknown).
            return False
        logger = log.warning if level in ("due", "overdue") else log.info
        logger("alert %s for %s [%s]: %s (alert %s)", level, org_id, key, subject, alert_id)
        targets = {"alert": alert_id}
        if pupil_id:
            targets["pupil"] = pupil_id
        if staff_id:
            targets["person"] = staff_id
        await self.store.record_event(
            "alert.raised", "node", org_id, targets, level=level, key=key, mail=mail_state
        )
        if mail_state == "none":
            log.warning(
                "no e-mail for alert %s: no active DSL or deputy DSL of %s has an e-mail address",
                alert_id,
                org_id,
            )
        if mail_state == "sending":
            await self._mail(alert_id, recipients, subject, message)
        return True

    async def _mail(self, alert_id: str, to: Sequence[str], subject: str, message: str) -> bool:
        t = alerts_table
        try:
            await self.mailer.send(
                to, f"Handover: {subject}", message + _MAIL_FOOTER.format(id=alert_id)
            )
        except HandoverError as err:
            log.warning("e-mail for alert %s not sent: %s", alert_id, err.diagnostics())
            state: MailState = "failed"
        else:
            state = "sent"
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                sa.update(t)
                .where(t.c.id == alert_id)
                .values(mail_state=state, mail_attempts=t.c.mail_attempts + 1)
            )
        return state == "sent"

    async def retry_mail(self) -> int:
        """Send again today's open alerts whose e-mail failed (a few times at most)."""
        if not self.mailer.enabled:
            return 0
        t = alerts_table
        day = self.today()
        async with self.store.sessions() as s:
            rows = (
                await s.execute(
                    sa.select(t.c.id, t.c.org_id, t.c.subject, t.c.message, t.c.staff_id).where(
                        t.c.mail_state == "failed",
                        t.c.mail_attempts < MAX_MAIL_ATTEMPTS,
                        t.c.closed_at.is_(None),
                        t.c.day == day,
                    )
                )
            ).all()
        sent = 0
        for row in rows:
            async with self.store.sessions() as s, s.begin():
                claimed = await s.execute(
                    sa.update(t)
                    .where(t.c.id == row.id, t.c.mail_state == "failed")
                    .values(mail_state="sending")
                )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            to = await self.recipients(row.org_id, row.staff_id)
            if not to:
                async with self.store.sessions() as s, s.begin():
                    await s.execute(sa.update(t).where(t.c.id == row.id).values(mail_state="none"))
                continue
            if await self._mail(row.id, to, row.subject, row.message):
                sent += 1
        return sent

    async def resolve(self, org_id: str, key: str) -> None:
        """Close the open alerts of ``key`` (the thing was done); a no-op if none is open."""
        t = alerts_table
        now = self.store.now()
        async with self.store.sessions() as s, s.begin():
            ids = (
                await s.scalars(
                    sa.select(t.c.id).where(
                        t.c.org_id == org_id, t.c.key == key, t.c.closed_at.is_(None)
                    )
                )
            ).all()
            if ids:
                await s.execute(
                    sa.update(t)
                    .where(t.c.id.in_(ids))
                    .values(closed_at=now, closed_reason="resolved")
                )
        for alert_id in ids:
            log.info("alert %s for %s [%s] resolved", alert_id, org_id, key)
            await self.store.record_event(
                "alert.resolved", "node", org_id, {"alert": alert_id}, key=key
            )

    async def open_keys(self, org_id: str, prefix: str) -> list[str]:
        """The keys starting with ``prefix`` that have an open alert (each once)."""
        t = alerts_table
        async with self.store.sessions() as s:
            return list(
                (
                    await s.scalars(
                        sa.select(t.c.key)
                        .where(
                            t.c.org_id == org_id,
                            t.c.key.startswith(prefix, autoescape=True),
                            t.c.closed_at.is_(None),
                        )
                        .distinct()
                        .order_by(t.c.key)
                    )
                ).all()
            )

    async def _require(self, actor: Actor, action: str, targets: dict[str, str]) -> None:
        try:
            require(actor, Permission.HANDLE_ALERTS)
        except PermissionDenied:
            await self.store.record_event(action, actor, actor.org_id, targets, outcome="refused")
            raise

    async def _names(self, actor: Actor, pupil_ids: set[str]) -> dict[str, str]:
        """Pupils' names, asked of the store when the alerts are read (never kept here)."""
        try:
            return await self.store.pupil_names(actor, pupil_ids)
        except PermissionDenied:
            return {}

    async def list(self, actor: Actor, *, open_only: bool = True) -> list[AlertRecord]:
        """The organisation's alerts, newest first: only open ones unless ``open_only`` is off.

        The DSL team sees them all; anyone else sees only the alerts that concern them
        (an overdue action they own).
        """
        t = alerts_table
        query = sa.select(t).where(t.c.org_id == actor.org_id)
        if not actor.has(Permission.HANDLE_ALERTS):
            query = query.where(t.c.staff_id == actor.staff_id)
        if open_only:
            query = query.where(t.c.closed_at.is_(None))
        async with self.store.sessions() as s:
            rows = (await s.execute(query.order_by(t.c.raised_at.desc(), t.c.id))).all()
        names = await self._names(actor, {r.pupil_id for r in rows if r.pupil_id})
        out = [_record(r, names.get(r.pupil_id) if r.pupil_id else None) for r in rows]
        await self.store.record_event("alert.list", actor, actor.org_id, {}, count=len(out))
        return out

    async def count_open(self, actor: Actor) -> int:
        """How many open alerts :meth:`list` would show ``actor`` (the web app's bell).

        A count reveals nothing of an alert's content, so it is not audited (it is asked
        on every page); reading the alerts themselves (:meth:`list`) is.
        """
        t = alerts_table
        query = (
            sa.select(sa.func.count())
            .select_from(t)
            .where(t.c.org_id == actor.org_id, t.c.closed_at.is_(None))
        )
        if not actor.has(Permission.HANDLE_ALERTS):
            query = query.where(t.c.staff_id == actor.staff_id)
        async with self.store.sessions() as s:
            return int(await s.scalar(query) or 0)

    async def dismiss(self, actor: Actor, alert_id: str) -> AlertRecord:
        """A DSL closes an alert by hand: its key raises no further alert (idempotent)."""
        targets = {"alert": alert_id}
        await self._require(actor, "alert.dismiss", targets)
        t = alerts_table
        now = self.store.now()
        async with self.store.sessions() as s, s.begin():
            row = (
                await s.execute(sa.select(t).where(t.c.id == alert_id, t.c.org_id == actor.org_id))
            ).first()
            if row is None:
                raise NotFoundError("there is no such alert in your organisation")
            if row.closed_at is None:
                await s.execute(
                    sa.update(t)
                    .where(t.c.id == alert_id)
                    .values(closed_at=now, closed_reason="dismissed", closed_by=actor.staff_id)
                )
            changed = row.closed_at is None
            row = (await s.execute(sa.select(t).where(t.c.id == alert_id))).one()
        if changed:
            await self.store.record_event(
                "alert.dismissed", actor, actor.org_id, targets, key=row.key
            )
        names = await self._names(actor, {row.pupil_id} if row.pupil_id else set())
        return _record(row, names.get(row.pupil_id) if row.pupil_id else None)
