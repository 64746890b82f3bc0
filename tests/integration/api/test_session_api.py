"""Sign-in, TOTP enrolment, sessions, tokens and account administration through the API."""

from __future__ import annotations

import asyncio

import pyotp
import pytest

from tests.integration.api.conftest import Api
from tests.integration.api.test_bad_input import problem
from tests.unit.auth.support import PASSWORD, URN
from transfer.api.app import SECURITY_HEADERS
from transfer.auth import passwords
from transfer.store.permissions import Role


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_first_sign_in_enrols_totp_then_signs_in_with_a_code(api: Api) -> None:
    await api.node.person("dsl", [Role.DSL], enrol=False)
    resp = await api.client.post(
        "/api/v1/session", json={"org": URN, "username": "dsl", "password": PASSWORD}
    )
    assert resp.status == 201
    first = await resp.json()
    assert first["state"] == "must_enrol_totp"
    h = bearer(first["token"])
    doc = await problem(await api.client.get("/api/v1/pupils", headers=h), 403)
    assert doc["must_enrol_totp"] is True
    resp = await api.client.post("/api/v1/me/totp", headers=h)
    assert resp.status == 201
    enrolment = await resp.json()
    assert enrolment["uri"].startswith("otpauth://totp/") and "█" in enrolment["qr"]
    totp = pyotp.TOTP(enrolment["secret"])
    resp = await api.client.post("/api/v1/me/totp/confirm", json={"code": "000000x"}, headers=h)
    await problem(resp, 400, "wrong-code")
    resp = await api.client.post(
        "/api/v1/me/totp/confirm", json={"code": totp.at(api.node.clock.now)}, headers=h
    )
    assert resp.status == 200
    codes = (await resp.json())["codes"]
    assert len(codes) == 10
    who = await (await api.client.get("/api/v1/session", headers=h)).json()
    assert who["kind"] == "session" and "concern.read_all" in who["permissions"]
    assert (await api.client.delete("/api/v1/session", headers=h)).status == 204
    await problem(await api.client.get("/api/v1/session", headers=h), 401)

    # Later: password plus the current code; the same code again is refused.
    api.node.next_step()
    body = {
        "org": URN,
        "username": "dsl",
        "password": PASSWORD,
        "totp": totp.at(api.node.clock.now),
    }
    assert (await api.client.post("/api/v1/session", json=body)).status == 201
    doc = await problem(await api.client.post("/api/v1/session", json=body), 401, "sign-in-failed")
    # A recovery code instead of TOTP works once.
    body = {"org": URN, "username": "dsl", "password": PASSWORD, "recovery_code": codes[0]}
    assert (await api.client.post("/api/v1/session", json=body)).status == 201
    await problem(await api.client.post("/api/v1/session", json=body), 401)


async def test_wrong_password_and_unknown_user_get_the_same_answer(api: Api) -> None:
    await api.node.person("teacher", [Role.STAFF])
    a = await api.client.post(
        "/api/v1/session", json={"org": URN, "username": "teacher", "password": "wrong wrong wrong"}
    )
    b = await api.client.post(
        "/api/v1/session", json={"org": URN, "username": "nobody", "password": "wrong wrong wrong"}
    )
    da, db = await problem(a, 401), await problem(b, 401)
    assert {k: v for k, v in da.items() if k != "instance"} == {
        k: v for k, v in db.items() if k != "instance"
    }


async def test_repeated_failures_give_429_with_retry_after_then_lock(api: Api) -> None:
    await api.node.person("teacher", [Role.STAFF])
    body = {"org": URN, "username": "teacher", "password": "wrong wrong wrong"}
    security = api.node.accounts.security
    for _ in range(security.failed_signins_before_delay):
        await problem(await api.client.post("/api/v1/session", json=body), 401)
    resp = await api.client.post("/api/v1/session", json=body)
    doc = await problem(resp, 429, "slow-down")
    assert int(resp.headers["Retry-After"]) == doc["retry_after"] >= 1
    for _ in range(security.failed_signins_before_lock - security.failed_signins_before_delay):
        api.node.clock.advance(seconds=MAX_WAIT)
        await problem(await api.client.post("/api/v1/session", json=body), 401)
    api.node.clock.advance(seconds=MAX_WAIT)
    good = {**body, "password": PASSWORD}
    await problem(await api.client.post("/api/v1/session", json=good), 401, "account-locked")

    admin = await api.node.person("admin", [Role.ADMINISTRATOR])
    h = await api.sign_in(admin)
    listed = (await (await api.client.get("/api/v1/sign-in-problems", headers=h)).json())["items"]
    assert [(x["username"], x["locked"]) for x in listed] == [("teacher", True)]
    teacher_id = listed[0]["staff_id"]
    assert (await api.client.post(f"/api/v1/staff/{teacher_id}/unlock", headers=h)).status == 204
    assert (await api.client.post("/api/v1/session", json=good)).status == 201


MAX_WAIT = 301


