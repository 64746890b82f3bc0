"""The store's pupils: the roll, finding a pupil by UPN, and importing Common Transfer Files."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.records import CTFImportResult, NewDestination, NewPupil, PupilChanges, PupilRecord
from transfer.ctf import CtfDestination, CTFDocument, CTFPupil, parse_ctf
from transfer.errors import ConflictError, HandoverError, InputError, NotFoundError, PolicyError
from transfer.identifiers import UPN_LENGTH, validate_upn
from transfer.store._common import _new_id, _pupil_record, _set_destination
from transfer.store.base import StoreBase
from transfer.store.keyring import KeyDestroyed, KeyRing
from transfer.store.permissions import Actor, Permission, require
from transfer.store.tables import Organisation, Pupil, PupilKey


class CTFAddressedElsewhereError(ConflictError):
    """The CTF is addressed to another school; it is imported only when the importer confirms."""

    slug = "ctf-addressed-elsewhere"
    title = "The CTF is addressed to another school"


def _from_ctf_destination(
    d: CtfDestination | None, own_urn: str | None, own_laestab: str | None
) -> NewDestination | None:
    """A CTF pupil's next school; none when the file names our own school (a roll file sent
    from the school to itself names it as every pupil's destination)."""
    if d is None:
        return None
    school = d.school
    if school is not None and (
        (school.urn is not None and school.urn == own_urn)
        or (school.laestab is not None and school.laestab == own_laestab)
    ):
        return None
    return NewDestination(
        kind=d.kind.value,
        urn=school.urn if school else None,
        laestab=school.laestab if school else None,
        name=school.name if school else None,
    )


