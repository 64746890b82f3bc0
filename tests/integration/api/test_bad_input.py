"""Bad input never produces a 500: each case gets its 4xx and an RFC 9457 problem document."""

from __future__ import annotations

from datetime import date
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from schemas.records import NewPupil
from tests.integration.api.conftest import MAX_BODY, MAX_UPLOAD, Api, api_config
from transfer.api import create_app
from transfer.api.routes import ROUTES
from transfer.api.routing import SIGNED_IN, Call, Route
from transfer.store.permissions import Role

PROBLEM = "application/problem+json"


async def problem(resp: ClientResponse, status: int, slug: str | None = None) -> dict[str, Any]:
    """Assert ``resp`` is a problem document with ``status`` (and type ``slug``)."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    doc: dict[str, Any] = await resp.json()
    assert set(doc) >= {"type", "title", "status", "detail", "instance"}
    assert doc["status"] == status
    assert doc["type"].startswith("urn:handover:problem:")
    if slug is not None:
        assert doc["type"] == f"urn:handover:problem:{slug}"
    rid = resp.headers["X-Request-Id"]
    assert doc["instance"] == f"urn:handover:request:{rid}"
    assert "Traceback" not in doc["detail"]
    return doc


async def admin_headers(api: Api) -> dict[str, str]:
    admin = await api.node.person("admin", [Role.ADMINISTRATOR])
    return await api.sign_in(admin)


async def test_malformed_json_is_400(api: Api) -> None:
    h = await admin_headers(api)
    for raw in [b"{", b"{'upn': 1}", b"\xff\xfe", b"", b"[1, 2"]:
        resp = await api.client.post(
            "/api/v1/pupils", data=raw, headers={**h, "Content-Type": "application/json"}
        )
        await problem(resp, 400, "malformed-body")


async def test_unknown_and_wrongly_typed_fields_are_422_with_an_errors_list(api: Api) -> None:
    h = await admin_headers(api)
    body = {
        "upn": "H801200001001",
        "surname": "Okafor",
        "forename": "Amara",
        "dob": "2014-11-03",
        "sex": "F",
        "favourite_colour": "blue",
    }
    doc = await problem(await api.client.post("/api/v1/pupils", json=body, headers=h), 422)
    assert {
        "location": "body.favourite_colour",
        "message": "is not a known field",
        "type": "extra_forbidden",
    } in doc["errors"]
    body.pop("favourite_colour")
    body["dob"] = "the third of November"
    doc = await problem(await api.client.post("/api/v1/pupils", json=body, headers=h), 422)
    assert doc["errors"][0]["location"] == "body.dob"
    assert all("input" not in e for e in doc["errors"])  # submitted values are never echoed
    doc = await problem(await api.client.post("/api/v1/pupils", json=[1, 2], headers=h), 422)
    # The sign-in body is strict too.
    resp = await api.client.post(
        "/api/v1/session",
        json={"org": "199001", "username": "x", "password": "y", "remember_me": True},
    )
    doc = await problem(resp, 422, "validation-failed")
    assert "y" not in [e.get("input") for e in doc["errors"]]


async def test_invalid_upn_is_400_naming_the_category(api: Api) -> None:
    h = await admin_headers(api)
    body = {
        "upn": "H801200001002",
        "surname": "Okafor",
        "forename": "Amara",
        "dob": "2014-11-03",
        "sex": "F",
    }  # wrong check letter
    doc = await problem(await api.client.post("/api/v1/pupils", json=body, headers=h), 400)
    assert "UPN" in doc["detail"] or "upn" in doc["detail"].lower()
    body["upn"] = "not a upn at all"
    await problem(await api.client.post("/api/v1/pupils", json=body, headers=h), 400)
    body["upn"] = "H801200001001"
    assert (await api.client.post("/api/v1/pupils", json=body, headers=h)).status == 201


async def test_oversized_bodies_are_413(api: Api) -> None:
    h = await admin_headers(api)
    big = b'{"upn": "' + b"A" * (MAX_BODY + 10) + b'"}'
    resp = await api.client.post(
        "/api/v1/pupils", data=big, headers={**h, "Content-Type": "application/json"}
    )
    await problem(resp, 413, "too-large")

    async def chunked() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    resp = await api.client.post(
        "/api/v1/pupils", data=chunked(), headers={**h, "Content-Type": "application/json"}
    )
    await problem(resp, 413, "too-large")
    resp = await api.client.post(
        "/api/v1/ctf-imports",
        data=b"<a>" + b"x" * MAX_BODY + b"</a>",
        headers={**h, "Content-Type": "application/xml"},
    )
    await problem(resp, 413)


async def test_oversized_document_upload_is_413_and_keeps_nothing(api: Api) -> None:
    dsl = await api.node.person("dsl", [Role.DSL])
    h = await api.sign_in(dsl)
    pupil = await api.node.store.create_pupil(
        (await api.node.session(dsl)).actor,
        NewPupil(upn="H801200001001", surname="O", forename="A", dob=date(2014, 11, 3), sex="F"),
    )

    async def stream() -> Any:
        yield b"%PDF-1.7\n" + b"\0" * (65536 - 9)  # a kind of document the store keeps
        for _ in range(MAX_UPLOAD // 65536 + 1):
            yield b"\0" * 65536

    url = f"/api/v1/pupils/{pupil.id}/documents?filename=big.bin"
    await problem(await api.client.post(url, data=stream(), headers=h), 413)
    await problem(
        await api.client.post(url, data=b"x", headers={**h, "Content-Length": str(MAX_UPLOAD + 1)}),
        413,
    )
    docs = api.data_dir / "documents"
    assert not docs.exists() or not [p for p in docs.rglob("*") if p.is_file()]


async def test_wrong_content_type_is_415(api: Api) -> None:
    h = await admin_headers(api)
    body = '{"upn": "H801200001001"}'
    for ctype in ["text/plain", "application/x-www-form-urlencoded", "application/xml"]:
        resp = await api.client.post(
            "/api/v1/pupils", data=body, headers={**h, "Content-Type": ctype}
        )
        await problem(resp, 415, "unsupported-media-type")
    resp = await api.client.post("/api/v1/pupils", data=body.encode(), headers=h)
    await problem(resp, 415)  # no Content-Type at all
    resp = await api.client.post(
        "/api/v1/ctf-imports", data=b"{}", headers={**h, "Content-Type": "application/json"}
    )
    await problem(resp, 415)


async def test_malformed_ctf_is_400_not_500(api: Api) -> None:
    h = await admin_headers(api)
    hdr = {**h, "Content-Type": "application/xml"}
    for xml in [
        b"<not-closed>",
        b"",
        b"<?xml version='1.0'?><CTfile></CTfile>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
        # Encodings expat cannot read (fuzzing, issue 17 item 11): these answered 500.
        b'<?xml version="1.0" encoding="UTF-7"?><CTfile></CTfile>',
        b'<?xml version="1.0" encoding="x"?><CTfile></CTfile>',
    ]:
        resp = await api.client.post("/api/v1/ctf-imports", data=xml, headers=hdr)
        assert 400 <= resp.status < 500, await resp.text()
        await problem(resp, resp.status)


async def test_unknown_route_method_and_missing_auth(api: Api) -> None:
    await problem(await api.client.get("/api/v1/nothing-here"), 404, "no-such-route")
    await problem(await api.client.get("/favicon.ico"), 404)
    resp = await api.client.patch("/api/v1/session", json={})
    doc = await problem(resp, 405, "method-not-allowed")
    assert set(resp.headers["Allow"].split(", ")) >= {"POST", "DELETE", "GET"}
    assert "POST" in doc["allowed"]
    resp = await api.client.get("/api/v1/pupils")
    await problem(resp, 401, "session-invalid")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    await problem(
        await api.client.get("/api/v1/pupils", headers={"Authorization": "Bearer hos_nonsense"}),
        401,
    )
    await problem(
        await api.client.get("/api/v1/pupils", headers={"Authorization": "Basic YTpi"}), 401
    )


async def test_bad_path_and_query_values_are_4xx(api: Api) -> None:
    h = await admin_headers(api)
    await problem(await api.client.get("/api/v1/pupils/" + "x" * 300, headers=h), 404)
    await problem(await api.client.get("/api/v1/pupils/%00%ff", headers=h), 404)
    body = {
        "upn": "H801200001001",
        "surname": "Oka\u0000for",
        "forename": "Amara",
        "dob": "2014-11-03",
        "sex": "F",
    }
    doc = await problem(await api.client.post("/api/v1/pupils", json=body, headers=h), 422)
    assert doc["errors"][0]["location"] == "body.surname"
    nul_login = {"org": "199001", "username": "ad\u0000min", "password": "x"}
    await problem(await api.client.post("/api/v1/session", json=nul_login), 422)
    dsl = await api.node.person("dsl", [Role.DSL])
    dh = await api.sign_in(dsl)
    await problem(await api.client.get("/api/v1/concerns?pupil_id=a%00b", headers=dh), 422)
    await problem(await api.client.get("/api/v1/concerns?pupil_id=" + "p" * 65, headers=dh), 422)
    some_id = "0b7e7d4e-6a55-4a47-9d1c-0c1d8d3f6f10"
    resp = await api.client.post(f"/api/v1/pupils/{some_id}/documents", data=b"x", headers=dh)
    doc = await problem(resp, 422)
    assert doc["errors"][0]["location"] == "query.filename"
    # A pupil is named by UPN or record id (the OpenAPI document says so): anything else
    # names no pupil; other record ids are UUIDs.
    resp = await api.client.post("/api/v1/pupils/nope/documents", data=b"x", headers=dh)
    assert "name a pupil by UPN or record id" in (await problem(resp, 404))["detail"]
    resp = await api.client.get("/api/v1/concerns/nope", headers=dh)
    assert "concern_id is a UUID" in (await problem(resp, 404))["detail"]
    doc = await problem(await api.client.get("/api/v1/concerns?pupil_id=nope", headers=dh), 422)
    assert doc["errors"][0] == {
        "location": "query.pupil_id",
        "message": "must be a pupil's UPN or record id",
        "type": "string_pattern_mismatch",
    }


async def test_unexpected_errors_are_a_bare_500_problem(api: Api) -> None:
    async def explode(call: Call) -> web.StreamResponse:
        raise RuntimeError("secret internal detail")

    route = Route("GET", "/api/v1/explode", explode, "boom", "test", SIGNED_IN)
    app = create_app(
        store=api.node.store,
        accounts=api.node.accounts,
        audit=api.node.audit,
        config=api_config(),
        routes=(*ROUTES, route),
    )
    teacher = await api.node.person("teacher", [Role.STAFF])
    async with TestClient(TestServer(app)) as client:
        login = await client.post(
            "/api/v1/session",
            json={"org": "199001", "username": "teacher", "password": teacher.password},
        )
        token = (await login.json())["token"]
        resp = await client.get("/api/v1/explode", headers={"Authorization": f"Bearer {token}"})
        doc = await problem(resp, 500, "internal-error")
    assert "secret internal detail" not in str(doc)
    assert api.node.events("api.error")[-1].request_id == resp.headers["X-Request-Id"]


async def test_values_too_long_for_their_columns_are_4xx(api: Api) -> None:
    h = await admin_headers(api)
    base = {
        "upn": "H801200001001",
        "surname": "Okafor",
        "forename": "Amara",
        "dob": "2014-11-03",
        "sex": "F",
    }
    for destination in [
        {"kind": "school", "urn": "1234567890"},
        {"kind": "school", "laestab": "12345678901"},
        {"kind": "school", "name": "n" * 300},
    ]:
        resp = await api.client.post(
            "/api/v1/pupils", json={**base, "destination": destination}, headers=h
        )
        assert 400 <= resp.status < 500, await resp.text()
        await problem(resp, resp.status)
    resp = await api.client.post(
        "/api/v1/staff",
        headers=h,
        json={"username": "u" * 101, "display_name": "x", "roles": ["staff"], "password": "p" * 20},
    )
    await problem(resp, 422)
    resp = await api.client.post(
        "/api/v1/session", json={"org": "1" * 65, "username": "x", "password": "y"}
    )
    await problem(resp, 422)
    resp = await api.client.post(
        "/api/v1/session", json={"org": "199001", "username": "x", "password": "y" * 2000}
    )
    await problem(resp, 422)


async def test_extreme_dates_and_numbers_are_not_500(api: Api) -> None:
    dsl = await api.node.person("dsl", [Role.DSL])
    h = await api.sign_in(dsl)
    resp = await api.client.post(
        "/api/v1/pupils",
        headers=h,
        json={
            "upn": "H801200001001",
            "surname": "O",
            "forename": "A",
            "dob": "2014-11-03",
            "sex": "F",
        },
    )
    pupil = await resp.json()
    for happened in [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-09-07T08:00:00",
    ]:
        body = {
            "pupil_ids": [pupil["id"]],
            "category": "bullying",
            "happened_at": happened,
            "account": "text",
        }
        resp = await api.client.post("/api/v1/concerns", json=body, headers=h)
        assert resp.status < 500, (happened, await resp.text())
    body = {
        "pupil_ids": [pupil["id"]],
        "category": "bullying",
        "happened_at": "2026-09-07T08:00:00Z",
        "account": "text",
        "body_map": [
            {"pupil_id": pupil["id"], "side": "front", "x": 1e308, "y": -0.0, "description": "d"}
        ],
    }
    resp = await api.client.post("/api/v1/concerns", json=body, headers=h)
    await problem(resp, 422)
    body["category"] = "no_such_category"
    body.pop("body_map")
    resp = await api.client.post("/api/v1/concerns", json=body, headers=h)
    assert 400 <= resp.status < 500
    await problem(resp, resp.status)
