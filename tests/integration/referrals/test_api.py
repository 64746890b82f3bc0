"""The referral routes of the JSON API, on a real socket over SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from keys.keyfiles import KeyFiles
from keys.sealing import KekProtection
from schemas.records import NewConcern, NewPupil
from tests.integration.api.conftest import Api, api_config
from tests.support.referrals import add_agency, mash_form
from tests.unit.auth.support import KEK, URN, open_node
from transfer.api import create_app
from transfer.directory.service import Directory
from transfer.referrals.service import Referrals
from transfer.store.permissions import Role


@dataclass
class Rig:
    api: Api
    pupil_id: str
    concern_id: str


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'handover.db'}"
    data_dir = tmp_path / "data"
    async with open_node(db_url, data_dir) as node:
        keys = KeyFiles.for_data_dir(data_dir, KekProtection(KEK))
        await keys.create(URN)
        directory = Directory(node.store, keys=keys)
        await add_agency(directory, "mash-bristol", "Bristol MASH", "social_care")
        referrals = Referrals(node.store, keys, directory)
        admin = await node.person("admin", [Role.ADMINISTRATOR])
        dsl = await node.person("dana", [Role.DSL])
        await node.person("sam", [Role.STAFF])
        pupil = await node.store.create_pupil(
            await node.store.actor_for(admin.staff.id),
            NewPupil(
                upn="H801200001001",
                surname="Okafor",
                forename="Amara",
                dob=datetime(2014, 11, 3).date(),
                sex="F",
            ),
        )
        concern = await node.store.record_concern(
            await node.store.actor_for(dsl.staff.id),
            NewConcern(
                pupil_ids=(pupil.id,),
                category="child_protection",
                happened_at=datetime(2026, 9, 1, tzinfo=UTC),
                account="Amara said Kai Smith hit her.",
            ),
        )
        app = create_app(
            store=node.store,
            accounts=node.accounts,
            audit=node.audit,
            config=api_config(),
            exports_dir=tmp_path / "exports",
            referrals=referrals,
        )
        async with TestClient(TestServer(app)) as client:
            yield Rig(Api(node=node, client=client, data_dir=data_dir), pupil.id, concern.id)


async def test_referral_routes(rig: Rig) -> None:
    api, client = rig.api, rig.api.client
    dsl = await api.sign_in(api.node.people["dana"])
    staff = await api.sign_in(api.node.people["sam"])
    body = {
        "pupil_id": rig.pupil_id,
        "agency_org_id": "mash-bristol",
        "form": mash_form(),
        "selection": [{"kind": "concern", "id": rig.concern_id}],
        "redactions": [{"text": "Kai Smith"}],
    }
    bad_form = {**body, "form": {k: v for k, v in mash_form().items() if k != "risk_rating"}}
    resp = await client.post("/api/v1/referrals", json=bad_form, headers=dsl)
    assert resp.status == 422  # the API's status for a body that fails validation
    problem = await resp.json()
    assert "risk_rating" in problem["detail"]

    resp = await client.post("/api/v1/referrals", json=body, headers=staff)
    assert resp.status == 403

    resp = await client.post("/api/v1/referrals", json=body, headers=dsl)
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    rid = record["id"]
    assert record["state"] == "draft" and record["redactions"][0]["text"] == "Kai Smith"

    resp = await client.get(f"/api/v1/referrals/{rid}/preview", headers=dsl)
    assert resp.status == 200
    items = (await resp.json())["items"]
    assert items[0]["record"]["account"] == "Amara said [redacted] hit her."

    resp = await client.post(
        f"/api/v1/referrals/{rid}/redactions", json={"text": "Nobody"}, headers=dsl
    )
    assert resp.status == 400
    assert (await resp.json())["type"].endswith("invalid-redaction")

    resp = await client.post(
        f"/api/v1/referrals/{rid}/acknowledgement",
        json={"name": "Jo", "agency_reference": "M-1"},
        headers=dsl,
    )
    assert resp.status == 409

    resp = await client.get("/api/v1/referrals?state=draft", headers=dsl)
    assert [r["id"] for r in (await resp.json())["items"]] == [rid]
    resp = await client.get(f"/api/v1/referrals/{rid}", headers=staff)
    assert resp.status == 403
    resp = await client.get("/api/v1/referrals/nope", headers=dsl)
    assert resp.status == 404


async def test_referral_checks_over_http(rig: Rig) -> None:
    """Issue 11, items 16 and 17: the child by UPN, a draft made whole or not at all, a draft
    discarded, and nothing chosen sent only when confirmed."""
    api, client = rig.api, rig.api.client
    dsl = await api.sign_in(api.node.people["dana"])
    body = {"pupil_id": "H801200001001", "agency_org_id": "mash-bristol", "form": mash_form()}
    resp = await client.post(
        "/api/v1/referrals",
        json={
            **body,
            "selection": [{"kind": "concern", "id": rig.concern_id}],
            "redactions": [{"text": "Nobody Here"}],
        },
        headers=dsl,
    )
    assert resp.status == 400 and (await resp.json())["type"].endswith("invalid-redaction")
    assert (await (await client.get("/api/v1/referrals", headers=dsl)).json())["items"] == []
    resp = await client.post(
        "/api/v1/referrals", json={**body, "pupil_id": "A801200001001"}, headers=dsl
    )
    problem = await resp.json()
    assert resp.status == 400 and problem["type"].endswith(":invalid-upn")
    assert problem["category"] == "check-letter" and "wrong check letter" in problem["detail"]

    resp = await client.post("/api/v1/referrals", json=body, headers=dsl)
    assert resp.status == 201, await resp.text()
    record = await resp.json()
    assert record["pupil_id"] == rig.pupil_id and record["selection"] == []
    rid = record["id"]
    resp = await client.get("/api/v1/referrals?pupil_id=H801200001001", headers=dsl)
    assert [r["id"] for r in (await resp.json())["items"]] == [rid]

    send = f"/api/v1/referrals/{rid}/send"
    resp = await client.post(send, json={"route": "offline"}, headers=dsl)
    problem = await resp.json()
    assert resp.status == 422 and problem["type"].endswith(":nothing-selected"), problem
    assert (await (await client.get(f"/api/v1/referrals/{rid}", headers=dsl)).json())[
        "state"
    ] == "draft"
    resp = await client.post(send, json={"route": "offline", "form_only": True}, headers=dsl)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["referral"]["state"] == "sent"
    resp = await client.delete(f"/api/v1/referrals/{rid}", headers=dsl)
    assert resp.status == 409  # sealed: no longer a draft

    resp = await client.post("/api/v1/referrals", json=body, headers=dsl)
    other = (await resp.json())["id"]
    staff = await api.sign_in(api.node.people["sam"])
    assert (await client.delete(f"/api/v1/referrals/{other}", headers=staff)).status == 403
    resp = await client.delete(f"/api/v1/referrals/{other}", headers=dsl)
    assert resp.status == 200, await resp.text()
    gone = await resp.json()
    assert gone["id"] == other and gone["state"] == "discarded"
    assert (await client.get(f"/api/v1/referrals/{other}", headers=dsl)).status == 404
