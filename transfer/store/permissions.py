"""Who may do what: the permission rules, in the domain layer.

Every store operation takes an :class:`Actor` and checks it here, so the rules
hold whatever the entry point (HTTP API, CLI, scheduler). The HTTP layer only
authenticates; it never decides on its own.

Roles (a person may hold several):

- ``dsl`` / ``deputy_dsl``: the DSL team; sees and manages all safeguarding
  content, including restricted categories; sends and receives transfers.
- ``head_teacher``: reads concerns and chronologies except restricted categories;
  records concerns.
- ``staff``: records concerns; sees only what they recorded themselves.
- ``administrator``: manages accounts and pupils' basic details; no concern
  content unless also in the DSL team.
- ``auditor``: the DPO's role: reads the audit trail, never concern content.

The two-person rule: nobody changes their own roles, and granting or removing
a role in ``PROTECTED_ROLES`` (the roles that read concern content), adding
an account with one, or resetting the password or authenticator of someone
who holds one, waits for a DSL's approval (``staff.approve``), never the
requester's own (``transfer.auth.approvals``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from schemas.roles import Permission as Permission
from schemas.roles import Role as Role
from transfer.errors import PolicyError

DSL_TEAM = frozenset({Role.DSL, Role.DEPUTY_DSL})
#: Roles that read concern content: granting or removing one, and resetting the password or
#: authenticator of someone who holds one, needs a DSL's approval (the two-person rule).
PROTECTED_ROLES = frozenset({Role.DSL, Role.DEPUTY_DSL, Role.HEAD_TEACHER})
#: Roles that can see concern content or manage accounts: TOTP is mandatory for them.
NEEDS_TOTP = frozenset({Role.DSL, Role.DEPUTY_DSL, Role.HEAD_TEACHER, Role.ADMINISTRATOR})


_DSL_TEAM_GRANTS = frozenset(Permission) - {Permission.MANAGE_STAFF, Permission.MANAGE_KEYS}

GRANTS: dict[Role, frozenset[Permission]] = {
    Role.DSL: _DSL_TEAM_GRANTS,
    Role.DEPUTY_DSL: _DSL_TEAM_GRANTS
    - {
        Permission.SEND_WITHOUT_CONSENT,
        Permission.RUN_RETENTION,
        Permission.MANAGE_CATEGORIES,
        Permission.APPROVE_STAFF_CHANGES,
    },
    Role.HEAD_TEACHER: frozenset(
        {
            Permission.READ_PUPILS,
            Permission.RECORD_CONCERN,
            Permission.READ_ALL_CONCERNS,
            Permission.READ_CHRONOLOGY,
            Permission.READ_REPORTS,
        }
    ),
    Role.STAFF: frozenset({Permission.READ_PUPILS, Permission.RECORD_CONCERN}),
    Role.ADMINISTRATOR: frozenset(
        {
            Permission.MANAGE_STAFF,
            Permission.MANAGE_PUPILS,
            Permission.READ_PUPILS,
            Permission.IMPORT_CTF,
            Permission.MANAGE_KEYS,
        }
    ),
    Role.AUDITOR: frozenset({Permission.READ_AUDIT}),
}


#: Who did something: a person signed in, or the node's operator on the command line.
ActorKind = Literal["staff", "operator"]


class PermissionDenied(PolicyError):
    """The signed-in person's roles do not allow this."""


#: Roles in plain words, for messages and alerts.
ROLE_LABELS: dict[Role, str] = {
    Role.DSL: "DSL",
    Role.DEPUTY_DSL: "deputy DSL",
    Role.HEAD_TEACHER: "head teacher",
    Role.STAFF: "staff",
    Role.ADMINISTRATOR: "administrator",
    Role.AUDITOR: "auditor",
}


def roles_in_words(roles: Iterable[str]) -> str:
    """``["dsl", "administrator"]`` as ``"DSL and administrator"`` (unknown values as given)."""
    words = [ROLE_LABELS[Role(r)] if r in Role._value2member_map_ else r for r in roles]
    if not words:
        return "no role"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def touches_protected(before: Iterable[str], after: Iterable[str]) -> bool:
    """Whether changing roles ``before`` into ``after`` grants or removes a protected role."""
    changed = set(before) ^ set(after)
    return any(r.value in changed for r in PROTECTED_ROLES)


def holds_protected(roles: Iterable[str]) -> bool:
    """Whether ``roles`` include a protected role (one that reads concern content)."""
    return bool(set(roles) & {r.value for r in PROTECTED_ROLES})


@dataclass(frozen=True)
class Actor:
    """A signed-in person (or an API token acting for one) within one organisation."""

    staff_id: str
    org_id: str
    roles: frozenset[Role]
    display_name: str = ""
    #: True when the node's operator acts for this person from the command line
    #: (``handover ... --as USERNAME``) without their password or code: it may do what
    #: the person's roles allow, and is audited and shown as the operator acting for them.
    operator: bool = False

    @property
    def kind(self) -> ActorKind:
        """``staff`` (the person, signed in) or ``operator`` (the operator acting for them)."""
        return "operator" if self.operator else "staff"

    def has(self, permission: Permission) -> bool:
        return any(permission in GRANTS[r] for r in self.roles)

    @property
    def in_dsl_team(self) -> bool:
        return bool(self.roles & DSL_TEAM)


#: What the audit log records as the actor when the operator acts for someone.
OPERATOR: Final = "operator"


def audit_actor(actor: Actor) -> tuple[str, dict[str, str]]:
    """The audit entry's actor for ``actor``, and the detail that goes with it.

    A person signed in is recorded by their staff id. The operator acting for
    someone (``actor.operator``) is recorded as ``operator``, with
    ``actor_kind: operator`` and ``on_behalf_of: <staff id>`` in the detail: it
    is never recorded as that person.
    """
    if actor.operator:
        return OPERATOR, {"actor_kind": OPERATOR, "on_behalf_of": actor.staff_id}
    return actor.staff_id, {}


def require(actor: Actor, permission: Permission, *, org_id: str | None = None) -> None:
    """Raise :class:`PermissionDenied` unless ``actor`` holds ``permission`` (in ``org_id``)."""
    if org_id is not None and org_id != actor.org_id:
        raise PermissionDenied("that record belongs to another organisation")
    if not actor.has(permission):
        raise PermissionDenied(
            f"your role does not allow this ({permission.value}); ask your DSL or administrator"
        )


def can_read_concern(actor: Actor, *, recorded_by: str, restricted: bool) -> bool:
    """Whether ``actor`` may read a concern's content."""
    if restricted and not actor.has(Permission.READ_RESTRICTED):
        return recorded_by == actor.staff_id
    if actor.has(Permission.READ_ALL_CONCERNS):
        return True
    return actor.has(Permission.RECORD_CONCERN) and recorded_by == actor.staff_id
