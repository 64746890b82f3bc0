"""The outbox through the JSON API and the CLI's handlers, on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from keys.keyfiles import KeyFiles
from keys.keyset import KeySet
from keys.sealing import KekProtection
from schemas.records import Destination, NewPupil
from tests.integration.api.conftest import Api, api_config
from tests.integration.exchange.outbox_support import (
    RECEIVER,
    StaticDirectory,
    TinyPeer,
    running_peer,
    upn,
)
from tests.unit.auth.support import KEK, URN, open_node
from transfer.api import create_app
from transfer.exchange.outbox import Outbox
from transfer.store.permissions import Role
from transfer.transport.http import PeerClient


@dataclass
class Rig:
    api: Api
    outbox: Outbox
    peer: TinyPeer


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    async with open_node(db, tmp_path / "data") as node:
        keys = KeyFiles(tmp_path / "data" / "keys", KekProtection(KEK))
        own = await keys.create(URN)
        receiver = KeySet.generate(RECEIVER)
        peer = TinyPeer(keyset=receiver, sender_keys={own.key_id_hex: own.minisign_public_key.key})
        async with running_peer(peer):
            directory = StaticDirectory()
            directory.add(receiver, "Cliff Road Academy", peer.url)
            config = api_config()
            client = PeerClient(keys=keys, directory=directory, config=config)
            outbox = Outbox(
                store=node.store,
                keys=keys,
                directory=directory,
                client=client,
                config=config,
                data_dir=tmp_path / "data",
            )
            app = create_app(
                store=node.store,
                accounts=node.accounts,
                audit=node.audit,
                config=config,
                exports_dir=tmp_path / "exports",
                outbox=outbox,
            )
            async with TestClient(TestServer(app)) as http:
                yield Rig(Api(node=node, client=http, data_dir=tmp_path / "data"), outbox, peer)
            await client.close()


async def test_a_dsl_sends_follows_and_cancels_through_the_api(rig: Rig) -> None:
    api, c = rig.api, rig.api.client
    dsl = await api.node.person("dsl", [Role.DSL])
    teacher = await api.node.person("teacher", [Role.STAFF])
    dh, th = await api.sign_in(dsl), await api.sign_in(teacher)
    actor = await api.node.store.actor_for(dsl.staff.id)
    pupil = await api.node.store.create_pupil(
        actor,
        NewPupil(
            upn=upn(7),
            surname="Nowak",
            forename="Leon",
            dob=date(2014, 11, 2),
            sex="M",
            destination=Destination(kind="school", urn=RECEIVER),
        ),
    )
    body = {"pupil_id": pupil.id, "to_org_id": RECEIVER}
    resp = await c.post("/api/v1/outbox/leaver-files", json=body, headers=th)
    assert resp.status == 403 and (await resp.json())["status"] == 403
    resp = await c.post("/api/v1/outbox/leaver-files", json={**body, "x": 1}, headers=dh)
    assert resp.status == 422  # the project's status for a body that fails validation
    resp = await c.post(
        "/api/v1/outbox/leaver-files", json={**body, "to_org_id": "nope"}, headers=dh
    )
    assert resp.status == 404
    resp = await c.post("/api/v1/outbox/leaver-files", json=body, headers=dh)
    assert resp.status == 201, await resp.text()
    queued = await resp.json()
    assert queued["state"] == "queued" and queued["to_name"] == "Cliff Road Academy"
    again = await c.post("/api/v1/outbox/leaver-files", json=body, headers=dh)
    assert again.status == 409
    listed = await (await c.get("/api/v1/outbox?state=queued", headers=dh)).json()
    assert [i["id"] for i in listed["items"]] == [queued["id"]]
    assert (await c.get("/api/v1/outbox?state=lost", headers=dh)).status == 422
    resend = await c.post(f"/api/v1/outbox/{queued['id']}/resend", headers=dh)
    assert resend.status == 409 and "only a failed package" in (await resend.json())["detail"]
    cancel = await c.post(f"/api/v1/outbox/{queued['id']}/cancel", headers=dh)
    assert cancel.status == 200 and (await cancel.json())["state"] == "cancelled"
    assert (await c.get("/api/v1/outbox/not-a-uuid", headers=dh)).status == 404  # ids are UUIDs
    missing = "00000000-0000-4000-8000-000000000000"
    assert (await c.get(f"/api/v1/outbox/{missing}", headers=dh)).status == 404

    resp = await c.post("/api/v1/outbox/leaver-files", json=body, headers=dh)
    second = await resp.json()
    assert await rig.outbox.deliver_due() == 1
    shown = await (await c.get(f"/api/v1/outbox/{second['id']}", headers=dh)).json()
    assert shown["state"] == "delivered"
    assert [e["event"] for e in shown["events"]] == ["draft", "queued", "sent", "receipt.delivered"]
    receipt = shown["receipts"][0]
    assert receipt["kind"] == "delivered" and receipt["body"]["package_id"] == second["id"]
    assert receipt["signature"].startswith("untrusted comment:")
    late = await c.post(f"/api/v1/outbox/{second['id']}/cancel", headers=dh)
    assert late.status == 409
    spec = await (await c.get("/api/v1/openapi.json")).json()
    assert "/api/v1/outbox/{package_id}/resend" in spec["paths"]


async def test_the_api_asks_for_a_reason_and_refuses_an_agency(rig: Rig) -> None:
    """Issue 11, items 16 and 17 through the API: the pupil by UPN, a reason when the school
    is not the recorded destination, and a leaver's file never to an agency."""
    from transfer.directory.document import entry_from_keyset

    api, c = rig.api, rig.api.client
    dsl = await api.node.person("dsl", [Role.DSL])
    dh = await api.sign_in(dsl)
    actor = await api.node.store.actor_for(dsl.staff.id)
    await api.node.store.create_pupil(
        actor,
        NewPupil(upn=upn(8), surname="Begum", forename="Yusuf", dob=date(2015, 1, 9), sex="M"),
    )
    body = {"pupil_id": upn(8).lower(), "to_org_id": RECEIVER}
    resp = await c.post("/api/v1/outbox/leaver-files", json=body, headers=dh)
    problem = await resp.json()
    assert resp.status == 422 and problem["type"].endswith(":reason-required"), problem
    assert problem["reasons_needed"] == ["not_destination"]
    assert "no destination is recorded" in problem["detail"]
    resp = await c.post(
        "/api/v1/outbox/leaver-files", json={**body, "reason": "joined them mid-term"}, headers=dh
    )
    assert resp.status == 201, await resp.text()
    sent = await resp.json()
    assert sent["reasons_needed"] == ["not_destination"]
    assert sent["send_reason"] == "joined them mid-term"
    resp = await c.get(f"/api/v1/outbox?pupil_id={upn(8)}", headers=dh)
    assert [r["id"] for r in (await resp.json())["items"]] == [sent["id"]]

    agency = KeySet.generate("mash-bristol")
    directory = rig.outbox.directory
    assert isinstance(directory, StaticDirectory)
    directory.by_id["mash-bristol"] = entry_from_keyset(
        agency, name="Bristol MASH", kind="social_care", endpoint=None
    )
    resp = await c.post(
        "/api/v1/outbox/leaver-files",
        json={**body, "to_org_id": "mash-bristol", "reason": "asked"},
        headers=dh,
    )
    problem = await resp.json()
    assert resp.status == 403 and problem["type"].endswith(":not-a-school"), problem
    resp = await c.post(
        "/api/v1/outbox/leaver-files", json={**body, "pupil_id": "H801200001009"}, headers=dh
    )
    assert resp.status == 400 and (await resp.json())["type"].endswith(":invalid-upn")
