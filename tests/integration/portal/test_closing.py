"""A pickup link closes when the agency acknowledges receipt (after a short, stated grace).

Nothing is released through a closed link, however many requests run at once: a
document's last chunk goes only after one conditional update that the acknowledgement
(another conditional update) cannot interleave with. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
import re
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from receivers.portal import PortalSettings
from receivers.portal.records import PortalVisit
from receivers.portal.service import LinkClosed, LinkExpired, PortalSessionEnded
from receivers.portal.tables import PortalEvent
from tests.support.portal import AGENCY_EMAIL, DOCUMENT, PortalWorld, portal_world, served
from transfer.auth import CHEAPEST

REFUSED = (LinkClosed, LinkExpired, PortalSessionEnded)


def _settings(grace: int) -> PortalSettings:
    return PortalSettings(passcode_cost=CHEAPEST, ack_grace_minutes=grace)


async def _issue(world: PortalWorld) -> tuple[str, str, str]:
    path, _ = world.package()
    issued = await world.portal.create_pickup(
        world.dsl, package=path, referral_id="ref-1", email=AGENCY_EMAIL
    )
    assert issued.link is not None
    return issued.pickup.id, issued.link.split("?t=", 1)[1], issued.passcode


async def _download(world: PortalWorld, secret: str, delay: float = 0.0) -> bytes | str:
    """A whole download as the page does it (session check, then the document), or the
    name of the refusal; started after ``delay`` seconds."""
    await asyncio.sleep(delay)
    try:
        visit = await world.portal.visit(secret)
        _, chunks = await world.portal.download(visit, 0)
        return b"".join([c async for c in chunks])
    except REFUSED as err:
        return type(err).__name__


async def _trail(world: PortalWorld, pickup_id: str) -> list[str]:
    async with world.node.store.sessions() as s:
        rows = await s.scalars(
            select(PortalEvent.kind)
            .where(PortalEvent.pickup_id == pickup_id)
            .order_by(PortalEvent.seq)
        )
        return list(rows)


async def test_nothing_is_released_after_the_acknowledgement(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path, settings=_settings(0)) as world:
        pickup_id, token, passcode = await _issue(world)
        secrets_ = [await world.portal.sign_in(token, passcode=passcode) for _ in range(3)]
        visit = await world.portal.visit(secrets_[0])
        await world.portal.referral(visit)  # opened

        async def acknowledge() -> str:
            await asyncio.sleep(0.15)
            await world.portal.acknowledge(visit, name="Sam Jones", agency_reference="MASH-9")
            return "acknowledged"

        # Downloads start before, around and after the acknowledgement.
        jobs = [_download(world, secrets_[n % 3], n * 0.0125) for n in range(24)]
        jobs.insert(random.randrange(len(jobs)), acknowledge())
        outcomes = await asyncio.gather(*jobs)
        assert outcomes.count("acknowledged") == 1
        whole = [o for o in outcomes if isinstance(o, bytes)]
        assert all(o == DOCUMENT for o in whole)
        assert all(
            o in ("acknowledged", "LinkClosed", "LinkExpired", "PortalSessionEnded")
            for o in outcomes
            if not isinstance(o, bytes)
        )
        # Every document that went out went out before the acknowledgement, in the trail.
        trail = await _trail(world, pickup_id)
        acked = trail.index("acknowledged")
        assert trail.count("download") == len(whole)
        assert "download" not in trail[acked:]
        assert trail[acked:] == ["acknowledged", "closed"]
        # Afterwards nothing opens: not the old sessions, not the passcode, not a download
        # through a visit taken before, and the package is gone from the disk.
        late = await asyncio.gather(*(_download(world, s) for s in secrets_))
        assert late == ["PortalSessionEnded"] * 3
        with pytest.raises(LinkClosed):
            await world.portal.sign_in(token, passcode=passcode)
        with pytest.raises(REFUSED):
            _, chunks = await world.portal.download(visit, 0)
            async for _ in chunks:
                pass
        assert not (world.portal.directory / f"{pickup_id}.age").exists()
        info = await world.portal.get_pickup(world.dsl, pickup_id)
        assert info.state == "acknowledged"


async def test_a_download_running_at_the_acknowledgement_is_cut(
    db_url: str, tmp_path: Path
) -> None:
    async with portal_world(db_url, tmp_path, settings=_settings(0)) as world:
        pickup_id, token, passcode = await _issue(world)
        visit = await world.portal.visit(await world.portal.sign_in(token, passcode=passcode))
        _, chunks = await world.portal.download(visit, 0)
        received = [await anext(chunks)]
        await world.portal.acknowledge(visit, name="Sam Jones", agency_reference="MASH-9")
        with pytest.raises(LinkClosed):
            async for piece in chunks:
                received.append(piece)
        assert len(b"".join(received)) < len(DOCUMENT)
        assert "download" not in await _trail(world, pickup_id)


async def test_the_grace_then_closed_for_everyone(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path, settings=_settings(10)) as world:
        pickup_id, token, passcode = await _issue(world)
        secrets_ = [await world.portal.sign_in(token, passcode=passcode) for _ in range(2)]
        visit: PortalVisit = await world.portal.visit(secrets_[0])
        await world.portal.acknowledge(visit, name="Sam Jones", agency_reference="MASH-9")
        view = await world.portal.referral(visit)
        assert view.closes_at == world.node.clock.now + timedelta(minutes=10)
        # Within the grace: downloads still work, in parallel, and a passcode still opens it.
        world.node.clock.advance(minutes=9, seconds=59)
        got = await asyncio.gather(*(_download(world, secrets_[n % 2]) for n in range(8)))
        assert got == [DOCUMENT] * 8
        await world.portal.sign_in(token, passcode=passcode)
        # At the end of the grace: refused everywhere, at once and in parallel.
        world.node.clock.advance(seconds=1)
        got = await asyncio.gather(*(_download(world, secrets_[n % 2]) for n in range(8)))
        assert got == ["LinkClosed"] * 8
        with pytest.raises(LinkClosed):
            await world.portal.sign_in(token, passcode=passcode)
        with pytest.raises(LinkClosed):
            await world.portal.link_info(token)
        assert (await world.portal.sweep_expired()) == 1
        assert not (world.portal.directory / f"{pickup_id}.age").exists()
        assert (await _trail(world, pickup_id))[-1] == "closed"
        assert "portal.closed" in world.node.audit.actions()
        assert (await world.portal.get_pickup(world.dsl, pickup_id)).state == "acknowledged"


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, name
    return found.group(1)


async def test_parallel_requests_over_http(db_url: str, tmp_path: Path) -> None:
    """The same race through the pages, on a real socket: after the acknowledgement's answer,
    no download answers with the document."""
    async with portal_world(db_url, tmp_path, settings=_settings(0)) as world:
        async with (
            served(world) as base,
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        ):
            path, _ = world.package()
            issued = await world.portal.create_pickup(
                world.dsl, package=path, referral_id="ref-1", email=AGENCY_EMAIL
            )
            assert issued.link is not None
            async with http.get(issued.link) as resp:
                page = await resp.text()
            form = {
                "t": _field(page, "t"),
                "csrf": _field(page, "csrf"),
                "method": "passcode",
                "passcode": issued.passcode,
            }
            async with http.post(f"{base}/portal/open", data=form) as resp:
                page = await resp.text()
                assert resp.status == 200
            ack = {"name": "Sam Jones", "reference": "MASH-9", "csrf": _field(page, "csrf")}

            async def fetch(delay: float = 0.0) -> str:
                await asyncio.sleep(delay)
                try:
                    async with http.get(f"{base}/portal/documents/0") as r:
                        body = await r.read()
                        return "document" if r.status == 200 and body == DOCUMENT else str(r.status)
                except aiohttp.ClientPayloadError:
                    return "cut"

            async def acknowledge() -> str:
                await asyncio.sleep(0.15)
                async with http.post(f"{base}/portal/acknowledge", data=ack) as r:
                    assert r.status == 200 and "This link is now closed" in await r.text()
                    return "acknowledged"

            jobs = [fetch(n * 0.02) for n in range(16)]
            jobs.insert(random.randrange(len(jobs)), acknowledge())
            outcomes = await asyncio.gather(*jobs)
            trail = await _trail(world, issued.pickup.id)
            assert outcomes.count("document") == trail.count("download")
            assert "download" not in trail[trail.index("acknowledged") :]
            assert set(outcomes) <= {"document", "acknowledged", "cut", "401", "410"}
            after = await asyncio.gather(*(fetch() for _ in range(8)))
            assert "document" not in after
