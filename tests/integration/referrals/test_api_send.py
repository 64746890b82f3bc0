"""Sealing and sending by each route through the JSON API, taking back, and the portal's
hand-off to the real referrals service: a real server socket, the real PickupPortal and
Referrals, the agency signing in with its passcode and acknowledging with a CSRF token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from keys.keyfiles import KeyFiles
from keys.sealing import KekProtection
from receivers.portal import PickupPortal, PortalSettings
from schemas.records import NewConcern, NewPupil
from tests.integration.api.conftest import Api, api_config
from tests.integration.api.test_openapi import documented_routes, served_routes
from tests.support.referrals import add_agency, mash_form, police_form
from tests.unit.auth.support import KEK, URN, open_node
from transfer.api import create_app
from transfer.auth import CHEAPEST
from transfer.config import Config
from transfer.directory.service import Directory
from transfer.exchange.outbox import Outbox
from transfer.referrals.service import Referrals
from transfer.store.permissions import Role
from transfer.transport.http import PeerClient

MASH_EMAIL = "mash.team@bristol.example.org"
ACCOUNT = "Amara said Kai Smith hit her."


@dataclass
class Rig:
    api: Api
    referrals: Referrals
    portal: PickupPortal
    outbox: Outbox | None
    pupil_id: str
    concern_id: str
    exports: Path

    async def draft(self, headers: dict[str, str], agency: str = "mash-bristol") -> str:
        form = police_form() if agency.startswith("police") else mash_form()
        body = {
            "pupil_id": self.pupil_id,
            "agency_org_id": agency,
            "form": form,
            "selection": [{"kind": "concern", "id": self.concern_id}],
            "redactions": [{"text": "Kai Smith"}],
        }
        resp = await self.api.client.post("/api/v1/referrals", json=body, headers=headers)
        assert resp.status == 201, await resp.text()
        rid: str = (await resp.json())["id"]
        return rid

    async def state(self, rid: str, headers: dict[str, str]) -> dict[str, Any]:
        resp = await self.api.client.get(f"/api/v1/referrals/{rid}", headers=headers)
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data

    def actions(self, prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (e.action, e.outcome, dict(e.detail))
            for e in self.api.node.audit.events
            if e.action.startswith(prefix)
        ]


@asynccontextmanager
async def rig(
    tmp_path: Path, *, with_outbox: bool = False, with_portal: bool = True
) -> AsyncIterator[Rig]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'handover.db'}"
    data_dir = tmp_path / "data"
    async with open_node(db_url, data_dir) as node:
        keys = KeyFiles.for_data_dir(data_dir, KekProtection(KEK))
        await keys.create(URN)
        # The school's key is made now (the real time); the node's clock starts after it.
        node.clock.now = datetime.now(UTC) + timedelta(minutes=1)
        directory = Directory(node.store, keys=keys)
        await add_agency(
            directory,
            "mash-bristol",
            "Bristol MASH",
            "social_care",
            email=MASH_EMAIL,
            endpoint="https://127.0.0.1:9",
        )
        await add_agency(directory, "police-avon", "Avon and Somerset Police", "police")
        referrals = Referrals(node.store, keys, directory)
        portal = PickupPortal(
            node.store,
            keys,
            KEK,
            base_url="http://unset.invalid",
            acknowledgements=referrals,
            clock=node.clock,
            settings=PortalSettings(passcode_cost=CHEAPEST),
        )
        config = api_config()
        peer = PeerClient(keys=keys, directory=directory, config=Config())
        outbox = None
        if with_outbox:
            outbox = Outbox(
                store=node.store,
                keys=keys,
                directory=directory,
                client=peer,
                config=config,
                data_dir=data_dir,
            )
        admin = await node.person("admin", [Role.ADMINISTRATOR])
        await node.person("dana", [Role.DSL])
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
            await node.store.actor_for(node.people["dana"].staff.id),
            NewConcern(
                pupil_ids=(pupil.id,),
                category="child_protection",
                happened_at=datetime(2026, 9, 1, tzinfo=UTC),
                account=ACCOUNT,
            ),
        )
        app = create_app(
            store=node.store,
            accounts=node.accounts,
            audit=node.audit,
            config=config,
            exports_dir=tmp_path / "exports",
            referrals=referrals,
            portal=portal if with_portal else None,
            outbox=outbox,
        )
        try:
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                portal.base_url = str(client.make_url("")).rstrip("/")
                yield Rig(
                    Api(node=node, client=client, data_dir=data_dir),
                    referrals,
                    portal,
                    outbox,
                    pupil.id,
                    concern.id,
                    tmp_path / "exports",
                )
        finally:
            await peer.close()


def _kind_of(path: Path) -> str:
    return "file" if path.is_file() else "folder" if path.is_dir() else "missing"


def _holds(path: Path, data: bytes) -> bool:
    return data in path.read_bytes()


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, name
    return found.group(1)


async def test_portal_send_and_the_agency_acknowledges_over_http(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        client = r.api.client
        dsl = await r.api.sign_in(r.api.node.people["dana"])
        rid = await r.draft(dsl)

        resp = await client.post(
            f"/api/v1/referrals/{rid}/send",
            json={"route": "portal", "expires_in_days": 3},
            headers=dsl,
        )
        assert resp.status == 201, await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        sent = await resp.json()
        assert sent["route"] == "portal" and sent["referral"]["state"] == "sent"
        assert sent["referral"]["route"] == "portal"
        assert sent["pickup"]["email"] == MASH_EMAIL and sent["pickup"]["state"] == "waiting"
        assert sent["package_id"] == sent["referral"]["package_id"]
        assert sent["emailed"] is False and sent["link"].startswith(r.portal.base_url)
        link, passcode = sent["link"], sent["passcode"]
        assert sent["bundle_path"] is None and sent["passphrase"] is None
        # Shown once: not in the referral, the pickup or any audit event.
        again = await r.state(rid, dsl)
        assert passcode not in str(again) and link.split("t=")[1] not in str(again)
        assert all(passcode not in str(e.detail) for e in r.api.node.audit.events)
        # Nothing sealed stays in a temporary file; only the portal's re-encrypted copy.
        held = sorted(p.name for p in r.portal.directory.iterdir())
        assert held == [f"{sent['pickup']['id']}.age"]

        # The agency, in its own browser session (cookies), over the real socket.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as agency:
            async with agency.get(link) as page_resp:
                assert page_resp.status == 200
                page = await page_resp.text()
            form = {
                "t": _field(page, "t"),
                "csrf": _field(page, "csrf"),
                "method": "passcode",
                "passcode": passcode,
            }
            async with agency.post(
                f"{r.portal.base_url}/portal/open", data=form, allow_redirects=False
            ) as signed:
                assert signed.status == 303, await signed.text()
            assert (await r.state(rid, dsl))["state"] == "sent"  # signed in, not yet seen
            async with agency.get(f"{r.portal.base_url}/portal/referral") as view:
                assert view.status == 200
                page = await view.text()
            assert "[redacted] hit her" in page and "Kai Smith" not in page
            # Seeing the referral is its delivery.
            delivered = await r.state(rid, dsl)
            assert delivered["state"] == "delivered"
            assert [e["action"] for e in delivered["events"]][-1] == "delivered"
            assert delivered["events"][-1]["note"] == "via=portal"
            ack = {"name": "Jo Reed", "reference": "MASH-2026-0042"}
            async with agency.post(
                f"{r.portal.base_url}/portal/acknowledge", data={**ack, "csrf": "0" * 64}
            ) as refused:
                assert refused.status == 403
            assert (await r.state(rid, dsl))["state"] == "delivered"
            async with agency.post(
                f"{r.portal.base_url}/portal/acknowledge",
                data={**ack, "csrf": _field(page, "csrf")},
            ) as done:
                assert done.status == 200 and "Thank you" in await done.text()
            async with agency.get(f"{r.portal.base_url}/portal/referral") as view:
                assert view.status == 200  # a second view changes nothing

        accepted = await r.state(rid, dsl)
        assert accepted["state"] == "accepted"
        assert accepted["agency_reference"] == "MASH-2026-0042"
        assert accepted["acknowledged_by"] == "Jo Reed"
        assert [e["action"] for e in accepted["events"]] == [
            "drafted",
            "sent",
            "delivered",
            "accepted",
        ]
        referral_events = [(a, o) for a, o, _ in r.actions("referral.")]
        for wanted in ("referral.sent", "referral.delivered", "referral.accepted"):
            assert (wanted, "ok") in referral_events
        details = {a: d for a, _, d in r.actions("referral.")}
        assert details["referral.sent"]["route"] == "portal"
        assert details["referral.delivered"]["via"] == "portal"
        assert details["referral.accepted"]["via"] == "portal"
        portal_events = [a for a, _, _ in r.actions("portal.")]
        assert portal_events[:3] == ["portal.created", "portal.opened", "portal.acknowledged"]
        assert "portal.delivery_forwarded" not in portal_events
        assert all("Jo Reed" not in str(d) and "Kai" not in str(d) for _, _, d in r.actions(""))

        # The agency's outcome closes it.
        resp = await client.post(
            f"/api/v1/referrals/{rid}/outcome",
            json={"outcome": {"kind": "social_care", "rag": "red", "decision": "section_47"}},
            headers=dsl,
        )
        assert resp.status == 200 and (await resp.json())["state"] == "closed"
        # Taking back what the agency has: refused.
        resp = await client.post(
            f"/api/v1/referrals/{rid}/unsend", json={"reason": "wrong agency"}, headers=dsl
        )
        assert resp.status == 409


async def test_a_pickup_cannot_move_another_referral_on(tmp_path: Path) -> None:
    """The portal forwards with the pickup's package: a referral not sealed into it stays."""
    async with rig(tmp_path) as r:
        dsl_headers = await r.api.sign_in(r.api.node.people["dana"])
        first = await r.draft(dsl_headers)
        other = await r.draft(dsl_headers)
        resp = await r.api.client.post(
            f"/api/v1/referrals/{first}/send", json={"route": "portal"}, headers=dsl_headers
        )
        assert resp.status == 201
        package_id = (await resp.json())["package_id"]
        with pytest.raises(Exception, match="no referral was sealed into this package"):
            await r.referrals.record_delivery(other, via="portal", package_id=package_id)
        assert (await r.state(other, dsl_headers))["state"] == "draft"
        done = await r.referrals.record_delivery(first, via="portal", package_id=package_id)
        assert done.state == "delivered"
        # Repeated, or after acceptance: no change and no error.
        await r.referrals.record_acknowledgement(first, name="Jo", agency_reference="M-1")
        late = await r.referrals.record_delivery(first, via="portal", package_id=package_id)
        assert late.state == "accepted"
        assert [a for a, _, _ in r.actions("referral.delivered")] == ["referral.delivered"]


