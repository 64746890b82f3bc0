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
        NewPupil(upn="H801200001001", surname="Okafor", forename="Amara",
                 dob=date(2015, 1, 2), sex="F"),
    )  # fmt: skip
    concern = await node.store.record_concern(
        await node.store.actor_for(person.staff.id),
        NewConcern(pupil_ids=(pupil.id,), category="bullying",
                   happened_at=node.clock.now, account="Seen at the gate"),
    )  # fmt: skip
    return str(concern.id)


async def _other_alert(node: Any, alerts: Any, person: Person) -> str:
    """An open alert to dismiss (a new one each time: a dismissed key is not raised again)."""
    import uuid

    import sqlalchemy as sa

    from transfer.alerts_tables import alerts as alerts_table

    key = f"matrix:{uuid.uuid4()}"
    org_id = (await node.store.actor_for(person.staff.id)).org_id
    await alerts.notify(org_id, key=key, level="info", subject="A test alert",
                        message="Nothing to do.")  # fmt: skip
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
    WebOp("GET", "/concerns/{concern}", frozenset({DSL, DEPUTY, HEAD}), 200,
          refused_for={STAFF: 404}),
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
    WebOp("POST", "/concerns/{concern}/amend", DSL_TEAM, 400, form={"account": ""},
          refused_for={STAFF: 404}),
    WebOp("GET", "/concerns/{concern}/documents/new", DSL_TEAM, 200, refused_for={STAFF: 404}),
    WebOp("GET", "/search", READERS, 200),
    # Logging a concern: those who may; the form with nothing in it comes back with errors.
    WebOp("GET", "/concerns/new", LOGGERS, 200),
    WebOp("POST", "/concerns/new", LOGGERS, 400, form={"account": ""}),
    # Another member of staff's concern: the DSL team and the head may read it; another
    # teacher is told there is no such page (the store refuses and audits it).
    WebOp("GET", "/concerns/{other_concern}/saved", LOGGERS, 200, ok_for={STAFF: 404}),
    # Attaching a file to it: no file sent, so nothing to attach (the store's refusal of a
    # head teacher, who may read but not add to it, is in tests/web/test_concerns.py).
    WebOp("POST", "/concerns/{other_concern}/files", LOGGERS, 400, form={}, ok_for={STAFF: 404}),
    # The alerts: everyone has an alerts page (their own alerts; the DSL team's all); only
    # the DSL team may dismiss one (here an alert of the other teacher's concern).
    WebOp("GET", "/alerts", EVERYONE, 200),
    WebOp("POST", "/alerts/{other_alert}/dismiss", DSL_TEAM, 303, form={}),
    # Sending a leaver's file (issue 14): marking as leaving is for those who keep pupils'
    # details; the send page, the outbox and its receipts for the DSL team. The package is
    # the DSL's, queued in the setup: the DSL cancels it, then it cannot be cancelled or
    # resent again; it holds no receipt yet.
    WebOp("GET", "/pupils/{upn}/leaving", PUPIL_MANAGERS, 200),
    WebOp("POST", "/pupils/{upn}/leaving", PUPIL_MANAGERS, 400, form={"leaving": ""}),
    WebOp("GET", "/pupils/{upn}/send", DSL_TEAM, 200),
    WebOp("POST", "/pupils/{upn}/send", DSL_TEAM, 400, form={"to": ""}),
    WebOp("GET", "/outbox", DSL_TEAM, 200),
    WebOp("POST", "/outbox/{package}/cancel", DSL_TEAM, 303, form={}, ok_for={DEPUTY: 409}),
    WebOp("POST", "/outbox/{package}/resend", DSL_TEAM, 409, form={}),
    WebOp("GET", "/outbox/{package}/receipts/{package}.json", DSL_TEAM, 404),
    WebOp("GET", "/outbox/{package}/receiver.pub", DSL_TEAM, 200),
    WebOp("POST", "/sign-out", EVERYONE, 303, form={}),
]  # fmt: skip
#: The web routes' placeholders as the matrix names them.
_WEB_PATHS = {
    "{other_token}": "{token_id}",
    "{upn}": "{ref}",
    "{concern}": "{concern_id:[0-9a-fA-F-]{36}}",
    "{document}": "{document_id:[0-9a-fA-F-]{36}}",
    "{action}": "{action_id:[0-9a-fA-F-]{36}}",
    "{other_concern}": "{id}",
    "{other_alert}": "{alert_id}",
    "{package}/receipts/{package}.json": "{package_id:[0-9a-fA-F-]{36}}/receipts/"
    "{receipt_id:[0-9a-fA-F-]{36}}.{part:json|json.minisig}",
    "{package}": "{package_id:[0-9a-fA-F-]{36}}",
}


def _route_path(path: str) -> str:
    for mine, theirs in _WEB_PATHS.items():
        path = path.replace(mine, theirs)
    return path


