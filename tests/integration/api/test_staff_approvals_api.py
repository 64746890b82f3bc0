"""The two-person rule through the API, URL by URL, as the review found it.

The review: ``PATCH /api/v1/staff/{own id}`` with ``roles: [administrator, dsl]`` made an
administrator a DSL who then read restricted concerns; ``PUT .../password`` and
``DELETE .../totp`` on a DSL let an administrator take the DSL's account over.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from schemas.records import NewConcern, NewPupil
from tests.integration.api.conftest import Api
from tests.integration.api.test_bad_input import problem
from tests.unit.auth.support import URN
from transfer.store.permissions import Role

NEW_PASSWORD = "taken over by the administrator"


async def test_an_administrator_cannot_make_themselves_a_dsl(api: Api) -> None:
    node = api.node
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    dsl = await node.person("dsl", [Role.DSL])
    d = (await node.session(dsl)).actor
    pupil = await node.store.create_pupil(
        d,
        NewPupil(
            upn="H801200001001", surname="Okafor", forename="Amara", dob=date(2014, 11, 3), sex="F"
        ),
    )
    concern = await node.store.record_concern(
        d,
        NewConcern(
            pupil_ids=(pupil.id,),
            category="domestic_abuse",
            happened_at=datetime(2026, 9, 7, 8, 0, tzinfo=UTC),
            account="Restricted.",
        ),
    )
    h = await api.sign_in(admin)
    resp = await api.client.patch(
        f"/api/v1/staff/{admin.staff.id}", json={"roles": ["administrator", "dsl"]}, headers=h
    )
    doc = await problem(resp, 403)
    assert "own roles" in doc["detail"]
    h = await api.sign_in(admin)  # a new session: were the roles changed, it would show here
    me = await (await api.client.get("/api/v1/session", headers=h)).json()
    assert me["roles"] == ["administrator"]
    resp = await api.client.get(f"/api/v1/concerns/{concern.id}", headers=h)
    assert resp.status in (403, 404)
    assert (await api.client.get("/api/v1/staff-approvals", headers=h)).status == 200
    assert (await (await api.client.get("/api/v1/staff-approvals", headers=h)).json())[
        "items"
    ] == []


async def test_taking_over_a_dsl_account_waits_for_another_dsl(api: Api) -> None:
    node = api.node
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    dsl = await node.person("dsl", [Role.DSL])
    other = await node.person("other", [Role.DSL])
    ha = await api.sign_in(admin)
    resp = await api.client.put(
        f"/api/v1/staff/{dsl.staff.id}/password", json={"password": NEW_PASSWORD}, headers=ha
    )
    assert resp.status == 202
    password_request = await resp.json()
    assert password_request["state"] == "pending"
    assert password_request["summary"] == (
        "Admin (administrator) asked to set a new password for Dsl (DSL)"
    )
    resp = await api.client.delete(f"/api/v1/staff/{dsl.staff.id}/totp", headers=ha)
    assert resp.status == 202
    totp_request = await resp.json()
    # Neither has happened: the DSL signs in as before; the new password does not work.
    await api.sign_in(dsl)
    login = {"org": URN, "username": "dsl", "password": NEW_PASSWORD}
    await problem(await api.client.post("/api/v1/session", json=login), 401, "sign-in-failed")
    # The administrator cannot approve their own request.
    await problem(
        await api.client.post(
            f"/api/v1/staff-approvals/{password_request['id']}/approve", headers=ha
        ),
        403,
    )
    # The DSL it is about sees both, and declines the authenticator reset.
    hd = await api.sign_in(dsl)
    listed = await (await api.client.get("/api/v1/staff-approvals", headers=hd)).json()
    assert {r["id"] for r in listed["items"]} == {password_request["id"], totp_request["id"]}
    await problem(
        await api.client.post(
            f"/api/v1/staff-approvals/{password_request['id']}/approve", headers=hd
        ),
        403,
    )
    resp = await api.client.post(
        f"/api/v1/staff-approvals/{totp_request['id']}/decline", headers=hd
    )
    assert resp.status == 200 and (await resp.json())["state"] == "declined"
    # Another DSL approves the password: it applies now.
    ho = await api.sign_in(other)
    resp = await api.client.post(
        f"/api/v1/staff-approvals/{password_request['id']}/approve", headers=ho
    )
    assert resp.status == 200
    done = await resp.json()
    assert (done["state"], done["decided_by_name"]) == ("approved", "Other (DSL)")
    resp = await api.client.get(f"/api/v1/staff-approvals/{done['id']}", headers=ha)
    assert (await resp.json())["state"] == "approved"
    await problem(
        await api.client.post(f"/api/v1/staff-approvals/{done['id']}/approve", headers=ho), 409
    )
    decided = await (await api.client.get("/api/v1/staff-approvals?state=all", headers=ho)).json()
    assert sorted(r["state"] for r in decided["items"]) == ["approved", "declined"]
    await problem(await api.client.get("/api/v1/staff-approvals?state=bogus", headers=ho), 400)
    assert {
        "account.approval.requested",
        "account.approval.approved",
        "account.approval.declined",
        "account.password_reset",
    } <= set(node.audit.actions())


async def test_the_openapi_document_describes_the_waiting_answers(api: Api) -> None:
    doc = await (await api.client.get("/api/v1/openapi.json")).json()
    staff = doc["paths"]["/api/v1/staff/{staff_id}"]
    assert "202" in staff["patch"]["responses"] and "200" in staff["patch"]["responses"]
    assert "202" in doc["paths"]["/api/v1/staff"]["post"]["responses"]
    assert "202" in doc["paths"]["/api/v1/staff/{staff_id}/password"]["put"]["responses"]
    approve = doc["paths"]["/api/v1/staff-approvals/{approval_id}/approve"]["post"]
    assert approve["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ApprovalRecord"
    )