async def test_offline_send_handover_and_unsend_by_api(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        client = r.api.client
        dsl = await r.api.sign_in(r.api.node.people["dana"])
        staff = await r.api.sign_in(r.api.node.people["sam"])
        rid = await r.draft(dsl)
        resp = await client.post(
            f"/api/v1/referrals/{rid}/send", json={"route": "offline"}, headers=staff
        )
        assert resp.status == 403
        resp = await client.post(
            f"/api/v1/referrals/{rid}/send",
            json={"route": "offline", "passphrase": True, "zip": True},
            headers=dsl,
        )
        assert resp.status == 201, await resp.text()
        sent = await resp.json()
        assert sent["referral"]["state"] == "sent" and sent["referral"]["route"] == "offline"
        bundle = Path(sent["bundle_path"])
        assert bundle.suffix == ".zip" and _kind_of(bundle) == "file"
        assert bundle.parent == r.exports / "referrals"
        assert re.fullmatch(r"([0-9A-Z]{4}-){5}[0-9A-Z]{4}", sent["passphrase"])
        assert "referral.age" in sent["bundle_files"] and sent["pickup"] is None
        assert not _holds(bundle, sent["passphrase"].encode())

        # Not handed over after all: taken back to a draft, the reason only in the chronology.
        resp = await client.post(
            f"/api/v1/referrals/{rid}/unsend",
            json={"reason": "USB stick lost before the courier came"},
            headers=dsl,
        )
        assert resp.status == 200, await resp.text()
        back = await resp.json()
        assert back["state"] == "draft" and back["route"] is None and back["package_id"] is None
        assert back["events"][-1]["action"] == "unsent"
        withdrawn = [(o, d) for _, o, d in r.actions("referral.withdrawn")]
        assert withdrawn == [("ok", {"route": "offline"})]
        assert all("USB" not in str(d) for _, _, d in r.actions(""))
        resp = await client.post(
            f"/api/v1/referrals/{rid}/unsend", json={"reason": "again"}, headers=dsl
        )
        assert resp.status == 409

        # Sealed again (a new package), handed over, acknowledged, outcome.
        resp = await client.post(
            f"/api/v1/referrals/{rid}/send", json={"route": "offline"}, headers=dsl
        )
        assert resp.status == 201
        second = await resp.json()
        assert second["passphrase"] is None and _kind_of(Path(second["bundle_path"])) == "folder"
        assert second["package_id"] != sent["package_id"]
        resp = await client.post(
            f"/api/v1/referrals/{rid}/handover",
            json={"to_whom": "Duty social worker", "how": "by hand at the MASH office"},
            headers=dsl,
        )
        assert resp.status == 200 and (await resp.json())["state"] == "delivered"
        resp = await client.post(
            f"/api/v1/referrals/{rid}/acknowledgement",
            json={"name": "Jo Reed", "agency_reference": "MASH-7"},
            headers=dsl,
        )
        assert resp.status == 200 and (await resp.json())["state"] == "accepted"


async def test_send_refusals_leave_the_draft(tmp_path: Path) -> None:
    async with rig(tmp_path, with_portal=False) as r:
        client = r.api.client
        dsl = await r.api.sign_in(r.api.node.people["dana"])
        rid = await r.draft(dsl)
        url = f"/api/v1/referrals/{rid}/send"
        for bad in (
            {"route": "node", "passphrase": True},
            {"route": "portal", "zip": True},
            {"route": "offline", "expires_in_days": 3},
            {"route": "portal", "expires_in_days": 0},
            {"route": "pigeon"},
            {},
        ):
            resp = await client.post(url, json=bad, headers=dsl)
            assert resp.status == 422, (bad, await resp.text())
        for route, part in (("node", "outbox"), ("portal", "pickup portal")):
            resp = await client.post(url, json={"route": route}, headers=dsl)
            assert resp.status == 503
            problem = await resp.json()
            assert problem["type"].endswith("route-unavailable")
            assert f"this node has no {part} configured" in problem["detail"]
        resp = await client.post(
            "/api/v1/referrals/nope/send", json={"route": "offline"}, headers=dsl
        )
        assert resp.status == 404
        assert (await r.state(rid, dsl))["state"] == "draft"
        assert not (r.api.data_dir / "outgoing").exists()
        assert not (r.exports / "referrals").exists()


async def test_portal_needs_a_registered_address_and_unsend_withdraws_the_link(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        client = r.api.client
        dsl = await r.api.sign_in(r.api.node.people["dana"])
        police = await r.draft(dsl, agency="police-avon")
        resp = await client.post(
            f"/api/v1/referrals/{police}/send", json={"route": "portal"}, headers=dsl
        )
        assert resp.status == 400
        assert "no registered e-mail address" in (await resp.json())["detail"]
        assert (await r.state(police, dsl))["state"] == "draft"

        rid = await r.draft(dsl)
        resp = await client.post(
            f"/api/v1/referrals/{rid}/send", json={"route": "portal"}, headers=dsl
        )
        assert resp.status == 201
        sent = await resp.json()
        resp = await client.post(
            f"/api/v1/referrals/{rid}/unsend", json={"reason": "sent too early"}, headers=dsl
        )
        assert resp.status == 200 and (await resp.json())["state"] == "draft"
        pickup = await r.portal.get_pickup(
            await r.api.node.store.actor_for(r.api.node.people["dana"].staff.id),
            sent["pickup"]["id"],
        )
        assert pickup.state == "revoked"
        assert list(r.portal.directory.iterdir()) == []  # the stored package is gone
        async with aiohttp.ClientSession() as agency, agency.get(sent["link"]) as page:
            assert page.status == 410


async def test_node_route_queues_in_the_outbox_and_unsend_cancels_it(tmp_path: Path) -> None:
    async with rig(tmp_path, with_outbox=True) as r:
        assert r.outbox is not None
        client = r.api.client
        dsl = await r.api.sign_in(r.api.node.people["dana"])
        police = await r.draft(dsl, agency="police-avon")
        resp = await client.post(
            f"/api/v1/referrals/{police}/send", json={"route": "node"}, headers=dsl
        )
        assert resp.status == 400 and "has no Handover node" in (await resp.json())["detail"]
        assert (await r.state(police, dsl))["state"] == "draft"

        rid = await r.draft(dsl)
        resp = await client.post(
            f"/api/v1/referrals/{rid}/send", json={"route": "node"}, headers=dsl
        )
        assert resp.status == 201, await resp.text()
        sent = await resp.json()
        assert sent["route"] == "node" and sent["referral"]["state"] == "sent"
        package_id = sent["package_id"]
        actor = await r.api.node.store.actor_for(r.api.node.people["dana"].staff.id)
        queued = await r.outbox.get(actor, package_id)
        assert queued.state == "queued" and queued.to_org_id == "mash-bristol"
        assert r.outbox.path_of(package_id).is_file()

        resp = await client.post(
            f"/api/v1/referrals/{rid}/unsend", json={"reason": "wrong child"}, headers=dsl
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["state"] == "draft"
        assert (await r.outbox.get(actor, package_id)).state == "cancelled"
        assert not r.outbox.path_of(package_id).exists()


async def test_openapi_describes_the_send_routes(tmp_path: Path) -> None:
    """With referrals, the portal and the outbox, the document still matches what is served."""
    async with rig(tmp_path, with_outbox=True) as r:
        resp = await r.api.client.get("/api/v1/openapi.json")
        doc = await resp.json()
        app = r.api.client.app
        assert app is not None
        served = {(m, path) for m, path in served_routes(app) if path.startswith("/api/")}
        assert served == documented_routes(doc), served ^ documented_routes(doc)
        ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
        assert len(ids) == len(set(ids))
        send = doc["paths"]["/api/v1/referrals/{referral_id}/send"]["post"]
        assert send["operationId"] == "send_referral"
        schemas = doc["components"]["schemas"]
        assert schemas["SendReferral"]["additionalProperties"] is False
        assert set(schemas["SendReferral"]["properties"]["route"]["enum"]) == {
            "node",
            "portal",
            "offline",
        }
        assert "passcode" in schemas["SentReferral"]["properties"]
        unsend = doc["paths"]["/api/v1/referrals/{referral_id}/unsend"]["post"]
        assert unsend["operationId"] == "withdraw_referral"