class PupilStore(StoreBase):
    """Pupils and CTF import; the pupil checks every other part uses."""

    # ------------------------------------------------------------------- pupils

    async def _pupil_in_org(
        self, s: AsyncSession, actor: Actor, pupil_id: str, *, lock: bool = False
    ) -> Pupil:
        pupil = await s.get(Pupil, pupil_id, with_for_update=lock)
        if pupil is None or pupil.org_id != actor.org_id:
            raise NotFoundError("no such pupil in your organisation")
        return pupil

    async def pupil_id_for(self, actor: Actor, ref: str) -> str:
        """The id of the pupil a person named: by UPN (as staff know a pupil) or by id.

        A UPN is checked by the DfE's rules first (a wrong check letter, an
        unknown LA code... is :class:`~transfer.identifiers.InvalidUPN`, 400),
        then looked up in the actor's organisation (404 when no pupil of yours
        has it). An id (a UUID) is returned as it is: the operation that uses
        it finds the pupil, or answers that there is no such pupil, itself.
        Nothing is audited here; the operation the pupil was named for is.
        """
        return (await self.pupil_ids_for(actor, [ref]))[0]

    async def pupil_ids_for(self, actor: Actor, refs: Sequence[str]) -> list[str]:
        """:meth:`pupil_id_for` for several pupils at once (in the order given)."""
        out: list[str | None] = []
        upns: dict[str, str] = {}
        for ref in refs:
            text = ref.strip()
            if len(text) != UPN_LENGTH:
                try:
                    out.append(str(uuid.UUID(text)))
                    continue
                except ValueError:
                    pass
            upns[text] = validate_upn(text)
            out.append(None)
        if upns:
            await self._require(actor, Permission.READ_PUPILS, "store.pupil.find", {})
            async with self.sessions() as s:
                rows = await s.execute(
                    select(Pupil.upn, Pupil.id).where(
                        Pupil.org_id == actor.org_id, Pupil.upn.in_(set(upns.values()))
                    )
                )
                found = {upn: pupil_id for upn, pupil_id in rows.all()}
            for i, ref in enumerate(refs):
                if out[i] is None:
                    upn = upns[ref.strip()]
                    if upn not in found:
                        raise NotFoundError(f"no pupil with UPN {upn} in your organisation")
                    out[i] = found[upn]
        return [x for x in out if x is not None]

    @staticmethod
    async def _lock_live_pupils(s: AsyncSession, pupil_ids: Sequence[str]) -> None:
        """Lock the pupils' rows for this write and refuse erased ones.

        Called at the start of a write (PostgreSQL: ``FOR UPDATE``, so an erasure,
        which locks the same row, waits for us or we wait for it and then see it)
        and again after our rows are flushed (SQLite: the driver only begins the
        transaction at the first write, so this re-check runs under the write
        lock and sees an erasure that committed in between).
        """
        await s.flush()
        rows = (
            await s.execute(
                select(Pupil.id, Pupil.erased_at)
                .where(Pupil.id.in_(list(pupil_ids)))
                .order_by(Pupil.id)
                .with_for_update()
            )
        ).all()
        if len(rows) != len(set(pupil_ids)) or any(erased for _, erased in rows):
            raise KeyDestroyed("a pupil named here has been erased")

    async def _insert_pupil(
        self, s: AsyncSession, ring: KeyRing, org_id: str, data: NewPupil, upn: str
    ) -> Pupil:
        now = self.now()
        pupil = Pupil(
            id=_new_id(),
            org_id=org_id,
            upn=upn,
            surname=data.surname,
            forename=data.forename,
            dob=data.dob,
            sex=data.sex,
            year_group=data.year_group,
            on_roll_from=data.on_roll_from,
            leaving_date=data.leaving_date,
            created_at=now,
            updated_at=now,
        )
        _set_destination(pupil, data.destination)
        s.add(pupil)
        sealed = await ring.new_pupil_key(s, org_id, pupil.id)
        # The unit of work inserts pupils before pupil_keys (foreign-key order).
        s.add(PupilKey(pupil_id=pupil.id, sealed_key=sealed, created_at=now))
        return pupil

    async def create_pupil(self, actor: Actor, data: NewPupil) -> PupilRecord:
        await self._require(actor, Permission.MANAGE_PUPILS, "store.pupil.create", {})
        upn = validate_upn(data.upn)
        ring = self._ring()
        async with self._writing() as s:
            clash = await s.scalar(
                select(Pupil.id).where(Pupil.org_id == actor.org_id, Pupil.upn == upn)
            )
            if clash is not None:
                raise ConflictError("a pupil with this UPN is already in your organisation")
            pupil = await self._insert_pupil(s, ring, actor.org_id, data, upn)
            record = _pupil_record(pupil)
        await self._audit("store.pupil.create", actor, actor.org_id, {"pupil": record.id})
        if record.leaving_date is not None:
            await self._leaving_changed(actor, (record.id,))
        return record

    async def update_pupil(self, actor: Actor, pupil_id: str, changes: PupilChanges) -> PupilRecord:
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        await self._require(actor, Permission.MANAGE_PUPILS, "store.pupil.update", targets)
        async with self._writing() as s:
            pupil = await self._pupil_in_org(s, actor, pupil_id)
            if pupil.erased_at is not None:
                raise PolicyError("this pupil's records have been erased")
            for name in changes.model_fields_set:
                value = getattr(changes, name)
                if name == "destination":
                    _set_destination(pupil, value)
                elif value is not None:
                    setattr(pupil, name, value)
            pupil.updated_at = self.now()
            record = _pupil_record(pupil)
        await self._audit("store.pupil.update", actor, actor.org_id, targets)
        if changes.model_fields_set & {"leaving_date", "destination"}:
            await self._leaving_changed(actor, (record.id,))
        return record

    async def get_pupil(self, actor: Actor, pupil_id: str) -> PupilRecord:
        """One pupil of the actor's organisation, named by id or by UPN."""
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        await self._require(actor, Permission.READ_PUPILS, "store.pupil.read", targets)
        async with self.sessions() as s:
            record = _pupil_record(await self._pupil_in_org(s, actor, pupil_id))
        await self._audit("store.pupil.read", actor, actor.org_id, targets)
        return record

    async def pupil_names(self, actor: Actor, pupil_ids: Iterable[str]) -> dict[str, str]:
        """The names of these pupils of the actor's organisation, as lists show them.

        For the other areas' lists (alerts) that name the child for a reader with
        ``pupil.read``: they keep only the pupil's id and ask here when they are read,
        so no copy of a pupil's details lives outside the store. An erased pupil is
        "(erased)"; ids of other organisations' pupils are left out.
        """
        wanted = set(pupil_ids)
        if not wanted:
            return {}
        require(actor, Permission.READ_PUPILS)
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Pupil.id, Pupil.forename, Pupil.surname, Pupil.erased_at).where(
                        Pupil.org_id == actor.org_id, Pupil.id.in_(wanted)
                    )
                )
            ).all()
        return {
            r.id: ("(erased)" if r.erased_at else f"{r.forename} {r.surname}".strip()) for r in rows
        }

    async def find_pupil(self, actor: Actor, upn: str) -> PupilRecord:
        await self._require(actor, Permission.READ_PUPILS, "store.pupil.read", {})
        upn = validate_upn(upn)
        async with self.sessions() as s:
            pupil = await s.scalar(
                select(Pupil).where(Pupil.org_id == actor.org_id, Pupil.upn == upn)
            )
            if pupil is None:
                raise NotFoundError("no pupil with this UPN in your organisation")
            record = _pupil_record(pupil)
        await self._audit("store.pupil.read", actor, actor.org_id, {"pupil": record.id})
        return record

    async def list_pupils(self, actor: Actor, *, include_erased: bool = False) -> list[PupilRecord]:
        await self._require(actor, Permission.READ_PUPILS, "store.pupil.list", {})
        async with self.sessions() as s:
            query = select(Pupil).where(Pupil.org_id == actor.org_id)
            if not include_erased:
                query = query.where(Pupil.erased_at.is_(None))
            rows = await s.scalars(query.order_by(Pupil.surname, Pupil.forename, Pupil.id))
            records = [_pupil_record(p) for p in rows]
        await self._audit("store.pupil.list", actor, actor.org_id, {}, count=len(records))
        return records

    async def import_ctf(
        self, actor: Actor, data: bytes, *, force: bool = False
    ) -> CTFImportResult:
        """Import a CTF whole (one transaction), upserting pupils by UPN.

        A CTF addressed to another school (our own leavers' CTF, say) is imported
        only with ``force``: :class:`CTFAddressedElsewhereError` names that school.
        """
        await self._require(actor, Permission.IMPORT_CTF, "store.ctf.import", {})
        try:
            result = await self._import_ctf(actor, parse_ctf(data), force=force)
        except HandoverError as exc:
            await self._audit(
                "store.ctf.import", actor, actor.org_id, {}, "failed", reason=exc.slug
            )
            raise
        await self._audit(
            "store.ctf.import",
            actor,
            actor.org_id,
            {},
            created=result.created,
            updated=result.updated,
        )
        if result.leavers and result.pupil_ids:
            await self._leaving_changed(actor, result.pupil_ids)
        return result

    async def _import_ctf(
        self, actor: Actor, doc: CTFDocument, *, force: bool = False
    ) -> CTFImportResult:
        ring = self._ring()
        created = updated = 0
        ids: list[str] = []
        async with self._writing() as s:
            org = await s.get(Organisation, actor.org_id)
            if org is None or org.kind != "school":
                raise PolicyError("only a school imports Common Transfer Files")
            source = doc.header.source
            dest = doc.header.destination
            leavers = source.urn == org.urn or source.laestab == org.laestab
            joiners = (
                dest is not None
                and dest.school is not None
                and (dest.school.urn == org.urn or dest.school.laestab == org.laestab)
            )
            if not (leavers or joiners):
                raise InputError(
                    "this CTF is neither from nor addressed to your school "
                    f"(source LAESTAB {source.laestab})"
                )
            if not joiners and dest is not None and dest.school is not None and not force:
                there = dest.school
                laestab = there.laestab
                raise CTFAddressedElsewhereError(
                    f"this CTF is addressed to {there.name or 'another school'} "
                    f"(URN {there.urn or 'not given'}, LAESTAB {laestab}), not to your school: "
                    "it is the file sent to them. Import it here only to record your leavers' "
                    "leaving dates and destinations, and then confirm it (force)",
                    detail={
                        "destination_urn": there.urn,
                        "destination_laestab": laestab,
                        "destination_name": there.name,
                    },
                )
            upns = [cp.upn for cp in doc.pupils]
            existing: dict[str, Pupil] = {}
            for start in range(0, len(upns), 500):
                found = await s.scalars(
                    select(Pupil).where(
                        Pupil.org_id == org.id, Pupil.upn.in_(upns[start : start + 500])
                    )
                )
                existing.update((p.upn or "", p) for p in found)
            for cp in doc.pupils:
                pupil = existing.get(cp.upn)
                if pupil is None:
                    pupil = await self._insert_pupil(
                        s, ring, org.id, self._ctf_new_pupil(cp, leavers, org), cp.upn
                    )
                    created += 1
                else:
                    if pupil.dob != cp.dob:
                        raise ConflictError(
                            f"CTF line {cp.line}: UPN {cp.upn} is already on your roll with a "
                            "different date of birth; check the file (nothing was imported)",
                            detail={"line": cp.line},
                        )
                    pupil.surname = cp.surname
                    pupil.forename = cp.forename
                    pupil.sex = cp.sex
                    pupil.year_group = cp.year_group or pupil.year_group
                    if leavers:
                        pupil.leaving_date = cp.leaving_date or pupil.leaving_date
                        # As for the leaving date: a file without one keeps what is recorded.
                        next_school = _from_ctf_destination(cp.destination, org.urn, org.laestab)
                        if next_school is not None:
                            _set_destination(pupil, next_school)
                    pupil.updated_at = self.now()
                    updated += 1
                ids.append(pupil.id)
        return CTFImportResult(
            source_urn=doc.header.source.urn,
            source_laestab=doc.header.source.laestab,
            created=created,
            updated=updated,
            pupil_ids=tuple(ids),
            leavers=leavers,
        )

    @staticmethod
    def _ctf_new_pupil(cp: CTFPupil, leavers: bool, org: Organisation) -> NewPupil:
        return NewPupil(
            upn=cp.upn,
            surname=cp.surname,
            forename=cp.forename,
            dob=cp.dob,
            sex=cp.sex,
            year_group=cp.year_group,
            leaving_date=cp.leaving_date if leavers else None,
            destination=(
                _from_ctf_destination(cp.destination, org.urn, org.laestab) if leavers else None
            ),
        )