async def _outbox(node: Any, config: Any) -> tuple[Any, Any]:
    """An outbox for the school, with another school in its directory (nothing is sent)."""
    from keys.keyset import KeySet
    from keys.sealing import KekProtection
    from keys.store import KeyStore
    from tests.unit.auth.support import KEK
    from tests.web.sending_support import Directory
    from transfer.exchange.client import PeerClient
    from transfer.exchange.outbox import Outbox

    keys = KeyStore(node.data_dir / "keys", KekProtection(KEK))
    directory = Directory()
    directory.add(await keys.create("199001"), "Harbourside Primary", "school", None, "199001")
    directory.add(KeySet.generate("199002"), "Cliff Road Academy", "school", None, "199002")
    client = PeerClient(keys=keys, directory=directory, config=config)
    return Outbox(store=node.store, keys=keys, directory=directory, client=client,
                  config=config, data_dir=node.data_dir), client  # fmt: skip


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
    pupil = await store.create_pupil(admin_actor, NewPupil(
        upn=upn_check_letter(body) + body, surname="Okafor", forename="Amara",
        dob=date(2014, 11, 3), sex="F", year_group="6",
    ))  # fmt: skip
    concern = await store.record_concern(await store.actor_for(teacher.staff.id), NewConcern(
        pupil_ids=(pupil.id,), category="bullying", happened_at=node.clock.now,
        account="Said others took her lunch.",
    ))  # fmt: skip
    action = await store.add_action(dsl_actor, concern.id, NewAction(text="Call home."))

    async def chunks() -> Any:
        yield b"Minutes of a meeting.\n"

    doc = await store.add_document(dsl_actor, pupil.id, chunks(), filename="minutes.txt",
                                   concern_id=concern.id)  # fmt: skip
    return {"upn": str(pupil.upn), "concern": concern.id, "action": action.id,
            "document": doc.id}  # fmt: skip


#: Pages reached before signing in (tested in tests/web/test_pages.py).
PUBLIC_WEB = {("POST", "/sign-in")}


async def test_every_role_against_every_web_page(db_url: str, tmp_path: Path) -> None:
    import re

    import aiohttp
    from aiohttp.test_utils import TestServer

    from tests.unit.auth.support import open_node
    from tests.web.support import WEB_KEY, web_config, wire_alerts
    from transfer.api import create_app
    from transfer.web import ROUTES, WebServices

    declared = {(r.method, r.path) for r in ROUTES}
    listed = {(op.method, _route_path(op.path)) for op in WEB_OPERATIONS}
    assert declared == listed | PUBLIC_WEB, "every web route is in the matrix"
    assert all(r.operation for r in ROUTES), "every web route declares its operation"

    async with open_node(db_url, tmp_path / "data") as node:
        config = web_config()
        alerts = wire_alerts(node)
        outbox, peer = await _outbox(node, config)
        app = create_app(
            store=node.store, accounts=node.accounts, audit=node.audit, config=config,
            web_pages=WebServices(store=node.store, accounts=node.accounts, config=config,
                                  audit=node.audit, web_key=WEB_KEY, alerts=alerts,
                                  outbox=outbox, directory=outbox.directory),
        )  # fmt: skip
        server = TestServer(app)
        await server.start_server()
        people = {role: await node.person(f"web_{role.value}", [role]) for role in Role}
        other = await node.person("someone_else", [STAFF])
        case = await _casework(node, other)
        dsl = await node.store.actor_for(people[DSL].staff.id)
        queued = await outbox.queue_leaver_file(dsl, case["upn"], "199002", reason="a test")
        case["package"] = queued.id
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
                    form = {**fields, "org": "199001", "username": person.username,
                            "password": person.password, "code": code}  # fmt: skip
                    resp = await http.post(base + "/sign-in", data=form, allow_redirects=False)
                    assert resp.status == 303, await resp.text()
                    home = await (await http.get(base + "/")).text()
                    fields = dict(hidden.findall(home))
                    for op in WEB_OPERATIONS:
                        token = await _other_token(node, other) if "{other_token}" in op.path \
                            else ""  # fmt: skip
                        alert = await _other_alert(node, alerts, other) \
                            if "{other_alert}" in op.path else ""  # fmt: skip
                        path = op.path.format(other_token=token, other_concern=other_concern,
                                              other_alert=alert, **case)  # fmt: skip
                        node.next_step()
                        data = None if op.form is None else {**fields, **op.form}
                        resp = await http.request(op.method, base + path, data=data,
                                                  allow_redirects=False)  # fmt: skip
                        want = (op.ok_for or {}).get(role, op.ok) if role in op.allowed else \
                            (op.refused_for or {}).get(role, op.refused)  # fmt: skip
                        if resp.status != want:
                            wrong.append(f"{op.method} {op.path} as {role.value}: "
                                         f"{resp.status}, expected {want}")  # fmt: skip
                        text = await resp.text()
                        assert "Traceback" not in text
                        if resp.status >= 400:
                            assert resp.content_type == "text/html", (op.path, role)
                    # Signed out: every page sends the browser to sign in again.
                    for op in WEB_OPERATIONS:
                        if op.method == "GET" and op.path != "/sign-in":
                            path = op.path.format(other_token="", other_concern=other_concern,
                                                  other_alert="", **case)  # fmt: skip
                            resp = await http.get(base + path, allow_redirects=False)
                            if not (resp.status == 303 and
                                    resp.headers["Location"].startswith("/sign-in")):  # fmt: skip
                                wrong.append(f"{op.path} after signing out: {resp.status}")
        finally:
            await server.close()
            await peer.close()
        assert not wrong, "\n".join(wrong)
        refusals = [e for e in node.audit.events if e.outcome == "refused"]
        assert refusals and all(e.request_id for e in refusals)


async def test_each_role_sees_its_own_dashboard(db_url: str, tmp_path: Path) -> None:
    """What the home page shows comes from what each role's services return."""
    import html

    from tests.web.support import site_for

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
