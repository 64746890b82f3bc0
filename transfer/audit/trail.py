"""The audit trail for the people who may read it (``audit.read``): the DPO, the DSL team.

"Who has looked at this child's file?": entries of the reader's own organisation,
narrowed by pupil, person, what was done and when, a page at a time, each said in
words (people by name and role, pupils by name, actions as :mod:`transfer.audit.actions`
says them). And the log's integrity: verification, the latest signed checkpoint, the
checkpoints partner schools hold or sent, and an export for an outside auditor.

Every method checks the permission here (whatever face calls it) and is itself audited
(``audit.read``; a refusal as ``refused``). Nothing here reads concern content: the
trail names pupils and people, never what was written about them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from schemas.auditing import AuditEvent, AuditSink, Outcome
from transfer.audit.actions import ACTION_GROUPS, OUTCOME_WORDS, action_words, group_actions
from transfer.audit.checkpoints import AnchorDamaged
from transfer.audit.export import MAX_INCLUSION_EXPORT, export_parts, export_stream
from transfer.audit.log import AuditLog
from transfer.audit.verifier import TamperError
from transfer.errors import IntegrityError, NotFoundError
from transfer.store.people import describe_actors, main_role, organisation_names, role_label
from transfer.store.permissions import (
    Actor,
    Permission,
    PermissionDenied,
    audit_actor,
    require,
)
from transfer.store.tables import Pupil, Staff

#: Entries on one page of the trail.
PAGE_SIZE: Final = 50
#: Pupils offered when a name matches several.
MAX_PUPIL_CHOICES: Final = 20
#: Targets that name a member of staff (shown by name and role, like the actor).
_PERSON_TARGETS: Final = ("staff", "person")


@dataclass(frozen=True)
class PupilChoice:
    """A pupil as the trail names one: by name, year group and UPN (never the id)."""

    upn: str
    name: str
    year_group: str | None = None

    def describe(self) -> str:
        year = f", Year {self.year_group}" if self.year_group else ""
        return f"{self.name}{year}"


@dataclass(frozen=True)
class StaffChoice:
    """A member of the organisation's staff, for the "Who" filter (by username)."""

    username: str
    name: str
    role: str | None

    def describe(self) -> str:
        return f"{self.name} ({self.role})" if self.role else self.name


@dataclass(frozen=True)
class TrailFilters:
    pupil: PupilChoice | None = None
    person: StaffChoice | None = None
    #: A key of :data:`ACTION_GROUPS`, or "".
    action: str = ""
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class TrailLine:
    """One entry in words."""

    number: int
    at: datetime
    what: str
    outcome: str
    who: str
    pupil: str
    about: str


@dataclass(frozen=True)
class TrailPage:
    lines: list[TrailLine]
    total: int
    page: int
    pages: int
    first: int


@dataclass(frozen=True)
class Verification:
    """What verifying the whole log found, in words."""

    intact: bool
    entries: int
    checkpoints: int
    #: The root of the tree over every entry (hex), when intact.
    tree_head: str
    #: The entry found wrong (its number) and the column, when that is what is wrong.
    entry: int | None = None
    column: str | None = None
    problem: str = ""
    waiting: int = 0


@dataclass(frozen=True)
class Witnessed:
    school: str
    size: int
    received_at: datetime
    ours: bool
    status: str


@dataclass(frozen=True)
class Integrity:
    entries: int
    latest_size: int | None
    latest_at: datetime | None
    latest_root: str
    latest_note: str
    vkey: str
    witnessed: list[Witnessed]


@dataclass(frozen=True)
class AuditExport:
    """An export for an outside auditor, as a tar stream built while it is sent."""

    name: str
    entries: int
    size: int
    chunks: AsyncIterator[bytes]


