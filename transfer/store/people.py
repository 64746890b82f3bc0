"""Who an id names, in words: staff by name and role, and the other actors the audit log holds.

Records and audit entries name people by id (a member of staff's UUID). Whatever shows
them to a person says who that is instead: "Rita Dee (DSL)". This module has the words
(role labels, the other kinds of actor) and the lookups; the services that show records
use it, so every face says the same.

Actors in the audit log are a staff id, ``"operator"`` (someone at the node's command line
acting as the operator), ``"node"`` or nothing (the node itself: a sweep, a delivery),
``"peer:<org id>"`` (another organisation's node), or, in a few old entries, an
organisation id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.records import (
    ActionRecord,
    ConcernRecord,
    ContactRecord,
    DocumentRef,
    PersonRecord,
    PupilEventRecord,
    TriageRecord,
)
from transfer.store.tables import Organisation, Staff

__all__ = [
    "NODE",
    "OPERATOR",
    "ROLE_LABELS",
    "Person",
    "describe_actors",
    "main_role",
    "organisation_names",
    "people_records",
    "person_from_record",
    "recorded_by",
    "role_label",
    "staff_of_org",
    "staff_people",
    "unknown",
]

#: How a role is said, most senior first (the order :func:`main_role` picks in).
ROLE_LABELS: Mapping[str, str] = {
    "dsl": "DSL",
    "deputy_dsl": "Deputy DSL",
    "head_teacher": "Head teacher",
    "administrator": "Administrator",
    "auditor": "Auditor",
    "staff": "Staff",
}

PersonKind = Literal["staff", "operator", "node", "organisation", "unknown"]


def main_role(roles: Iterable[str]) -> str | None:
    """The most senior of ``roles`` (a role key), or None."""
    held = set(roles)
    for role in ROLE_LABELS:
        if role in held:
            return role
    return min(held) if held else None


def role_label(role: str | None) -> str | None:
    """A role key as people say it (``dsl`` -> ``DSL``)."""
    if role is None:
        return None
    return ROLE_LABELS.get(role, role.replace("_", " ").capitalize())


@dataclass(frozen=True)
class Person:
    """Someone (or something) an id names, ready to show."""

    name: str
    role: str | None = None
    organisation: str | None = None
    kind: PersonKind = "staff"

    def describe(self, *, with_organisation: bool = False) -> str:
        """``Rita Dee (DSL)``; with the organisation, ``Rita Dee (DSL, Riverside Academy)``."""
        extra = [self.role] if self.role else []
        if with_organisation and self.organisation:
            extra.append(self.organisation)
        return f"{self.name} ({', '.join(extra)})" if extra else self.name


OPERATOR = Person("the operator (command line)", kind="operator")
NODE = Person("the node itself (automatic)", kind="node")


def unknown(value: str) -> Person:
    return Person(f"unknown ({value[:64]})", kind="unknown")


def staff_of_org(name: str) -> Person:
    """Someone at another organisation whose name this node does not hold."""
    return Person(f"a member of staff at {name}", kind="staff", organisation=name)


def recorded_by(
    record: ConcernRecord
    | TriageRecord
    | ActionRecord
    | ContactRecord
    | DocumentRef
    | PupilEventRecord,
) -> str | None:
    """The id of who recorded (decided, created, uploaded) a record; None: the node."""
    if isinstance(record, TriageRecord):
        return record.decided_by
    if isinstance(record, ActionRecord):
        return record.created_by
    if isinstance(record, DocumentRef):
        return record.uploaded_by
    return record.recorded_by


async def staff_people(
    conn: AsyncConnection, ids: Iterable[str], *, org_id: str | None = None
) -> dict[str, Person]:
    """The members of staff among ``ids`` (only of ``org_id`` when given), by id."""
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    q = (
        select(Staff.id, Staff.display_name, Staff.roles, Organisation.name)
        .join(Organisation, Organisation.id == Staff.org_id)
        .where(Staff.id.in_(wanted))
    )
    if org_id is not None:
        q = q.where(Staff.org_id == org_id)
    out: dict[str, Person] = {}
    for staff_id, name, roles, org_name in await conn.execute(q):
        out[str(staff_id)] = Person(
            name=str(name),
            role=role_label(main_role(roles or [])),
            organisation=str(org_name),
        )
    return out


async def people_records(
    conn: AsyncConnection, ids: Iterable[str], *, org_id: str
) -> tuple[PersonRecord, ...]:
    """The members of ``org_id``'s staff among ``ids``, as records (for a package or an
    export), in id order."""
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return ()
    rows = await conn.execute(
        select(Staff.id, Staff.display_name, Staff.roles)
        .where(Staff.id.in_(wanted), Staff.org_id == org_id)
        .order_by(Staff.id)
    )
    return tuple(
        PersonRecord(id=str(i), name=str(name)[:200], role=main_role(roles or []))
        for i, name, roles in rows
    )


def person_from_record(record: PersonRecord, organisation: str | None = None) -> Person:
    return Person(record.name, role_label(record.role), organisation)


async def _organisation_names(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, str]:
    from transfer.directory.tables import EntryRow

    if not ids:
        return {}
    names: dict[str, str] = {}
    for org_id, entry in await conn.execute(
        select(EntryRow.org_id, EntryRow.entry).where(EntryRow.org_id.in_(ids))
    ):
        try:
            names[str(org_id)] = str(json.loads(entry)["name"])
        except (ValueError, KeyError, TypeError):
            continue
    for org_id, name in await conn.execute(
        select(Organisation.id, Organisation.name).where(Organisation.id.in_(ids))
    ):
        names[str(org_id)] = str(name)  # our own organisations' names win
    return names


async def describe_actors(
    conn: AsyncConnection, values: Iterable[str | None]
) -> dict[str | None, Person]:
    """Every actor value the audit log may hold, as a :class:`Person` (see the module
    docstring); an id nothing here knows is shown as ``unknown (<id>)``."""
    distinct = set(values)
    out: dict[str | None, Person] = {None: NODE, "node": NODE, "operator": OPERATOR}
    rest = [v for v in distinct if v is not None and v not in out]
    staff = await staff_people(conn, rest)
    orgs = {v: v.removeprefix("peer:") for v in rest if v not in staff}
    names = await _organisation_names(conn, sorted(set(orgs.values())))
    for value in rest:
        if value in staff:
            out[value] = staff[value]
        elif orgs[value] in names:
            org_name = names[orgs[value]]
            out[value] = Person(
                f"{org_name}'s node" if value.startswith("peer:") else org_name,
                kind="organisation",
            )
        else:
            out[value] = unknown(value)
    return out


async def organisation_names(conn: AsyncConnection, ids: Iterable[str | None]) -> dict[str, str]:
    """Names of organisations (ours, then the directory's) among ``ids``."""
    return await _organisation_names(conn, sorted({i for i in ids if i}))