async def test_parallel_guesses_through_the_api_get_no_more_checks_than_the_limit(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.node.person("teacher", [Role.STAFF])
    checked: list[str] = []
    real = passwords.verify_password

    def counting(stored: str, password: str) -> bool:
        checked.append(password)
        return real(stored, password)

    monkeypatch.setattr("transfer.auth.base.verify_password", counting)
    security = api.node.accounts.security
    bodies = [
        {"org": URN, "username": "teacher", "password": f"wrong guess number {i}"}
        for i in range(40)
    ]
    responses = await asyncio.gather(*(api.client.post("/api/v1/session", json=b) for b in bodies))
    statuses = sorted(r.status for r in responses)
    for r in responses:
        r.release()
    # Each attempt is counted before it is checked: the first few are checked and fail,
    # the rest are told to wait (429) unchecked; none gets in.
    assert set(statuses) <= {401, 429} and statuses.count(401) == len(checked)
    assert len(checked) <= security.failed_signins_before_delay + 1
    # Waiting out the slow-down, the failures go on to the lock; the right password after it
    # is refused without being checked.
    while True:
        api.node.clock.advance(seconds=MAX_WAIT)
        resp = await api.client.post("/api/v1/session", json=bodies[0])
        doc = await problem(resp, 401)
        if doc["type"].endswith("account-locked"):
            break
    assert len(checked) == security.failed_signins_before_lock
    good = {**bodies[0], "password": PASSWORD}
    await problem(await api.client.post("/api/v1/session", json=good), 401, "account-locked")
    assert len(checked) == security.failed_signins_before_lock


async def test_request_ids_reach_the_audit_log_and_headers_are_set(api: Api) -> None:
    await api.node.person("teacher", [Role.STAFF])
    rid = "req-0123456789abcdef"
    resp = await api.client.post(
        "/api/v1/session",
        json={"org": URN, "username": "teacher", "password": PASSWORD},
        headers={"X-Request-Id": rid},
    )
    assert resp.headers["X-Request-Id"] == rid
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value
    ok = api.node.events("signin.ok")[-1]
    assert ok.request_id == rid
    # A hostile request id is replaced, not echoed.
    resp = await api.client.get("/api/v1/openapi.json", headers={"X-Request-Id": "a\tb<script>"})
    assert (
        resp.headers["X-Request-Id"] != "a\tb<script>" and len(resp.headers["X-Request-Id"]) == 32
    )


async def test_tokens_through_the_api(api: Api) -> None:
    admin = await api.node.person("admin", [Role.ADMINISTRATOR])
    h = await api.sign_in(admin)
    resp = await api.client.post(
        "/api/v1/tokens", json={"name": "MIS sync", "scopes": ["pupil.read"]}, headers=h
    )
    assert resp.status == 201
    issued = await resp.json()
    th = bearer(issued["token"])
    assert (await api.client.get("/api/v1/pupils", headers=th)).status == 200
    body = {
        "upn": "H801200001001",
        "surname": "O",
        "forename": "A",
        "dob": "2014-11-03",
        "sex": "F",
    }
    await problem(await api.client.post("/api/v1/pupils", json=body, headers=th), 403)
    await problem(await api.client.get("/api/v1/tokens", headers=th), 403)  # sessions only
    listed = (await (await api.client.get("/api/v1/tokens", headers=h)).json())["items"]
    assert [t["name"] for t in listed] == ["MIS sync"] and "token" not in listed[0]
    resp = await api.client.post(
        "/api/v1/tokens", json={"name": "x", "scopes": ["concern.read_all"]}, headers=h
    )
    await problem(resp, 403)
    resp = await api.client.post(
        "/api/v1/tokens", json={"name": "x", "scopes": ["no.such.scope"]}, headers=h
    )
    await problem(resp, 422)
    # Account changes need a session (password and TOTP), never a token, whatever its scopes.
    resp = await api.client.post(
        "/api/v1/tokens", json={"name": "hr", "scopes": ["staff.manage"]}, headers=h
    )
    staff_token = bearer((await resp.json())["token"])
    assert (await api.client.get("/api/v1/staff", headers=staff_token)).status == 200
    resp = await api.client.put(
        f"/api/v1/staff/{admin.staff.id}/password",
        json={"password": "taken over by a script"},
        headers=staff_token,
    )
    await problem(resp, 403)
    assert (await api.client.delete(f"/api/v1/tokens/{issued['id']}", headers=h)).status == 200
    await problem(await api.client.get("/api/v1/pupils", headers=th), 401)


async def test_staff_administration_through_the_api(api: Api) -> None:
    admin = await api.node.person("admin", [Role.ADMINISTRATOR])
    h = await api.sign_in(admin)
    body = {
        "username": "newteacher",
        "display_name": "New Teacher",
        "roles": ["staff"],
        "password": "password1234",
    }
    doc = await problem(await api.client.post("/api/v1/staff", json=body, headers=h), 400)
    assert doc["type"].endswith("weak-password") and doc["problems"]
    body["password"] = "a long and unusual phrase"
    resp = await api.client.post("/api/v1/staff", json=body, headers=h)
    assert resp.status == 201
    staff = await resp.json()
    await problem(await api.client.post("/api/v1/staff", json=body, headers=h), 409)
    login = {"org": URN, "username": "newteacher", "password": "a long and unusual phrase"}
    t = bearer((await (await api.client.post("/api/v1/session", json=login)).json())["token"])
    assert (await api.client.get("/api/v1/session", headers=t)).status == 200
    resp = await api.client.patch(
        f"/api/v1/staff/{staff['id']}", json={"roles": ["staff", "auditor"]}, headers=h
    )
    assert resp.status == 200 and (await resp.json())["roles"] == ["staff", "auditor"]
    await problem(await api.client.get("/api/v1/session", headers=t), 401)  # roles changed
    t = bearer((await (await api.client.post("/api/v1/session", json=login)).json())["token"])
    resp = await api.client.post(f"/api/v1/staff/{staff['id']}/deactivate", headers=h)
    assert resp.status == 200 and (await resp.json())["active"] is False
    await problem(await api.client.get("/api/v1/session", headers=t), 401)
    await problem(await api.client.post("/api/v1/session", json=login), 401, "sign-in-failed")
    assert {"account.created", "account.roles_changed", "account.deactivated"} <= set(
        api.node.audit.actions()
    )
