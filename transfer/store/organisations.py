"""The store's organisations (schools and agencies), their staff and their concern categories."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, cast

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keys import aead
from schemas.records import CategoryRecord, OrganisationKind, OrganisationRecord, StaffRecord
from transfer.errors import ConflictError, InputError, NotFoundError, PolicyError
from transfer.identifiers import validate_agency_id, validate_laestab, validate_urn
from transfer.store._common import _new_id
from transfer.store.base import StoreBase
from transfer.store.permissions import (
    Actor,
    Permission,
    PermissionDenied,
    Role,
    holds_protected,
    touches_protected,
)
from transfer.store.tables import Category, Concern, Organisation, Staff

_NEEDS_APPROVAL: Final = (
    "granting or removing the DSL, deputy DSL or head teacher role needs a DSL's approval: "
    "ask for it through the accounts service (PATCH /api/v1/staff/{id}), which a DSL approves"
)

#: Default categories seeded for every new organisation: key -> (label, restricted).
DEFAULT_CATEGORIES: Final[dict[str, tuple[str, bool]]] = {
    "child_protection": ("Child protection", False),
    "safeguarding": ("Safeguarding", False),
    "bullying": ("Bullying", False),
    "behaviour": ("Behaviour", False),
    "send": ("SEND", False),
    "medical": ("Medical", False),
    "attendance": ("Attendance", False),
    "domestic_abuse": ("Domestic abuse", True),
    "online_safety": ("Online safety", False),
    "mental_health": ("Mental health", False),
    "child_on_child_abuse": ("Child-on-child abuse", False),
    "radicalisation_prevent": ("Radicalisation (Prevent)", True),
    "neglect": ("Neglect", False),
    "self_harm": ("Self-harm", False),
}

AGENCY_KINDS: Final = frozenset({"social_care", "lado", "police", "other_agency"})
_CATEGORY_KEY = re.compile(r"[a-z][a-z0-9_]{1,63}")


def organisation_name(name: str) -> str:
    """An organisation's name, stripped, or :class:`InputError`."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InputError("an organisation's name must be 1 to 200 characters")
    return name


def new_school(*, name: str, urn: str, laestab: str) -> tuple[str, str, str]:
    """The (name, URN, LAESTAB) of a school to create, checked; what :meth:`create_school` checks.

    ``handover init`` checks every organisation with this before it creates any.
    """
    return organisation_name(name), validate_urn(urn), validate_laestab(laestab)


def new_agency(*, agency_id: str, name: str, kind: str) -> tuple[str, str, OrganisationKind]:
    """The (name, id, kind) of an agency to create, checked; what :meth:`create_agency` checks."""
    if kind not in AGENCY_KINDS:
        raise InputError(f"agency kind must be one of {', '.join(sorted(AGENCY_KINDS))}")
    return organisation_name(name), validate_agency_id(agency_id), cast(OrganisationKind, kind)


def staff_username(username: str) -> str:
    """A username, stripped, or :class:`InputError` (the rule every staff record follows)."""
    username = username.strip()
    if not username or len(username) > 100:
        raise InputError("a username must be 1 to 100 characters")
    return username


