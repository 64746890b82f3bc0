"""The store's retention: erasing a pupil (crypto-shredding), the retention sweep and policies."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.records import PupilRecord, RetentionPolicyRecord, RetentionReport, TombstoneRecord
from transfer.deadlines import retention_until
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.store import exports
from transfer.store._common import _new_id, _pupil_record, _set_destination, _tombstone_record
from transfer.store.permissions import Actor, Permission
from transfer.store.pupils import PupilStore
from transfer.store.tables import (
    Action,
    BodyMapMarkRow,
    Concern,
    ConcernAmendment,
    ConcernPupil,
    Contact,
    Document,
    Pupil,
    PupilEvent,
    PupilKey,
    RetentionPolicy,
    SealedField,
    Tombstone,
    Triage,
)


def _policy_record(p: RetentionPolicy) -> RetentionPolicyRecord:
    return RetentionPolicyRecord(
        key=p.key, org_id=p.org_id, description=p.description, basis="dob", years=p.years
    )


class RetentionStore(PupilStore):
    """Retention and erasure."""

    # ------------------------------------------------------ retention / erasure

    async def _erase(
        self, s: AsyncSession, pupil: Pupil, policy: str, by: str
    ) -> tuple[TombstoneRecord, Path] | None:
        if pupil.erased_at is not None:
            return None
        now = self.now()
        pid = pupil.id
        linked = (
            await s.scalars(select(ConcernPupil.concern_id).where(ConcernPupil.pupil_id == pid))
        ).all()
        counts: dict[str, int] = {"concerns": len(linked)}
        counts["sealed_fields"] = int(
            await s.scalar(
                select(func.count()).select_from(SealedField).where(SealedField.pupil_id == pid)
            )
            or 0
        )
        counts["documents"] = int(
            await s.scalar(
                select(func.count()).select_from(Document).where(Document.pupil_id == pid)
            )
            or 0
        )
        counts["body_map_marks"] = int(
            await s.scalar(
                select(func.count())
                .select_from(BodyMapMarkRow)
                .where(BodyMapMarkRow.pupil_id == pid)
            )
            or 0
        )
        await s.execute(
            update(PupilKey)
            .where(PupilKey.pupil_id == pid)
            .values(sealed_key=None, destroyed_at=now)
        )
        counts["pupil_events"] = int(
            await s.scalar(
                select(func.count()).select_from(PupilEvent).where(PupilEvent.pupil_id == pid)
            )
            or 0
        )
        await s.execute(delete(SealedField).where(SealedField.pupil_id == pid))
        await s.execute(delete(PupilEvent).where(PupilEvent.pupil_id == pid))
        await s.execute(delete(BodyMapMarkRow).where(BodyMapMarkRow.pupil_id == pid))
        await s.execute(delete(Document).where(Document.pupil_id == pid))
        await s.execute(delete(ConcernPupil).where(ConcernPupil.pupil_id == pid))
        still = (
            set(
                (
                    await s.scalars(
                        select(ConcernPupil.concern_id).where(ConcernPupil.concern_id.in_(linked))
                    )
                ).all()
            )
            if linked
            else set()
        )
        orphans = [c for c in linked if c not in still]
        counts["concerns_deleted"] = len(orphans)
        if orphans:
            for model in (Triage, Action, Contact, ConcernAmendment):
                await s.execute(delete(model).where(model.concern_id.in_(orphans)))
            await s.execute(delete(Document).where(Document.concern_id.in_(orphans)))
            await s.execute(delete(Concern).where(Concern.id.in_(orphans)))
        pupil.upn = None
        pupil.surname = ""
        pupil.forename = ""
        pupil.dob = None
        pupil.sex = "U"
        pupil.year_group = None
        pupil.on_roll_from = None
        pupil.leaving_date = None
        _set_destination(pupil, None)
        pupil.erased_at = now
        pupil.updated_at = now
        tomb = Tombstone(
            id=_new_id(),
            org_id=pupil.org_id,
            pupil_id=pid,
            erased_at=now,
            policy=policy,
            erased_by=by,
            erased=counts,
        )
        s.add(tomb)
        return _tombstone_record(tomb), self._blob_dir(pupil.org_id, pid)

    async def _after_erasure(self, directory: Path) -> None:
        """Remove the pupil's document files, any subject access export of the pupil an
        earlier version left on disk, and, on SQLite, old page images in the WAL."""
        await asyncio.to_thread(shutil.rmtree, directory, True)
        await asyncio.to_thread(exports.remove_legacy_exports, self.data_dir, directory.name)
        if self.engine.dialect.name == "sqlite":
            # secure_delete zeroes freed content in the database pages; the WAL still
            # holds the pages as they were until a checkpoint truncates it.
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def erase_pupil(self, actor: Actor, pupil_id: str) -> TombstoneRecord:
        """A DSL's decision to erase a pupil now (e.g. after a confirmed transfer)."""
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.erase", targets)
        async with self._writing() as s:
            pupil = await self._pupil_in_org(s, actor, pupil_id, lock=True)
            done = await self._erase(s, pupil, "manual", actor.staff_id)
            if done is None:
                existing = await s.scalar(select(Tombstone).where(Tombstone.pupil_id == pupil_id))
                if existing is None:
                    raise ConflictError("this pupil is marked erased but has no tombstone")
                return _tombstone_record(existing)
        record, directory = done
        await self._after_erasure(directory)
        await self._audit(
            "store.retention.erase", actor, actor.org_id, targets, policy=record.policy
        )
        return record

    async def run_retention(self, now: datetime | None = None) -> RetentionReport:
        """Erase every pupil whose retention date has passed. Idempotent; per pupil."""
        at = (now or self.now()).astimezone(UTC)
        today = at.date()
        async with self.sessions() as s:
            policies = (await s.scalars(select(RetentionPolicy))).all()
            default = next((p for p in policies if p.org_id is None), None)
            by_org = {p.org_id: p for p in policies if p.org_id is not None}
            if default is None and not by_org:
                return RetentionReport(ran_at=at, erased_pupils=(), tombstones=())
            shortest = min(p.years for p in policies)
            cutoff = date(today.year - shortest, 12, 31)
            candidates = (
                await s.execute(
                    select(Pupil.id, Pupil.org_id, Pupil.dob).where(
                        Pupil.erased_at.is_(None), Pupil.dob.is_not(None), Pupil.dob <= cutoff
                    )
                )
            ).all()
        due: list[tuple[str, RetentionPolicy]] = []
        for pid, org_id, dob in candidates:
            policy = by_org.get(org_id, default)
            if (
                policy is not None
                and dob is not None
                and retention_until(dob, policy.years) <= today
            ):
                due.append((pid, policy))
        tombs: list[TombstoneRecord] = []
        for pid, policy in due:
            async with self._writing() as s:
                pupil = await s.get(Pupil, pid, with_for_update=True)
                if pupil is None:
                    continue
                done = await self._erase(s, pupil, policy.key, "retention")
            if done is None:
                continue
            record, directory = done
            await self._after_erasure(directory)
            await self._audit(
                "store.retention.erase",
                "retention",
                record.org_id,
                {"pupil": pid},
                policy=policy.key,
            )
            tombs.append(record)
        return RetentionReport(
            ran_at=at, erased_pupils=tuple(t.pupil_id for t in tombs), tombstones=tuple(tombs)
        )

    async def retention_policy(self, actor: Actor) -> RetentionPolicyRecord:
        """The policy that applies to the actor's organisation (its own, or the node's)."""
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.policy", {})
        async with self.sessions() as s:
            own = await s.scalar(
                select(RetentionPolicy).where(RetentionPolicy.org_id == actor.org_id)
            )
            policy = own or await s.scalar(
                select(RetentionPolicy).where(RetentionPolicy.org_id.is_(None))
            )
            if policy is None:
                raise NotFoundError("no retention policy is configured on this node")
            return _policy_record(policy)

    async def set_retention_policy(
        self, actor: Actor, *, years: int, description: str
    ) -> RetentionPolicyRecord:
        """Give the actor's organisation its own policy: erase at date of birth + ``years``."""
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.policy.set", {})
        if not 1 <= years <= 120:
            raise InputError("a retention period must be 1 to 120 years")
        description = description.strip()
        if not description or len(description) > 500:
            raise InputError("a policy description must be 1 to 500 characters")
        async with self._writing() as s:
            await s.execute(delete(RetentionPolicy).where(RetentionPolicy.org_id == actor.org_id))
            policy = RetentionPolicy(
                id=_new_id(),
                org_id=actor.org_id,
                key=f"{actor.org_id}-dob-{years}",
                description=description,
                basis="dob",
                years=years,
            )
            s.add(policy)
            record = _policy_record(policy)
        await self._audit(
            "store.retention.policy.set", actor, actor.org_id, {"policy": record.key}, years=years
        )
        return record

    async def due_for_erasure(
        self, actor: Actor, *, within_days: int = 0
    ) -> list[tuple[PupilRecord, date]]:
        """The organisation's pupils whose retention date (by its policy) is on or before
        today + ``within_days``, with that date, soonest first (``retention.run``).

        The retention sweep erases those due today on its next run; the DSL may erase one
        sooner (:meth:`erase_pupil`). No policy: nobody is due.
        """
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.due", {})
        limit = self.now().astimezone(UTC).date() + timedelta(days=max(0, within_days))
        async with self.sessions() as s:
            own = await s.scalar(
                select(RetentionPolicy).where(RetentionPolicy.org_id == actor.org_id)
            )
            policy = own or await s.scalar(
                select(RetentionPolicy).where(RetentionPolicy.org_id.is_(None))
            )
            if policy is None:
                return []
            rows = await s.scalars(
                select(Pupil).where(
                    Pupil.org_id == actor.org_id,
                    Pupil.erased_at.is_(None),
                    Pupil.dob.is_not(None),
                    Pupil.dob <= date(limit.year - policy.years, 12, 31),
                )
            )
            due = [
                (_pupil_record(p), retention_until(p.dob, policy.years))
                for p in rows
                if p.dob is not None and retention_until(p.dob, policy.years) <= limit
            ]
        due.sort(key=lambda pair: (pair[1], pair[0].surname, pair[0].forename))
        await self._audit("store.retention.due", actor, actor.org_id, {}, count=len(due))
        return due

    async def tombstones(self, actor: Actor) -> list[TombstoneRecord]:
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.list", {})
        async with self.sessions() as s:
            rows = await s.scalars(
                select(Tombstone)
                .where(Tombstone.org_id == actor.org_id)
                .order_by(Tombstone.erased_at)
            )
            return [_tombstone_record(t) for t in rows]