class AuditTrail:
    """The audit log as its readers see it (see the module docstring)."""

    def __init__(self, log: AuditLog, audit: AuditSink) -> None:
        self._log = log
        self._audit_sink = audit

    @property
    def engine(self) -> Any:
        return self._log.engine

    async def _audit(
        self,
        actor: Actor,
        what: str,
        outcome: Outcome = "ok",
        targets: dict[str, str] | None = None,
        **detail: str | int | bool | None,
    ) -> None:
        who, kind = audit_actor(actor)
        await self._audit_sink.record(
            AuditEvent(
                action="audit.read",
                actor=who,
                org=actor.org_id,
                targets=dict(targets or {}),
                outcome=outcome,
                detail={"what": what, **detail, **kind},
            )
        )

    async def _require(self, actor: Actor, what: str) -> None:
        try:
            require(actor, Permission.READ_AUDIT)
        except PermissionDenied:
            await self._audit(actor, what, "refused")
            raise

    # ------------------------------------------------------------ choosing

    async def find_pupils(self, actor: Actor, text: str) -> list[PupilChoice]:
        """Pupils of the actor's organisation whose UPN is ``text`` or whose name has
        every word of it, at most :data:`MAX_PUPIL_CHOICES` (erased pupils have no name)."""
        await self._require(actor, "pupils")
        words = [w for w in text.lower().split() if w][:5]
        if not words:
            return []
        name = sa.func.lower(Pupil.forename + " " + Pupil.surname)
        q = (
            sa.select(Pupil.upn, Pupil.forename, Pupil.surname, Pupil.year_group)
            .where(Pupil.org_id == actor.org_id, Pupil.erased_at.is_(None), Pupil.upn.is_not(None))
            .where(
                sa.or_(
                    Pupil.upn == text.strip().upper(),
                    sa.and_(*(name.contains(w, autoescape=True) for w in words)),
                )
            )
            .order_by(Pupil.surname, Pupil.forename, Pupil.upn)
            .limit(MAX_PUPIL_CHOICES)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [PupilChoice(str(r.upn), f"{r.forename} {r.surname}", r.year_group) for r in rows]

    async def _pupil_ids(self, actor: Actor, upns: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(upns))
        if not wanted:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(Pupil.upn, Pupil.id).where(
                    Pupil.org_id == actor.org_id, Pupil.upn.in_(wanted)
                )
            )
            return {str(upn): str(pid) for upn, pid in rows}

    async def pupil(self, actor: Actor, upn: str) -> PupilChoice:
        """The pupil of the actor's organisation with this UPN."""
        found = [p for p in await self.find_pupils(actor, upn) if p.upn == upn.strip().upper()]
        if not found:
            raise NotFoundError("no pupil with this UPN in your organisation")
        return found[0]

    async def staff(self, actor: Actor) -> list[StaffChoice]:
        """Everyone on the organisation's staff (active or not), by name."""
        await self._require(actor, "staff")
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(Staff.username, Staff.display_name, Staff.roles)
                .where(Staff.org_id == actor.org_id)
                .order_by(Staff.display_name, Staff.username)
            )
            return [StaffChoice(str(u), str(n), role_label(main_role(r or []))) for u, n, r in rows]

    # ------------------------------------------------------------ the trail

    async def search(
        self, actor: Actor, filters: TrailFilters, *, page: int = 1, page_size: int = PAGE_SIZE
    ) -> TrailPage:
        """A page of the organisation's entries matching ``filters``, newest first."""
        await self._require(actor, "trail")
        query: dict[str, Any] = {"org": actor.org_id}
        targets: dict[str, str] = {}
        if filters.pupil is not None:
            ids = await self._pupil_ids(actor, [filters.pupil.upn])
            query["pupil"] = targets["pupil"] = ids.get(filters.pupil.upn, "-")
        if filters.person is not None:
            async with self.engine.connect() as conn:
                staff_id = await conn.scalar(
                    sa.select(Staff.id).where(
                        Staff.org_id == actor.org_id, Staff.username == filters.person.username
                    )
                )
            query["person"] = targets["staff"] = str(staff_id or "-")
        if filters.action:
            query["action"] = group_actions(filters.action) or ("-",)
        if filters.since is not None:
            query["since"] = filters.since
        if filters.until is not None:
            query["until"] = filters.until
        total = await self._log.count(**query)
        pages = max(1, -(-total // page_size))
        page = min(max(1, page), pages)
        shown = await self._log.show(
            **query, limit=page_size, offset=(page - 1) * page_size, newest_first=True
        )
        lines = await self._in_words(actor, [s.entry for s in shown], [s.seq for s in shown])
        await self._audit(
            actor, "trail", targets=targets, action=filters.action or None, found=total, page=page
        )
        return TrailPage(lines, total, page, pages, (page - 1) * page_size + 1)

    async def _in_words(
        self, actor: Actor, entries: Sequence[Any], seqs: Sequence[int]
    ) -> list[TrailLine]:
        people_ids: list[str | None] = []
        for e in entries:
            people_ids.append(e.actor)
            people_ids += [e.targets[k] for k in _PERSON_TARGETS if k in e.targets]
            behalf = e.detail.get("on_behalf_of")
            if e.detail.get("actor_kind") == "operator" and isinstance(behalf, str):
                people_ids.append(behalf)
        pupil_ids = sorted({e.pupil for e in entries if e.pupil})
        async with self.engine.connect() as conn:
            who = await describe_actors(conn, people_ids)
            rows = (
                (
                    await conn.execute(
                        sa.select(
                            Pupil.id,
                            Pupil.forename,
                            Pupil.surname,
                            Pupil.year_group,
                            Pupil.erased_at,
                        ).where(Pupil.org_id == actor.org_id, Pupil.id.in_(pupil_ids))
                    )
                ).all()
                if pupil_ids
                else []
            )
        pupils = {
            str(r.id): "a pupil whose records were erased"
            if r.erased_at is not None
            else PupilChoice("", f"{r.forename} {r.surname}", r.year_group).describe()
            for r in rows
        }
        out = []
        for seq, e in zip(seqs, entries, strict=True):
            actor_words = who[e.actor].describe()
            behalf = e.detail.get("on_behalf_of")
            if e.detail.get("actor_kind") == "operator" and isinstance(behalf, str):
                actor_words += f", acting for {who[behalf].describe()}"
            about = [who[e.targets[k]].describe() for k in _PERSON_TARGETS if k in e.targets]
            out.append(
                TrailLine(
                    number=seq,
                    at=e.time,
                    what=action_words(e.action),
                    outcome=OUTCOME_WORDS.get(e.outcome, e.outcome.capitalize()),
                    who=actor_words,
                    pupil=pupils.get(e.pupil, "a pupil of another school") if e.pupil else "",
                    about=", ".join(about),
                )
            )
        return out

    # ------------------------------------------------------------ integrity

    async def verify(self, actor: Actor) -> Verification:
        """Recompute the whole log and check it (``audit verify``), in words."""
        await self._require(actor, "verify")
        checkpoints = len(await self._log.checkpoints())
        waiting = await self._log.intents_waiting()
        try:
            size = await self._log.verify()
        except TamperError as err:
            result = Verification(
                intact=False,
                entries=await self._log.size(),
                checkpoints=checkpoints,
                tree_head="",
                entry=err.seq,
                column=err.column,
                problem=err.message,
                waiting=waiting,
            )
        except (AnchorDamaged, IntegrityError) as err:
            result = Verification(
                intact=False,
                entries=await self._log.size(),
                checkpoints=checkpoints,
                tree_head="",
                problem=err.message,
                waiting=waiting,
            )
        else:
            result = Verification(
                intact=True,
                entries=size,
                checkpoints=checkpoints,
                tree_head=(await self._log.root(size)).hex(),
                waiting=waiting,
            )
        await self._audit(
            actor,
            "verify",
            "ok" if result.intact else "failed",
            entries=result.entries,
            entry=result.entry,
        )
        return result

    async def integrity(self, actor: Actor) -> Integrity:
        """The latest signed checkpoint, and the checkpoints partner schools witnessed."""
        await self._require(actor, "integrity")
        latest = await self._log.latest_checkpoint()
        rows = await self._log.witnessed()
        async with self.engine.connect() as conn:
            names = await organisation_names(conn, [str(r["from_org"]) for r in rows])
        witnessed = [
            Witnessed(
                school=names.get(str(r["from_org"]), "a partner not in the directory"),
                size=int(r["size"]),
                received_at=r["received_at"],
                ours=r["origin"] == self._log.origin,
                status=str(r["status"]),
            )
            for r in rows
        ]
        witnessed.sort(key=lambda w: w.received_at, reverse=True)
        result = Integrity(
            entries=await self._log.size(),
            latest_size=latest.size if latest else None,
            latest_at=latest.created_at if latest else None,
            latest_root=latest.checkpoint.root.hex() if latest else "",
            latest_note=latest.note if latest else "",
            vkey=(await self._log.verifier()).vkey,
            witnessed=witnessed,
        )
        await self._audit(actor, "integrity")
        return result

    async def export(self, actor: Actor, *, at: datetime) -> AuditExport:
        """An export of the organisation's entries for an outside auditor (``audit export``
        filtered to the organisation, each entry with its inclusion proof against a newly
        signed checkpoint), as a tar stream; nothing of it is written on the node."""
        await self._require(actor, "export")
        org = await self._org_slug(actor)
        parts = await export_parts(self._log, filters={"org": actor.org_id})
        name = f"audit-export-{org}-{at.strftime('%Y%m%dT%H%M%SZ')}"
        await self._audit(actor, "export", entries=parts.summary.entries, size=parts.summary.size)
        return AuditExport(
            name=name,
            entries=parts.summary.entries,
            size=parts.summary.size,
            chunks=export_stream(parts, name, mtime=int(at.timestamp())),
        )

    async def _org_slug(self, actor: Actor) -> str:
        async with self.engine.connect() as conn:
            names = await organisation_names(conn, [actor.org_id])
        name = names.get(actor.org_id, "organisation")
        slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
        return "-".join(p for p in slug.split("-") if p)[:60] or "organisation"


__all__ = [
    "ACTION_GROUPS",
    "MAX_INCLUSION_EXPORT",
    "PAGE_SIZE",
    "AuditExport",
    "AuditTrail",
    "Integrity",
    "PupilChoice",
    "StaffChoice",
    "TrailFilters",
    "TrailLine",
    "TrailPage",
    "Verification",
    "Witnessed",
]