def _roles(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        try:
            role = Role(value)
        except ValueError:
            raise InputError(
                f"unknown role {value[:40]!r}; roles are: {', '.join(r.value for r in Role)}"
            ) from None
        if role.value not in out:
            out.append(role.value)
    if not out:
        raise InputError("a staff record needs at least one role")
    return out


def _org_record(org: Organisation) -> OrganisationRecord:
    return OrganisationRecord(
        id=org.id,
        name=org.name,
        kind=org.kind,
        urn=org.urn,
        laestab=org.laestab,
        created_at=org.created_at,
    )


def _staff_record(staff: Staff) -> StaffRecord:
    return StaffRecord(
        id=staff.id,
        org_id=staff.org_id,
        username=staff.username,
        display_name=staff.display_name,
        email=staff.email,
        roles=tuple(staff.roles),
        active=staff.active,
        created_at=staff.created_at,
    )


class OrganisationStore(StoreBase):
    """Organisations, staff and categories."""

    # ------------------------------------------------------------ organisations

    async def _create_org(
        self,
        *,
        org_id: str,
        name: str,
        kind: OrganisationKind,
        urn: str | None,
        laestab: str | None,
        operator: str,
    ) -> OrganisationRecord:
        name = organisation_name(name)
        ring = self._ring()
        async with self._writing() as s:
            if await s.get(Organisation, org_id) is not None:
                raise ConflictError(f"organisation {org_id!r} already exists on this node")
            org = Organisation(
                id=org_id,
                name=name,
                kind=kind,
                urn=urn,
                laestab=laestab,
                sealed_key=ring.seal_org_key(org_id, aead.new_key()),
                created_at=self.now(),
            )
            s.add(org)
            await s.flush()
            for key, (label, restricted) in DEFAULT_CATEGORIES.items():
                s.add(
                    Category(
                        id=_new_id(),
                        org_id=org_id,
                        key=key,
                        label=label,
                        restricted=restricted,
                        active=True,
                    )
                )
            record = _org_record(org)
        await self._audit("store.organisation.create", operator, org_id, {"org": org_id})
        return record

    async def create_school(
        self, *, name: str, urn: str, laestab: str, operator: str = "operator"
    ) -> OrganisationRecord:
        """Add a school (its id is its URN) and make its sealed key."""
        name, urn, laestab = new_school(name=name, urn=urn, laestab=laestab)
        return await self._create_org(
            org_id=urn, name=name, kind="school", urn=urn, laestab=laestab, operator=operator
        )

    async def create_agency(
        self, *, agency_id: str, name: str, kind: str, operator: str = "operator"
    ) -> OrganisationRecord:
        """Add an agency (children's social care, LADO, police, other) by its assigned id."""
        name, agency_id, org_kind = new_agency(agency_id=agency_id, name=name, kind=kind)
        return await self._create_org(
            org_id=agency_id,
            name=name,
            kind=org_kind,
            urn=None,
            laestab=None,
            operator=operator,
        )

    async def get_organisation(self, org_id: str) -> OrganisationRecord:
        async with self.sessions() as s:
            org = await s.get(Organisation, org_id)
            if org is None:
                raise NotFoundError(f"organisation {org_id[:64]!r} is not on this node")
            return _org_record(org)

    async def list_organisations(self) -> list[OrganisationRecord]:
        async with self.sessions() as s:
            rows = (await s.scalars(select(Organisation).order_by(Organisation.id))).all()
            return [_org_record(o) for o in rows]

    # -------------------------------------------------------------------- staff

    @staticmethod
    def check_staff_fields(
        username: str, display_name: str, roles: Iterable[str], email: str | None
    ) -> tuple[str, str, list[str]]:
        """Check a staff record's fields: the username and name stripped, the roles in order."""
        username = staff_username(username)
        display_name = display_name.strip()
        if not display_name or len(display_name) > 200:
            raise InputError("a display name must be 1 to 200 characters")
        if email is not None and (len(email) > 320 or "@" not in email):
            raise InputError("the email address is not valid")
        return username, display_name, _roles(roles)

    async def _add_staff(
        self,
        s: AsyncSession,
        org_id: str,
        username: str,
        display_name: str,
        roles: Iterable[str],
        email: str | None,
    ) -> Staff:
        username, display_name, role_list = self.check_staff_fields(
            username, display_name, roles, email
        )
        if await s.get(Organisation, org_id) is None:
            raise NotFoundError(f"organisation {org_id[:64]!r} is not on this node")
        clash = await s.scalar(
            select(Staff.id).where(Staff.org_id == org_id, Staff.username == username)
        )
        if clash is not None:
            raise ConflictError(f"the username {username!r} is already taken in this organisation")
        staff = Staff(
            id=_new_id(),
            org_id=org_id,
            username=username,
            display_name=display_name,
            email=email,
            roles=role_list,
            active=True,
            created_at=self.now(),
        )
        s.add(staff)
        return staff

    async def add_staff_row(
        self,
        s: AsyncSession,
        org_id: str,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        email: str | None,
    ) -> Staff:
        """Add a staff record inside the caller's transaction, without a permission check.

        Only for the accounts service applying an account a DSL has approved
        (``transfer.auth.approvals``); it audits the creation itself.
        """
        return await self._add_staff(s, org_id, username, display_name, roles, email)

    async def bootstrap_staff(
        self,
        org_id: str,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        email: str | None = None,
        operator: str = "operator",
    ) -> StaffRecord:
        """Operator action (``handover init``): add a staff record without an Actor."""
        async with self._writing() as s:
            staff = await self._add_staff(s, org_id, username, display_name, roles, email)
            record = _staff_record(staff)
        await self._audit("store.staff.create", operator, org_id, {"staff": record.id})
        return record

    async def create_staff(
        self,
        actor: Actor,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        email: str | None = None,
    ) -> StaffRecord:
        await self._require(actor, Permission.MANAGE_STAFF, "store.staff.create", {})
        roles = list(roles)
        if holds_protected(roles):
            await self._refuse(actor, "store.staff.create", {})
            raise PermissionDenied(_NEEDS_APPROVAL)
        async with self._writing() as s:
            staff = await self._add_staff(s, actor.org_id, username, display_name, roles, email)
            record = _staff_record(staff)
        await self._audit("store.staff.create", actor, actor.org_id, {"staff": record.id})
        return record

    async def _staff_in_org(self, s: AsyncSession, actor: Actor, staff_id: str) -> Staff:
        staff = await s.get(Staff, staff_id)
        if staff is None or staff.org_id != actor.org_id:
            raise NotFoundError("no such staff member in your organisation")
        return staff

    async def update_staff(
        self,
        actor: Actor,
        staff_id: str,
        *,
        roles: Iterable[str] | None = None,
        display_name: str | None = None,
        email: str | None = None,
    ) -> StaffRecord:
        targets = {"staff": staff_id}
        await self._require(actor, Permission.MANAGE_STAFF, "store.staff.update", targets)
        if roles is not None and staff_id == actor.staff_id:
            await self._refuse(actor, "store.staff.update", targets)
            raise PermissionDenied("nobody may change their own roles; ask another administrator")
        wanted = _roles(roles) if roles is not None else None
        if wanted is not None:
            async with self.sessions() as s:
                current = list((await self._staff_in_org(s, actor, staff_id)).roles)
            if touches_protected(current, wanted):
                await self._refuse(actor, "store.staff.update", targets)
                raise PermissionDenied(_NEEDS_APPROVAL)
        async with self._writing() as s:
            staff = await self._staff_in_org(s, actor, staff_id)
            if wanted is not None:
                if touches_protected(staff.roles, wanted):
                    raise ConflictError("the roles changed meanwhile; reload and try again")
                staff.roles = wanted
            if display_name is not None:
                display_name = display_name.strip()
                if not display_name or len(display_name) > 200:
                    raise InputError("a display name must be 1 to 200 characters")
                staff.display_name = display_name
            if email is not None:
                if len(email) > 320 or "@" not in email:
                    raise InputError("the email address is not valid")
                staff.email = email
            record = _staff_record(staff)
        await self._audit(
            "store.staff.update", actor, actor.org_id, targets, roles=",".join(record.roles)
        )
        return record

    async def deactivate_staff(self, actor: Actor, staff_id: str) -> StaffRecord:
        targets = {"staff": staff_id}
        await self._require(actor, Permission.MANAGE_STAFF, "store.staff.deactivate", targets)
        async with self._writing() as s:
            staff = await self._staff_in_org(s, actor, staff_id)
            staff.active = False
            record = _staff_record(staff)
        await self._audit("store.staff.deactivate", actor, actor.org_id, targets)
        return record

    async def get_staff(self, actor: Actor, staff_id: str) -> StaffRecord:
        targets = {"staff": staff_id}
        if staff_id != actor.staff_id:
            await self._require(actor, Permission.MANAGE_STAFF, "store.staff.read", targets)
        async with self.sessions() as s:
            record = _staff_record(await self._staff_in_org(s, actor, staff_id))
        await self._audit("store.staff.read", actor, actor.org_id, targets)
        return record

    async def list_staff(self, actor: Actor) -> list[StaffRecord]:
        await self._require(actor, Permission.MANAGE_STAFF, "store.staff.list", {})
        async with self.sessions() as s:
            rows = await s.scalars(
                select(Staff).where(Staff.org_id == actor.org_id).order_by(Staff.username)
            )
            records = [_staff_record(r) for r in rows]
        await self._audit("store.staff.list", actor, actor.org_id, {}, count=len(records))
        return records

    async def find_staff(self, org_id: str, username: str) -> StaffRecord | None:
        """For sign-in: the staff record with this username in ``org_id``, if any."""
        async with self.sessions() as s:
            staff = await s.scalar(
                select(Staff).where(Staff.org_id == org_id, Staff.username == username.strip())
            )
            return _staff_record(staff) if staff else None

    async def actor_for(self, staff_id: str) -> Actor:
        """The :class:`Actor` for an active staff member (after authentication)."""
        async with self.sessions() as s:
            staff = await s.get(Staff, staff_id)
            if staff is None:
                raise NotFoundError("no such staff member")
            if not staff.active:
                raise PolicyError("this account has been deactivated")
            return Actor(
                staff_id=staff.id,
                org_id=staff.org_id,
                roles=frozenset(Role(r) for r in staff.roles),
                display_name=staff.display_name,
            )

    # --------------------------------------------------------------- categories

    async def list_categories(self, actor: Actor) -> list[CategoryRecord]:
        async with self.sessions() as s:
            rows = await s.scalars(
                select(Category).where(Category.org_id == actor.org_id).order_by(Category.key)
            )
            return [
                CategoryRecord(key=c.key, label=c.label, restricted=c.restricted, active=c.active)
                for c in rows
            ]

    async def concern_categories(self, actor: Actor) -> list[CategoryRecord]:
        """The categories a concern may be logged under (active ones), for someone who may
        log a concern; anyone else is refused (and the refusal audited)."""
        await self._require(actor, Permission.RECORD_CONCERN, "store.concern.form", {})
        return [c for c in await self.list_categories(actor) if c.active]

    async def add_category(
        self, actor: Actor, *, key: str, label: str, restricted: bool = False
    ) -> CategoryRecord:
        targets = {"category": key[:64]}
        await self._require(actor, Permission.MANAGE_CATEGORIES, "store.category.add", targets)
        if not _CATEGORY_KEY.fullmatch(key):
            raise InputError("a category key is 2-64 lower-case letters, digits or underscores")
        label = label.strip()
        if not label or len(label) > 200:
            raise InputError("a category label must be 1 to 200 characters")
        async with self._writing() as s:
            exists = await s.scalar(
                select(Category.id).where(Category.org_id == actor.org_id, Category.key == key)
            )
            if exists is not None:
                raise ConflictError(f"category {key!r} already exists")
            s.add(
                Category(
                    id=_new_id(),
                    org_id=actor.org_id,
                    key=key,
                    label=label,
                    restricted=restricted,
                    active=True,
                )
            )
        await self._audit("store.category.add", actor, actor.org_id, targets, restricted=restricted)
        return CategoryRecord(key=key, label=label, restricted=restricted)

    async def set_category_restricted(
        self, actor: Actor, key: str, restricted: bool
    ) -> CategoryRecord:
        targets = {"category": key[:64]}
        await self._require(actor, Permission.MANAGE_CATEGORIES, "store.category.update", targets)
        async with self._writing() as s:
            cat = await s.scalar(
                select(Category).where(Category.org_id == actor.org_id, Category.key == key)
            )
            if cat is None:
                raise NotFoundError(f"no category {key[:64]!r}")
            cat.restricted = restricted
            await s.execute(
                update(Concern)
                .where(Concern.org_id == actor.org_id, Concern.category_key == key)
                .values(restricted=restricted)
            )
            record = CategoryRecord(
                key=cat.key, label=cat.label, restricted=restricted, active=cat.active
            )
        await self._audit(
            "store.category.update", actor, actor.org_id, targets, restricted=restricted
        )
        return record
