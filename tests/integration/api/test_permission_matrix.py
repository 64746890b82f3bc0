"""Every role against every API operation: allowed (2xx) or refused (403), from the API.

The expectations are written out by hand from the roles' descriptions (issue 2
and ``transfer.store.permissions``), not derived from the code under test.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse

from schemas.records import NewAction, NewConcern, NewPupil, PupilRecord
from tests.integration.api.conftest import Api
from tests.unit.auth.support import Person
from transfer.auth.records import ApprovalRecord
from transfer.identifiers import upn_check_letter
from transfer.store.permissions import Actor, Role

CTF = Path(__file__).resolve().parents[2] / "assets" / "ctf" / "leavers_801_2000.xml"

DSL, DEPUTY, HEAD, STAFF, ADMIN, AUDITOR = (
    Role.DSL,
    Role.DEPUTY_DSL,
    Role.HEAD_TEACHER,
    Role.STAFF,
    Role.ADMINISTRATOR,
    Role.AUDITOR,
)
EVERYONE = frozenset(Role)
DSL_TEAM = frozenset({DSL, DEPUTY})
#: Roles that may log a concern (and read what they logged).
LOGGERS = frozenset({DSL, DEPUTY, HEAD, STAFF})
READERS = frozenset({DSL, DEPUTY, HEAD, STAFF, ADMIN})
RECORDERS = frozenset({DSL, DEPUTY, HEAD, STAFF})
PUPIL_MANAGERS = frozenset({DSL, DEPUTY, ADMIN})
ADMINS = frozenset({ADMIN})
#: Roles that read the audit trail (audit.read).
AUDIT_READERS = frozenset({DSL, DEPUTY, AUDITOR})

_serial = itertools.count()


@dataclass
class World:
    api: Api
    dsl: Actor
    admin: Actor
    pupil: PupilRecord
    concern_id: str

    async def fresh_upn(self) -> str:
        body = f"801200{next(_serial) + 100:06d}"
        return upn_check_letter(body) + body

    async def fresh_staff(self) -> str:
        p = await self.api.node.person(f"target{next(_serial)}", [STAFF])
        return p.staff.id

    async def fresh_action(self) -> str:
        a = await self.api.node.store.add_action(self.dsl, self.concern_id, NewAction(text="call"))
        return a.id

    async def fresh_document(self) -> str:
        async def one() -> AsyncIterator[bytes]:
            yield b"scan of a letter"

        ref = await self.api.node.store.add_document(
            self.dsl,
            self.pupil.id,
            one(),
            filename="letter.txt",
        )
        return ref.id


Call = Callable[[World, dict[str, str]], Awaitable[ClientResponse]]


@dataclass(frozen=True)
class Op:
    name: str
    allowed: frozenset[Role]
    call: Call
    ok: int = 200
    #: Status for a role that is refused (404 where the store hides what exists).
    refused: dict[Role, int] | None = None


def concern_body(w: World) -> dict[str, object]:
    return {
        "pupil_ids": [w.pupil.id],
        "category": "bullying",
        "happened_at": "2026-09-07T08:30:00+00:00",
        "account": "Pushed in the queue.",
    }


async def _ctf(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.post(
        "/api/v1/ctf-imports?force=true",  # the sample is a leavers' CTF (to another school)
        data=CTF.read_bytes(),
        headers={**h, "Content-Type": "application/xml"},
    )


async def _new_pupil(w: World, h: dict[str, str]) -> ClientResponse:
    body = {
        "upn": await w.fresh_upn(),
        "surname": "Ng",
        "forename": "Li",
        "dob": "2015-01-02",
        "sex": "M",
    }
    return await w.api.client.post("/api/v1/pupils", json=body, headers=h)


async def _new_staff(w: World, h: dict[str, str]) -> ClientResponse:
    body = {
        "username": f"new{next(_serial)}",
        "display_name": "New",
        "roles": ["staff"],
        "password": "a long and unusual phrase",
    }
    return await w.api.client.post("/api/v1/staff", json=body, headers=h)


async def _deactivate(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.post(f"/api/v1/staff/{await w.fresh_staff()}/deactivate", headers=h)


async def _unlock(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.post(f"/api/v1/staff/{await w.fresh_staff()}/unlock", headers=h)


async def _reset_pw(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.put(
        f"/api/v1/staff/{await w.fresh_staff()}/password",
        json={"password": "another long phrase"},
        headers=h,
    )


async def _reset_totp(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.delete(f"/api/v1/staff/{await w.fresh_staff()}/totp", headers=h)


async def _fresh_dsl(w: World) -> str:
    p = await w.api.node.person(f"dsltarget{next(_serial)}", [DSL])
    return p.staff.id


async def _fresh_approval(w: World) -> str:
    """An account change the administrator asked for, waiting for a DSL."""
    waiting = await w.api.node.accounts.set_roles(
        w.admin, await w.fresh_staff(), ["staff", "head_teacher"]
    )
    assert isinstance(waiting, ApprovalRecord)
    return waiting.id


async def _grant_dsl(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.patch(
        f"/api/v1/staff/{await w.fresh_staff()}", json={"roles": ["staff", "dsl"]}, headers=h
    )


async def _make_oneself_dsl(w: World, h: dict[str, str]) -> ClientResponse:
    me = await (await w.api.client.get("/api/v1/session", headers=h)).json()
    return await w.api.client.patch(
        f"/api/v1/staff/{me['staff_id']}", json={"roles": [*me["roles"], "dsl"]}, headers=h
    )


async def _new_dsl(w: World, h: dict[str, str]) -> ClientResponse:
    body = {
        "username": f"newdsl{next(_serial)}",
        "display_name": "New DSL",
        "roles": ["dsl"],
        "password": "a long and unusual phrase",
    }
    return await w.api.client.post("/api/v1/staff", json=body, headers=h)


async def _reset_dsl_pw(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.put(
        f"/api/v1/staff/{await _fresh_dsl(w)}/password",
        json={"password": "another long phrase"},
        headers=h,
    )


async def _reset_dsl_totp(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.delete(f"/api/v1/staff/{await _fresh_dsl(w)}/totp", headers=h)


async def _approve(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.post(
        f"/api/v1/staff-approvals/{await _fresh_approval(w)}/approve", headers=h
    )


async def _decline(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.post(
        f"/api/v1/staff-approvals/{await _fresh_approval(w)}/decline", headers=h
    )


async def _patch_staff(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.patch(
        f"/api/v1/staff/{await w.fresh_staff()}", json={"display_name": "Renamed"}, headers=h
    )


async def _read_staff(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.get(f"/api/v1/staff/{await w.fresh_staff()}", headers=h)


async def _read_own_staff(w: World, h: dict[str, str]) -> ClientResponse:
    me = await (await w.api.client.get("/api/v1/session", headers=h)).json()
    return await w.api.client.get(f"/api/v1/staff/{me['staff_id']}", headers=h)


async def _complete(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.post(f"/api/v1/actions/{await w.fresh_action()}/complete", headers=h)


async def _download(w: World, h: dict[str, str]) -> ClientResponse:
    return await w.api.client.get(f"/api/v1/documents/{await w.fresh_document()}", headers=h)


def get(path: str) -> Call:
    async def call(w: World, h: dict[str, str]) -> ClientResponse:
        return await w.api.client.get(path.format(w=w), headers=h)

    return call


def send(method: str, path: str, body: Callable[[World], object] | None = None) -> Call:
    async def call(w: World, h: dict[str, str]) -> ClientResponse:
        data = body(w) if body else None
        return await w.api.client.request(method, path.format(w=w), headers=h, json=data)

    return call


OPERATIONS: list[Op] = [
    Op("who am I", EVERYONE, get("/api/v1/session")),
    Op("list own tokens", EVERYONE, get("/api/v1/tokens")),
    Op("list categories", EVERYONE, get("/api/v1/categories")),
    Op("list staff", ADMINS, get("/api/v1/staff")),
    Op("create staff", ADMINS, _new_staff, 201),
    Op("read another's staff record", ADMINS, _read_staff),
    Op("read one's own staff record", EVERYONE, _read_own_staff),
    Op("rename staff", ADMINS, _patch_staff),
    Op("deactivate staff", ADMINS, _deactivate),
    Op("unlock staff", ADMINS, _unlock, 204),
    Op("reset a password", ADMINS, _reset_pw, 204),
    Op("reset TOTP", ADMINS, _reset_totp, 204),
    Op("list sign-in problems", ADMINS, get("/api/v1/sign-in-problems")),
    # The two-person rule (issue 11): a protected role or a DSL's credentials change only
    # when a DSL other than whoever asked approves; nobody changes their own roles.
    Op("make oneself a DSL", frozenset(), _make_oneself_dsl),
    Op("ask to grant the DSL role", ADMINS, _grant_dsl, 202),
    Op("ask to add a DSL account", ADMINS, _new_dsl, 202),
    Op("ask to reset a DSL's password", ADMINS, _reset_dsl_pw, 202),
    Op("ask to reset a DSL's authenticator", ADMINS, _reset_dsl_totp, 202),
    Op("list account change requests", frozenset({DSL, ADMIN}), get("/api/v1/staff-approvals")),
    # The administrator asked for each of these, so may withdraw but never approve them.
    Op("approve an account change", frozenset({DSL}), _approve),
    Op("decline an account change", frozenset({DSL, ADMIN}), _decline),
    Op("list pupils", READERS, get("/api/v1/pupils")),
    Op("read a pupil", READERS, get("/api/v1/pupils/{w.pupil.id}")),
    Op("add a pupil", PUPIL_MANAGERS, _new_pupil, 201),
    Op(
        "change a pupil",
        PUPIL_MANAGERS,
        send("PATCH", "/api/v1/pupils/{w.pupil.id}", lambda w: {"year_group": "6"}),
    ),
    Op("import a CTF", PUPIL_MANAGERS, _ctf, 201),
    Op("list concerns", RECORDERS, get("/api/v1/concerns")),
    Op("record a concern", RECORDERS, send("POST", "/api/v1/concerns", concern_body), 201),
    Op(
        "read the DSL's concern",
        frozenset({DSL, DEPUTY, HEAD}),
        get("/api/v1/concerns/{w.concern_id}"),
        refused={STAFF: 404},
    ),
    Op(
        "change a concern's status",
        DSL_TEAM,
        send("PUT", "/api/v1/concerns/{w.concern_id}/status", lambda w: {"status": "monitoring"}),
    ),
    Op(
        "triage",
        DSL_TEAM,
        send(
            "POST",
            "/api/v1/concerns/{w.concern_id}/triage",
            lambda w: {"decision": "monitor", "reason": "Watch and review."},
        ),
        201,
    ),
    Op(
        "add an action",
        DSL_TEAM,
        send("POST", "/api/v1/concerns/{w.concern_id}/actions", lambda w: {"text": "Call home"}),
        201,
    ),
    Op("complete an action", DSL_TEAM, _complete),
    Op(
        "record a contact",
        DSL_TEAM,
        send(
            "POST",
            "/api/v1/concerns/{w.concern_id}/contacts",
            lambda w: {"agency": "MASH", "contacted_at": "2026-09-07T08:45:00+00:00"},
        ),
        201,
    ),
    Op(
        "upload a document",
        DSL_TEAM,
        lambda w, h: w.api.client.post(
            f"/api/v1/pupils/{w.pupil.id}/documents?filename=a.txt", data=b"hello", headers=h
        ),
        201,
    ),
    Op("download a document", DSL_TEAM, _download),
    Op(
        "read a chronology",
        frozenset({DSL, DEPUTY, HEAD}),
        get("/api/v1/pupils/{w.pupil.id}/chronology"),
    ),
    Op(
        "subject access export",
        DSL_TEAM,
        send("POST", "/api/v1/pupils/{w.pupil.id}/subject-access-export"),
    ),
]


async def test_every_role_against_every_operation(api: Api) -> None:
    node = api.node
    people: dict[Role, Person] = {}
    for role in Role:
        people[role] = await node.person(f"the_{role.value}", [role])
    dsl = (await node.session(people[DSL])).actor
    admin = (await node.session(people[ADMIN])).actor
    pupil = await node.store.create_pupil(
        admin,
        NewPupil(
            upn="H801200001001", surname="Okafor", forename="Amara", dob=date(2014, 11, 3), sex="F"
        ),
    )
    concern = await node.store.record_concern(
        dsl,
        NewConcern(
            pupil_ids=(pupil.id,),
            category="bullying",
            happened_at=datetime(2026, 9, 7, 8, 0, tzinfo=UTC),
            account="Seen crying.",
        ),
    )
    world = World(api=api, dsl=dsl, admin=admin, pupil=pupil, concern_id=concern.id)
    headers = {role: await api.sign_in(p) for role, p in people.items()}

    wrong: list[str] = []
    checked = 0
    for op in OPERATIONS:
        for role in Role:
            resp = await op.call(world, headers[role])
            if role in op.allowed:
                want = op.ok
            else:
                want = (op.refused or {}).get(role, 403)
            checked += 1
            if resp.status != want:
                wrong.append(
                    f"{op.name} as {role.value}: {resp.status}, expected {want}: "
                    f"{(await resp.text())[:160]}"
                )
            elif resp.status >= 400:
                assert resp.content_type == "application/problem+json"
            resp.release()
    assert not wrong, "\n".join(wrong)
    assert checked == len(OPERATIONS) * len(Role)
    refusals = [e for e in node.audit.events if e.outcome == "refused"]
    assert refusals and all(e.request_id for e in refusals)


# ------------------------------------------------------------------ the web app's pages


@dataclass(frozen=True)
class WebOp:
    """A web route requested by URL as a role: the status each role gets."""

    method: str
    path: str
    allowed: frozenset[Role]
    ok: int
    refused: int = 403
    #: Form fields (the CSRF token and the owner mark are added from the page).
    form: dict[str, str] | None = None
    #: Some roles get another status when allowed (e.g. the authenticator already set up).
    ok_for: dict[Role, int] | None = None
    #: Some roles get another status when refused (a concern they may not read: 404).
    refused_for: dict[Role, int] | None = None


async def _other_token(node: Any, person: Person) -> str:
    principal = await node.session(person)
    issued = await node.accounts.create_token(principal, name="theirs", scopes=["pupil.read"])
    return str(issued.id)


async def _other_concern(node: Any, person: Person) -> str:
    """A concern the other member of staff logged (it raises the DSL team's alert)."""
    from datetime import date

    from schemas.records import NewConcern, NewPupil

    admin = await node.person("matrix_admin", [ADMIN])
    pupil = await node.store.create_pupil(
        await node.store.actor_for(admin.staff.id),
        NewPupil(
            upn="H801200001001", surname="Okafor", forename="Amara", dob=date(2015, 1, 2), sex="F"
        ),
    )
    concern = await node.store.record_concern(
        await node.store.actor_for(person.staff.id),
        NewConcern(
            pupil_ids=(pupil.id,),
            category="bullying",
            happened_at=node.clock.now,
            account="Seen at the gate",
        ),
    )
    return str(concern.id)


async def _other_alert(node: Any, alerts: Any, person: Person) -> str:
    """An open alert to dismiss (a new one each time: a dismissed key is not raised again)."""
    import uuid

    import sqlalchemy as sa

    from transfer.alerts.tables import alerts as alerts_table

    key = f"matrix:{uuid.uuid4()}"
    org_id = (await node.store.actor_for(person.staff.id)).org_id
    await alerts.notify(
        org_id, key=key, level="info", subject="A test alert", message="Nothing to do."
    )
    async with node.store.sessions() as s:
        return str(await s.scalar(sa.select(alerts_table.c.id).where(alerts_table.c.key == key)))


WEB_OPERATIONS: list[WebOp] = [
    WebOp("GET", "/", EVERYONE, 200),
    WebOp("GET", "/account", EVERYONE, 200),
    WebOp("GET", "/account/password", EVERYONE, 200),
    # A wrong current password: the form comes back with the error (nothing changes).
    WebOp(
        "POST",
        "/account/password",
        EVERYONE,
        400,
        form={
            "current_password": "wrong",
            "new_password": "a new long phrase here",
            "confirm_password": "a new long phrase here",
        },
    ),
    WebOp("GET", "/account/tokens/new", EVERYONE, 200),
    # Nothing selected: the form comes back with the error.
    WebOp("POST", "/account/tokens/new", EVERYONE, 400, form={"name": "x", "lifetime": "30"}),
    WebOp(
        "POST",
        "/account/tokens/confirm",
        EVERYONE,
        400,
        form={"name": "x", "lifetime": "30", "code": "000000"},
    ),
    # Revoking someone else's token: an administrator may; nobody else.
    WebOp("POST", "/account/tokens/{other_token}/revoke", ADMINS, 303, form={}),
    WebOp("GET", "/sign-in/authenticator", EVERYONE, 200),
    # No enrolment in progress for those who have one (back to the page); a wrong code for
    # those setting one up (the staff and the DPO, whose roles do not require one).
    WebOp(
        "POST",
        "/sign-in/authenticator",
        EVERYONE,
        303,
        form={"code": "000000"},
        ok_for={STAFF: 400, AUDITOR: 400},
    ),
    WebOp("POST", "/session/keep-alive", EVERYONE, 200, form={}),
    WebOp("GET", "/sign-in", EVERYONE, 303),
    # Casework (issue 13 items 4-6) on a pupil and a concern logged by another teacher: a
    # teacher cannot read it (404, as if it were not there), nor reach the DSL's forms.
    WebOp("GET", "/pupils/{upn}", READERS, 200),
    WebOp(
        "GET", "/concerns/{concern}", frozenset({DSL, DEPUTY, HEAD}), 200, refused_for={STAFF: 404}
    ),
    WebOp("GET", "/documents/{document}", DSL_TEAM, 200),
    WebOp("GET", "/concerns/{concern}/triage", DSL_TEAM, 200),
    # Nothing chosen: the DSL team get the form back with its errors.
    WebOp("POST", "/concerns/{concern}/triage", DSL_TEAM, 400, form={"decision": ""}),
    WebOp("GET", "/concerns/{concern}/actions/new", DSL_TEAM, 200),
    WebOp("POST", "/concerns/{concern}/actions/new", DSL_TEAM, 400, form={"text": ""}),
    WebOp("POST", "/actions/{action}/done", DSL_TEAM, 303, form={}),
    WebOp("GET", "/concerns/{concern}/contacts/new", DSL_TEAM, 200),
    WebOp("POST", "/concerns/{concern}/contacts/new", DSL_TEAM, 400, form={"agency": ""}),
    WebOp("GET", "/concerns/{concern}/amend", DSL_TEAM, 200, refused_for={STAFF: 404}),
    WebOp(
        "POST",
        "/concerns/{concern}/amend",
        DSL_TEAM,
        400,
        form={"account": ""},
        refused_for={STAFF: 404},
    ),
    WebOp("GET", "/concerns/{concern}/documents/new", DSL_TEAM, 200, refused_for={STAFF: 404}),
    WebOp("GET", "/search", READERS, 200),
    # Logging a concern: those who may; the form with nothing in it comes back with errors.
    WebOp("GET", "/concerns/new", LOGGERS, 200),
    WebOp("POST", "/concerns/new", LOGGERS, 400, form={"account": ""}),
    # Another member of staff's concern: the DSL team and the head may read it; another
    # teacher is told there is no such page (the store refuses and audits it).
    WebOp("GET", "/concerns/{other_concern}/saved", LOGGERS, 200, ok_for={STAFF: 404}),
    # Attaching a file to it: no file sent, so nothing to attach (the store's refusal of a
    # head teacher, who may read but not add to it, is in tests/integration/web/test_concerns.py).
    WebOp("POST", "/concerns/{other_concern}/files", LOGGERS, 400, form={}, ok_for={STAFF: 404}),
    # The alerts: everyone has an alerts page (their own alerts; the DSL team's all); only
    # the DSL team may dismiss one (here an alert of the other teacher's concern).
    WebOp("GET", "/alerts", EVERYONE, 200),
    WebOp("POST", "/alerts/{other_alert}/dismiss", DSL_TEAM, 303, form={}),
    # The Audit area: those who may read the audit trail (the DPO and the DSL team); nobody
    # else, whatever the URL. A subject access export: the DSL team, after a code (none
    # given here: the form comes back).
    WebOp("GET", "/audit", AUDIT_READERS, 200),
    WebOp("GET", "/audit/integrity", AUDIT_READERS, 200),
    WebOp("POST", "/audit/verify", AUDIT_READERS, 200, form={}),
    WebOp("POST", "/audit/export", AUDIT_READERS, 200, form={}),
    WebOp("GET", "/pupils/{upn}/subject-access", DSL_TEAM, 200),
    WebOp(
        "POST", "/pupils/{upn}/subject-access", DSL_TEAM, 400, form={"format": "pdf", "code": ""}
    ),
    # Administration (issue 15): staff accounts for the administrator; the changes the
    # two-person rule holds back for the DSL (and the administrator who asked, to withdraw).
    # Changes that would alter an account are sent about nobody ({nobody}: 404 when allowed).
    WebOp("GET", "/admin", frozenset({DSL, ADMIN}), 303),
    WebOp("GET", "/admin/staff", ADMINS, 200),
    WebOp("GET", "/admin/staff/invite", ADMINS, 200),
    WebOp("POST", "/admin/staff/invite", ADMINS, 400, form={}),
    WebOp("GET", "/admin/staff/{staff}", ADMINS, 200),
    WebOp("POST", "/admin/staff/{staff}/roles", ADMINS, 400, form={}),
    WebOp("GET", "/admin/staff/{staff}/deactivate", ADMINS, 200),
    WebOp("POST", "/admin/staff/{nobody}/deactivate", ADMINS, 404, form={}),
    WebOp("POST", "/admin/staff/{nobody}/unlock", ADMINS, 404, form={}),
    WebOp("GET", "/admin/staff/{staff}/two-factor", ADMINS, 200),
    WebOp("POST", "/admin/staff/{nobody}/two-factor", ADMINS, 404, form={}),
    WebOp("POST", "/admin/staff/{nobody}/invitation", ADMINS, 404, form={}),
    WebOp("GET", "/admin/approvals", frozenset({DSL, ADMIN}), 200),
    WebOp("POST", "/admin/approvals/{nobody}/approve", frozenset({DSL}), 404, form={}),
    WebOp("POST", "/admin/approvals/{nobody}/decline", EVERYONE, 404, form={}),
    # Pupils (the roll, a CTF with no file sent, a pupil's details with nothing typed).
    WebOp("GET", "/admin/pupils", PUPIL_MANAGERS, 200),
    WebOp("POST", "/admin/pupils/ctf", PUPIL_MANAGERS, 400, form={}),
    WebOp("GET", "/admin/pupils/{upn}/edit", PUPIL_MANAGERS, 200),
    WebOp("POST", "/admin/pupils/{upn}/edit", PUPIL_MANAGERS, 400, form={}),
    # The organisation: keys and the directory for the administrator (a wrong code, nothing
    # sent: the form comes back); categories and the retention policy for the DSL.
    WebOp("GET", "/admin/organisation", frozenset({DSL, ADMIN}), 200),
    WebOp("GET", "/admin/organisation/keys/new", ADMINS, 200),
    WebOp("POST", "/admin/organisation/keys/new", ADMINS, 400, form={"code": "000000"}),
    WebOp("POST", "/admin/organisation/directory", ADMINS, 400, form={}),
    WebOp("POST", "/admin/organisation/categories", frozenset({DSL}), 400, form={}),
    WebOp("POST", "/admin/organisation/retention", frozenset({DSL}), 400, form={}),
    # Retention: the DSL's; erasing a pupil who is not due is a page not found.
    WebOp("GET", "/admin/retention", frozenset({DSL}), 200),
    WebOp("GET", "/admin/retention/{nobody}/erase", frozenset({DSL}), 404),
    WebOp(
        "POST", "/admin/retention/{nobody}/erase", frozenset({DSL}), 404, form={"confirm": "yes"}
    ),
    # Receiving (issue 14): the inbox, a file delivered from another school, and a request
    # for a file from that school; a form sent empty comes back with its errors. The file
    # is not accepted, so there is no confirmation page to show (404).
    WebOp("GET", "/inbox", DSL_TEAM, 200),
    WebOp("GET", "/inbox/{package}", DSL_TEAM, 200),
    WebOp("GET", "/inbox/{package}/accept", DSL_TEAM, 200),
    WebOp("POST", "/inbox/{package}/accept", DSL_TEAM, 400, form={"pupil": ""}),
    WebOp("GET", "/inbox/{package}/accepted", DSL_TEAM, 404),
    WebOp("GET", "/inbox/{package}/reject", DSL_TEAM, 200),
    WebOp("POST", "/inbox/{package}/reject", DSL_TEAM, 400, form={"reason": ""}),
    WebOp("GET", "/requests", DSL_TEAM, 200),
    WebOp("GET", "/requests/new", DSL_TEAM, 200),
    WebOp("POST", "/requests/new", DSL_TEAM, 400, form={"upn": ""}),
    WebOp("GET", "/requests/{request}", DSL_TEAM, 200),
    WebOp("POST", "/requests/{request}/send", DSL_TEAM, 400, form={"code": ""}),
    WebOp("GET", "/requests/{request}/decline", DSL_TEAM, 200),
    WebOp("POST", "/requests/{request}/decline", DSL_TEAM, 400, form={"reason": ""}),
    # Referrals (issue 14): the DSL team only, on a draft about the pupil; nothing changes
    # (a form with its errors, nothing chosen, a mark or referral that is not there; a
    # draft's outcome page sends them back to the referral).
    WebOp("GET", "/referrals", DSL_TEAM, 200),
    WebOp("GET", "/pupils/{upn}/referrals/new", DSL_TEAM, 200),
    WebOp("POST", "/pupils/{upn}/referrals/new", DSL_TEAM, 400, form={"agency": "mash-bristol"}),
    WebOp("GET", "/referrals/{referral}", DSL_TEAM, 200),
    WebOp("GET", "/referrals/{referral}/form", DSL_TEAM, 200),
    WebOp("POST", "/referrals/{referral}/form", DSL_TEAM, 400, form={"reason": ""}),
    WebOp("GET", "/referrals/{referral}/entries", DSL_TEAM, 200),
    WebOp("POST", "/referrals/{referral}/entries", DSL_TEAM, 303, form={}),
    WebOp("GET", "/referrals/{referral}/redact", DSL_TEAM, 200),
    WebOp("POST", "/referrals/{referral}/redact", DSL_TEAM, 400, form={"text": ""}),
    WebOp("POST", "/referrals/{referral}/redactions/{no_mark}/remove", DSL_TEAM, 404, form={}),
    WebOp("GET", "/referrals/{referral}/check", DSL_TEAM, 200),
    WebOp("POST", "/referrals/{referral}/send", DSL_TEAM, 400, form={"route": ""}),
    WebOp("GET", "/referrals/{referral}/bundle", DSL_TEAM, 404),
    WebOp("GET", "/referrals/{referral}/discard", DSL_TEAM, 200),
    WebOp("POST", "/referrals/{no_referral}/discard", DSL_TEAM, 404, form={}),
    WebOp("POST", "/referrals/{referral}/handover", DSL_TEAM, 400, form={}),
    WebOp("POST", "/referrals/{referral}/withdraw", DSL_TEAM, 400, form={}),
    WebOp("POST", "/referrals/{referral}/acknowledgement", DSL_TEAM, 400, form={}),
    WebOp("GET", "/referrals/{referral}/outcome", DSL_TEAM, 303),
    WebOp("POST", "/referrals/{referral}/outcome", DSL_TEAM, 303, form={}),
    # Reports (issue 15): the DSL team and the head teacher; the chronology PDF for those
    # who read chronologies.
    WebOp("GET", "/reports", frozenset({DSL, DEPUTY, HEAD}), 200),
    WebOp("GET", "/reports/{period}/governors.pdf", frozenset({DSL, DEPUTY, HEAD}), 200),
    WebOp("GET", "/reports/{period}/governors.csv", frozenset({DSL, DEPUTY, HEAD}), 200),
    WebOp("GET", "/pupils/{upn}/chronology.pdf", frozenset({DSL, DEPUTY, HEAD}), 200),
    # Sending a leaver's file (issue 14): marking as leaving is for those who keep pupils'
    # details; the send page, the outbox and its receipts for the DSL team. The package is
    # the DSL's, queued in the setup: the DSL cancels it, then it cannot be cancelled or
    # resent again; it holds no receipt yet.
    WebOp("GET", "/pupils/{upn}/leaving", PUPIL_MANAGERS, 200),
    WebOp("POST", "/pupils/{upn}/leaving", PUPIL_MANAGERS, 400, form={"leaving": ""}),
    WebOp("GET", "/pupils/{upn}/send", DSL_TEAM, 200),
    WebOp("POST", "/pupils/{upn}/send", DSL_TEAM, 400, form={"to": ""}),
    WebOp("GET", "/outbox", DSL_TEAM, 200),
    WebOp("POST", "/outbox/{outgoing}/cancel", DSL_TEAM, 303, form={}, ok_for={DEPUTY: 409}),
    WebOp("POST", "/outbox/{outgoing}/resend", DSL_TEAM, 409, form={}),
    WebOp("GET", "/outbox/{outgoing}/receipts/{outgoing}.json", DSL_TEAM, 404),
    WebOp("GET", "/outbox/{outgoing}/receiver.pub", DSL_TEAM, 200),
    WebOp("POST", "/sign-out", EVERYONE, 303, form={}),
]
#: The web routes' placeholders as the matrix names them.
_WEB_PATHS = {
    "{other_token}": "{token_id}",
    "{upn}": "{ref}",
    "{concern}": "{concern_id:[0-9a-fA-F-]{36}}",
    "{document}": "{document_id:[0-9a-fA-F-]{36}}",
    "{action}": "{action_id:[0-9a-fA-F-]{36}}",
    "{other_concern}": "{id}",
    "{other_alert}": "{alert_id}",
    "{staff}": "{staff_id}",
    "{nobody}/approve": "{approval_id}/approve",
    "{nobody}/decline": "{approval_id}/decline",
    "/admin/retention/{nobody}": "/admin/retention/{pupil_id}",
    "{nobody}": "{staff_id}",
    "{package}": "{package_id:[0-9a-fA-F-]{36}}",
    "{request}": "{request_id:[0-9a-fA-F-]{36}}",
    "{referral}": "{referral_id:[0-9a-fA-F-]{36}}",
    "{no_referral}": "{referral_id:[0-9a-fA-F-]{36}}",
    "{no_mark}": "{mark_id:[0-9a-fA-F-]{36}}",
    "{period}": "{period:[a-z0-9-]{1,40}}",
    "{outgoing}/receipts/{outgoing}.json": "{package_id:[0-9a-fA-F-]{36}}/receipts/"
    "{receipt_id:[0-9a-fA-F-]{36}}.{part:json|json.minisig}",
    "{outgoing}": "{package_id:[0-9a-fA-F-]{36}}",
}


def _route_path(path: str) -> str:
    for mine, theirs in _WEB_PATHS.items():
        path = path.replace(mine, theirs)
    return path


async def _outbox(node: Any, config: Any, keys: Any, directory: Any) -> tuple[Any, Any]:
    """An outbox for the school, over the receiving pages' keys and directory (nothing is
    sent)."""
    from transfer.exchange.outbox import Outbox
    from transfer.transport.http import PeerClient

    client = PeerClient(keys=keys, directory=directory, config=config)
    return Outbox(
        store=node.store,
        keys=keys,
        directory=directory,
        client=client,
        config=config,
        data_dir=node.data_dir,
    ), client


async def _casework(node: Any, teacher: Person) -> dict[str, str]:
    """A pupil, a concern the teacher logged about them, an action and a document on it."""
    from schemas.records import NewAction, NewConcern, NewPupil
    from transfer.identifiers import upn_check_letter

    admin = await node.person("case_admin", [ADMIN])
    dsl = await node.person("case_dsl", [DSL])
    store = node.store
    admin_actor = await store.actor_for(admin.staff.id)
    dsl_actor = await store.actor_for(dsl.staff.id)
    body = "801200026101"
    pupil = await store.create_pupil(
        admin_actor,
        NewPupil(
            upn=upn_check_letter(body) + body,
            surname="Okafor",
            forename="Amara",
            dob=date(2014, 11, 3),
            sex="F",
            year_group="6",
        ),
    )
    concern = await store.record_concern(
        await store.actor_for(teacher.staff.id),
        NewConcern(
            pupil_ids=(pupil.id,),
            category="bullying",
            happened_at=node.clock.now,
            account="Said others took her lunch.",
        ),
    )
    action = await store.add_action(dsl_actor, concern.id, NewAction(text="Call home."))

    async def chunks() -> Any:
        yield b"Minutes of a meeting.\n"

    doc = await store.add_document(
        dsl_actor, pupil.id, chunks(), filename="minutes.txt", concern_id=concern.id
    )
    return {
        "upn": str(pupil.upn),
        "concern": concern.id,
        "action": action.id,
        "document": doc.id,
        "period": "autumn-2026",
    }


async def _referral_case(node: Any, upn: str) -> tuple[Any, dict[str, str]]:
    """The referrals service over a directory with a MASH, and a draft about the pupil."""
    import uuid

    from keys.keyfiles import KeyFiles
    from keys.sealing import KekProtection
    from tests.support.referrals import add_agency, mash_form
    from tests.unit.auth.support import KEK
    from transfer.directory.service import Directory
    from transfer.referrals.forms import parse_form
    from transfer.referrals.service import Referrals

    keys = KeyFiles.for_data_dir(node.data_dir, KekProtection(KEK))
    directory = Directory(node.store, keys=keys)
    await add_agency(directory, "mash-bristol", "Bristol MASH", "social_care")
    referrals = Referrals(node.store, keys, directory)
    dsl = await node.person("referral_dsl", [DSL])
    draft = await referrals.draft(
        await node.store.actor_for(dsl.staff.id),
        pupil_id=upn,
        agency_org_id="mash-bristol",
        form=parse_form(
            mash_form(
                child={
                    "forename": "Amara",
                    "surname": "Okafor",
                    "dob": "2014-11-03",
                    "address": "1 Quay Street",
                    "sex": "female",
                }
            )
        ),
    )
    missing = {"no_referral": str(uuid.uuid4()), "no_mark": str(uuid.uuid4())}
    return referrals, {"referral": draft.id, **missing}


#: Pages reached before signing in (tested in tests/e2e/web/test_pages.py).
PUBLIC_WEB = {("POST", "/sign-in"), ("GET", "/invitation/{token}"), ("POST", "/invitation")}


async def test_every_role_against_every_web_page(db_url: str, tmp_path: Path) -> None:
    import re

    import aiohttp
    from aiohttp.test_utils import TestServer

    from tests.support.receiving import receiving
    from tests.support.web import WEB_KEY, web_config, wire_alerts
    from tests.unit.auth.support import open_node
    from transfer.api import create_app
    from transfer.directory.administration import KeyAdministration
    from transfer.web import ROUTES, WebServices

    declared = {(r.method, r.path) for r in ROUTES}
    listed = {(op.method, _route_path(op.path)) for op in WEB_OPERATIONS}
    assert declared == listed | PUBLIC_WEB, "every web route is in the matrix"
    assert all(r.operation for r in ROUTES), "every web route declares its operation"

    from tests.unit.auth.support import KEK
    from transfer.audit.log import AuditLog
    from transfer.audit.request_ids import RequestIdAudit
    from transfer.audit.trail import AuditTrail

    async with open_node(db_url, tmp_path / "data") as node:
        config = web_config()
        alerts = wire_alerts(node)
        # The audit trail over the node's database (its log empty: the node audits to memory).
        audit_log = AuditLog.open(db_url, KEK)
        rx = await receiving(node, config, tmp_path)
        other = await node.person("someone_else", [STAFF])
        case = await _casework(node, other)
        referrals, referral_case = await _referral_case(node, case["upn"])
        case.update(referral_case)
        outbox, peer = await _outbox(node, config, rx.keys, rx.directory)
        app = create_app(
            store=node.store,
            accounts=node.accounts,
            audit=node.audit,
            config=config,
            referrals=referrals,
            web_pages=WebServices(
                store=node.store,
                accounts=node.accounts,
                config=config,
                audit=node.audit,
                web_key=WEB_KEY,
                alerts=alerts,
                trail=AuditTrail(audit_log, RequestIdAudit(node.audit)),
                key_admin=KeyAdministration(node.store, rx.keys, rx.directory),
                inbox=rx.inbox,
                transfer_requests=rx.requests,
                directory=rx.directory,
                outbox=outbox,
            ),
        )
        server = TestServer(app)
        await server.start_server()
        people = {role: await node.person(f"web_{role.value}", [role]) for role in Role}
        case |= {"staff": other.staff.id, "nobody": "00000000-0000-4000-8000-000000000000"}
        case["package"] = await rx.deliver()
        case["request"] = await rx.received_request(case["upn"])
        dsl = await node.store.actor_for(people[DSL].staff.id)
        queued = await outbox.queue_leaver_file(dsl, case["upn"], "199002", reason="a test")
        case["outgoing"] = queued.id
        other_concern = await _other_concern(node, other)
        hidden = re.compile(r'name="(csrf|form_owner)" value="([^"]*)"')
        wrong: list[str] = []
        try:
            for role, person in people.items():
                jar = aiohttp.CookieJar(unsafe=True)
                async with aiohttp.ClientSession(cookie_jar=jar) as http:
                    base = str(server.make_url(""))
                    page = await (await http.get(base + "/sign-in")).text()
                    fields = dict(hidden.findall(page))
                    code = person.code(node.clock.now) if person.secret else ""
                    node.next_step()
                    form = {
                        **fields,
                        "org": "199001",
                        "username": person.username,
                        "password": person.password,
                        "code": code,
                    }
                    resp = await http.post(base + "/sign-in", data=form, allow_redirects=False)
                    assert resp.status == 303, await resp.text()
                    home = await (await http.get(base + "/")).text()
                    fields = dict(hidden.findall(home))
                    for op in WEB_OPERATIONS:
                        token = (
                            await _other_token(node, other) if "{other_token}" in op.path else ""
                        )
                        alert = (
                            await _other_alert(node, alerts, other)
                            if "{other_alert}" in op.path
                            else ""
                        )
                        path = op.path.format(
                            other_token=token,
                            other_concern=other_concern,
                            other_alert=alert,
                            **case,
                        )
                        node.next_step()
                        data = None if op.form is None else {**fields, **op.form}
                        resp = await http.request(
                            op.method, base + path, data=data, allow_redirects=False
                        )
                        want = (
                            (op.ok_for or {}).get(role, op.ok)
                            if role in op.allowed
                            else (op.refused_for or {}).get(role, op.refused)
                        )
                        if resp.status != want:
                            wrong.append(
                                f"{op.method} {op.path} as {role.value}: "
                                f"{resp.status}, expected {want}"
                            )
                        text = await resp.text(errors="replace")  # a PDF is not UTF-8
                        assert "Traceback" not in text
                        if resp.status >= 400:
                            assert resp.content_type == "text/html", (op.path, role)
                    # Signed out: every page sends the browser to sign in again.
                    for op in WEB_OPERATIONS:
                        if op.method == "GET" and op.path != "/sign-in":
                            path = op.path.format(
                                other_token="", other_concern=other_concern, other_alert="", **case
                            )
                            resp = await http.get(base + path, allow_redirects=False)
                            if not (
                                resp.status == 303
                                and resp.headers["Location"].startswith("/sign-in")
                            ):
                                wrong.append(f"{op.path} after signing out: {resp.status}")
        finally:
            await server.close()
            await audit_log.close()
            await peer.close()
        assert not wrong, "\n".join(wrong)
        refusals = [e for e in node.audit.events if e.outcome == "refused"]
        assert refusals and all(e.request_id for e in refusals)


async def test_each_role_sees_its_own_dashboard(db_url: str, tmp_path: Path) -> None:
    """What the home page shows comes from what each role's services return."""
    import html

    from tests.support.web import site_for

    async with site_for(db_url, tmp_path) as site:
        sections = {
            "New concerns awaiting triage": {DSL, DEPUTY},
            "Actions to do": {DSL, DEPUTY},
            "Leavers' files due": set(),  # no alerts service in this app
            "The school's concerns, most recent first": {HEAD},
            "Concerns you logged": {STAFF},
            "Accounts with sign-in problems": {ADMIN},
            "you can see who did what in Handover": {AUDITOR},
        }
        for role in Role:
            person = await site.node.person(f"dash_{role.value}", [role])
            home = await site.sign_in(person)
            assert home.title == "Home - Handover", role
            shown = html.unescape(home.text)
            for text, roles in sections.items():
                assert (text in shown) == (role in roles), (role, text)
            await site.post("/sign-out", {"csrf": home.hidden("csrf")})
