"""What the API takes is exactly what it says: no key twice, no coercion, no hidden characters.

Each case is refused with a problem document and leaves the store as it was, on SQLite
and on PostgreSQL (the ``api`` fixture runs on both).
"""

from __future__ import annotations

from typing import Any

from tests.integration.api.conftest import Api
from tests.integration.api.test_bad_input import admin_headers, problem
from transfer.store.permissions import Role

PUPIL: dict[str, Any] = {
    "upn": "H801200001001",
    "surname": "Okafor",
    "forename": "Amara",
    "dob": "2014-11-03",
    "sex": "F",
}


async def _pupils(api: Api, headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = await api.client.get("/api/v1/pupils", headers=headers)
    assert resp.status == 200
    items: list[dict[str, Any]] = (await resp.json())["items"]
    return items


async def test_a_body_with_a_key_twice_is_refused_and_nothing_is_stored(api: Api) -> None:
    h = await admin_headers(api)
    raw = (
        b'{"upn": "H801200001001", "surname": "Okafor", "forename": "Amara", '
        b'"dob": "2014-11-03", "sex": "F", "surname": "Someone Else"}'
    )
    resp = await api.client.post(
        "/api/v1/pupils", data=raw, headers={**h, "Content-Type": "application/json"}
    )
    doc = await problem(resp, 400, "malformed-body")
    assert "'surname' appears twice" in doc["detail"]
    assert await _pupils(api, h) == []
    # Nested objects too, and a key given twice with the same value.
    raw = (
        b'{"upn": "H801200001001", "surname": "Okafor", "forename": "Amara", "dob": '
        b'"2014-11-03", "sex": "F", "destination": {"kind": "unknown", "kind": "unknown"}}'
    )
    resp = await api.client.post(
        "/api/v1/pupils", data=raw, headers={**h, "Content-Type": "application/json"}
    )
    await problem(resp, 400, "malformed-body")
    assert await _pupils(api, h) == []


async def test_a_role_given_twice_cannot_slip_past_a_reader_of_the_first(api: Api) -> None:
    h = await admin_headers(api)
    staff = await api.node.person("teacher", [Role.STAFF])
    raw = b'{"roles": ["staff"], "roles": ["staff", "administrator"]}'
    resp = await api.client.patch(
        f"/api/v1/staff/{staff.staff.id}",
        data=raw,
        headers={**h, "Content-Type": "application/json"},
    )
    await problem(resp, 400, "malformed-body")
    resp = await api.client.get(f"/api/v1/staff/{staff.staff.id}", headers=h)
    assert (await resp.json())["roles"] == ["staff"]


async def test_a_number_for_a_date_is_refused_not_read_as_1970(api: Api) -> None:
    h = await admin_headers(api)
    for field, value in [
        ("leaving_date", 0),
        ("dob", 20141103),
        ("on_roll_from", 1.5),
        ("leaving_date", True),
    ]:
        body = {**PUPIL, field: value}
        doc = await problem(await api.client.post("/api/v1/pupils", json=body, headers=h), 422)
        assert doc["errors"][0]["location"] == f"body.{field}"
    assert await _pupils(api, h) == []
    # Other coercions are refused too: a string for a number, a number for a string.
    doc = await problem(
        await api.client.post("/api/v1/pupils", json={**PUPIL, "year_group": 6}, headers=h), 422
    )
    assert doc["errors"][0]["location"] == "body.year_group"
    dsl = await api.node.person("dsl", [Role.DSL])
    dh = await api.sign_in(dsl)
    resp = await api.client.post(
        "/api/v1/tokens",
        json={"name": "sync", "scopes": ["pupil.read"], "expires_in_days": "30"},
        headers=dh,
    )
    doc = await problem(resp, 422)
    assert doc["errors"][0]["location"] == "body.expires_in_days"
    # The ISO forms a client is told to send are taken.
    resp = await api.client.post(
        "/api/v1/pupils", json={**PUPIL, "leaving_date": "2026-07-22"}, headers=h
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["leaving_date"] == "2026-07-22"


async def test_hidden_and_direction_changing_characters_are_refused_in_what_a_dsl_reads(
    api: Api,
) -> None:
    h = await admin_headers(api)
    for field, value, named in [
        ("surname", "Smith\u202eKCAB", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("forename", "Am\u2066ara\u2069", "U+2066 LEFT-TO-RIGHT ISOLATE"),
        ("surname", "Oka\u200bfor", "U+200B ZERO WIDTH SPACE"),
        ("surname", "Okafor\u200f", "U+200F RIGHT-TO-LEFT MARK"),
        ("forename", "Amara\nJane", "U+000A"),
    ]:
        body = {**PUPIL, field: value}
        doc = await problem(await api.client.post("/api/v1/pupils", json=body, headers=h), 422)
        assert doc["errors"][0]["location"] == f"body.{field}"
        assert named in doc["errors"][0]["message"], doc
        assert "direction-changing" in doc["detail"]
    resp = await api.client.post(
        "/api/v1/pupils",
        json={**PUPIL, "destination": {"kind": "school", "name": "Oak\u202dAcademy"}},
        headers=h,
    )
    await problem(resp, 422)
    assert await _pupils(api, h) == []
    # Joiners that scripts need are fine in a name (Persian: ZWNJ).
    resp = await api.client.post(
        "/api/v1/pupils", json={**PUPIL, "forename": "\u0645\u06cc\u200c\u0631\u0627"}, headers=h
    )
    assert resp.status == 201, await resp.text()
    pupil_id = (await resp.json())["id"]

    dsl = await api.node.person("dsl", [Role.DSL])
    dh = await api.sign_in(dsl)
    concern = {
        "pupil_ids": [pupil_id],
        "category": "child_protection",
        "happened_at": "2026-07-01T09:15:00+01:00",
        "account": "She said \u202eemoh og ot derics\u202c today.",
    }
    doc = await problem(await api.client.post("/api/v1/concerns", json=concern, headers=dh), 422)
    assert "U+202E" in doc["errors"][0]["message"]
    # Free text over several lines, with the right-to-left marks Arabic writing uses, is fine.
    concern["account"] = "Said:\n\u0642\u0627\u0644\u062a \u200fshe is scared\u200e."
    resp = await api.client.post("/api/v1/concerns", json=concern, headers=dh)
    assert resp.status == 201, await resp.text()
    concerns = await (await api.client.get("/api/v1/concerns", headers=dh)).json()
    assert len(concerns["items"]) == 1
    # Staff names and API token names too.
    resp = await api.client.patch(
        f"/api/v1/staff/{dsl.staff.id}", json={"display_name": "Sam\u202ePatel"}, headers=h
    )
    await problem(resp, 422)


async def test_an_empty_document_is_refused_not_stored(api: Api) -> None:
    """Found by the Schemathesis contract test: an empty body became a 0-byte document."""
    h = await admin_headers(api)
    resp = await api.client.post("/api/v1/pupils", json=PUPIL, headers=h)
    pupil_id = (await resp.json())["id"]
    dsl = await api.node.person("dsl", [Role.DSL])
    dh = await api.sign_in(dsl)

    async def nothing() -> Any:  # chunked, no Content-Length: found only at the end
        for _ in ():
            yield b""

    for data in (b"", nothing()):
        resp = await api.client.post(
            f"/api/v1/pupils/{pupil_id}/documents",
            data=data,
            params={"filename": "x.pdf"},
            headers={**dh, "Content-Type": "application/pdf"},
        )
        doc = await problem(resp, 400, "invalid-input")
        assert "empty" in doc["detail"]
    chronology = await api.client.get(f"/api/v1/pupils/{pupil_id}/chronology", headers=dh)
    assert (await chronology.json())["items"] == []
    resp = await api.client.post(
        f"/api/v1/pupils/{pupil_id}/documents",
        data=b"%PDF-1.7",
        params={"filename": "x.pdf"},
        headers={**dh, "Content-Type": "application/pdf"},
    )
    assert resp.status == 201, await resp.text()
