"""Alerts and transfer requests in the JSON API, on a real socket: permissions, problem
documents, and the OpenAPI document covering the new routes. The other node is an
in-memory peer here (the real two-node round trip is in test_requests.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas.records import NewPupil
from tests.integration.alerts.test_alerts import upn
from tests.integration.api.conftest import Api, api_config
from tests.integration.api.test_openapi import documented_routes, served_routes
from tests.unit.auth.support import OTHER_URN, URN, open_node
from transfer.alerts import Alerts
from transfer.api import create_app
from transfer.config import SmtpSection
from transfer.errors import NotFoundError
from transfer.exchange.requests import TransferRequests
from transfer.mail import Mailer
from transfer.store.permissions import Role


@dataclass
class Entry:
    name: str


class StubDirectory:
    async def entry(self, org_id: str) -> Entry:
        if org_id != OTHER_URN:
            raise NotFoundError(f"organisation {org_id!r} is not in this node's directory")
        return Entry("Cliff Road Academy")


@dataclass
class MemoryPeer:
    """Takes every signed request it is given (the other node, in memory)."""

    calls: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    async def request_json(
        self,
        from_org: str,
        to_org: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.calls.append((from_org, to_org, path, dict(body or {})))
        return {}


class NoOutbox:
    async def queue_leaver_file(self, *a: Any, **k: Any) -> Any:  # pragma: no cover
        raise AssertionError("not used here")

    async def latest_for_pupil(self, *a: Any, **k: Any) -> Any:  # pragma: no cover
        return None


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Api, MemoryPeer, Alerts]]:
    async with open_node(db_url, tmp_path / "data") as node:
        config = api_config()
        alerts = Alerts(node.store, Mailer(SmtpSection()))
        peer = MemoryPeer()
        requests = TransferRequests(
            store=node.store,
            outbox=NoOutbox(),
            client=peer,
            directory=StubDirectory(),
            alerts=alerts,
            config=config,
        )
        app = create_app(
            store=node.store,
            accounts=node.accounts,
            audit=node.audit,
            config=config,
            exports_dir=tmp_path / "exports",
            alerts=alerts,
            transfer_requests=requests,
        )
        async with TestClient(TestServer(app)) as client:
            yield Api(node=node, client=client, data_dir=tmp_path / "data"), peer, alerts


async def test_requests_and_alerts_over_http(api: tuple[Api, MemoryPeer, Alerts]) -> None:
    a, peer, alerts = api
    dsl = await a.node.person("dsl", [Role.DSL])
    teacher = await a.node.person("teacher", [Role.STAFF])
    admin = await a.node.person("office", [Role.ADMINISTRATOR], enrol=False)
    office = await a.node.store.actor_for(admin.staff.id)
    await a.node.store.create_pupil(
        office,
        NewPupil(upn=upn(41), surname="Okafor", forename="Amara", dob=date(2014, 11, 3), sex="F"),
    )
    h = await a.sign_in(dsl)
    c = a.client

    body = {"upn": upn(41), "from_org_id": OTHER_URN, "note": "Joined Y7"}
    r = await c.post("/api/v1/transfer-requests", headers=h, json=body)
    assert r.status == 201, await r.text()
    made = await r.json()
    assert made["state"] == "sent" and made["outbound"] is None  # sent at once
    assert peer.calls[0][:3] == (URN, OTHER_URN, "/peer/v1/transfer-requests")
    assert peer.calls[0][3]["upn"] == upn(41) and peer.calls[0][3]["note"] == "Joined Y7"

    r = await c.get("/api/v1/transfer-requests?side=sent", headers=h)
    assert [x["request_id"] for x in (await r.json())["items"]] == [made["request_id"]]
    r = await c.get("/api/v1/transfer-requests?side=sideways", headers=h)
    assert r.status == 422 and r.content_type == "application/problem+json"
    r = await c.get(f"/api/v1/transfer-requests/{made['request_id']}", headers=h)
    assert r.status == 200
    r = await c.post(
        "/api/v1/transfer-requests", headers=h, json={"upn": upn(41), "from_org_id": "999999"}
    )
    assert r.status == 404 and "directory" in (await r.json())["detail"]
    r = await c.post("/api/v1/transfer-requests", headers=h, json={"upn": upn(41)})
    assert r.status == 422
    # Our own request cannot be authorised by us.
    r = await c.post(
        f"/api/v1/transfer-requests/{made['request_id']}/authorise", headers=h, json={}
    )
    assert r.status == 409

    # Alerts: a DSL sees and dismisses; other staff see only the alerts that concern them
    # (an overdue action they own) and dismiss none.
    assert await alerts.notify(URN, key="k", level="due", subject="Due today", message="M")
    r = await c.get("/api/v1/alerts", headers=h)
    (alert,) = (await r.json())["items"]
    assert alert["level"] == "due"
    th = await a.sign_in(teacher)
    r = await c.get("/api/v1/alerts", headers=th)
    assert r.status == 200 and (await r.json())["items"] == []
    assert await alerts.notify(
        URN,
        key="mine",
        level="overdue",
        subject="An action is overdue",
        message="M",
        staff_id=teacher.staff.id,
    )
    r = await c.get("/api/v1/alerts", headers=th)
    assert [x["key"] for x in (await r.json())["items"]] == ["mine"]
    r = await c.post(f"/api/v1/alerts/{alert['id']}/dismiss", headers=th, json={})
    assert r.status == 403
    r = await c.post(
        "/api/v1/transfer-requests", headers=th, json={"upn": upn(41), "from_org_id": OTHER_URN}
    )
    assert r.status == 403
    r = await c.post(f"/api/v1/alerts/{alert['id']}/dismiss", headers=h, json={})
    assert r.status == 200 and (await r.json())["closed_reason"] == "dismissed"
    r = await c.get("/api/v1/alerts?state=all", headers=h)
    assert len((await r.json())["items"]) == 2
    r = await c.get("/api/v1/alerts?state=closed", headers=h)
    assert r.status == 422
    r = await c.post("/api/v1/alerts/nope/dismiss", headers=h, json={})
    assert r.status == 404

    # The OpenAPI document describes exactly what is served, the new routes included.
    doc = await (await c.get("/api/v1/openapi.json")).json()
    assert c.app is not None
    assert served_routes(c.app) == documented_routes(doc)
    assert ("post", "/api/v1/transfer-requests/{request_id}/decline") in documented_routes(doc)
