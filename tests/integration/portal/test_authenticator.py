"""An agency address's authenticator app: set up by any session, replaced only with a code
from the app it replaces (or by the sending school's DSL), and both sides are told.

A session is what one passcode, read out once, buys. If a session could replace the
app, whoever once got one would open every later referral to the address with the
e-mailed link and their own app. These tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pyotp
import pytest
from sqlalchemy import select

from receivers.portal.records import PortalVisit
from receivers.portal.service import AuthenticatorLocked, WrongCurrentCode, WrongPortalCode
from receivers.portal.tables import PortalAgencyUser
from tests.support.portal import (
    AGENCY_EMAIL,
    Inbox,
    PortalWorld,
    portal_world,
    served,
    smtp_server,
)
from tests.unit.auth.support import OTHER_URN
from transfer.alerts import Alerts
from transfer.config import SmtpSection
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.mail import Mailer
from transfer.store.permissions import PermissionDenied, Role


@asynccontextmanager
async def _world(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[PortalWorld, Inbox, Alerts]]:
    with smtp_server() as (inbox, port):
        async with portal_world(db_url, tmp_path, smtp_port=port, inbox=inbox) as world:
            mailer = Mailer(
                SmtpSection(
                    host="127.0.0.1", port=port, starttls=False, from_address="node@example.org"
                )
            )
            alerts = Alerts(world.node.store, mailer)
            world.portal.alerts = alerts
            yield world, inbox, alerts


async def _visit(world: PortalWorld) -> PortalVisit:
    """A new referral to the agency address, signed in with its passcode."""
    path, _ = world.package()
    issued = await world.portal.create_pickup(
        world.dsl, package=path, referral_id="ref-1", email=AGENCY_EMAIL
    )
    link = issued.link or (world.inbox.link() if world.inbox else None)
    assert link is not None
    secret = await world.portal.sign_in(link.split("?t=", 1)[1], passcode=issued.passcode)
    return await world.portal.visit(secret)


async def _token(world: PortalWorld) -> str:
    """The e-mailed link token of a new referral to the agency address."""
    path, _ = world.package()
    await world.portal.create_pickup(
        world.dsl, package=path, referral_id="ref-1", email=AGENCY_EMAIL
    )
    assert world.inbox is not None
    return world.inbox.link().split("?t=", 1)[1]


async def _enrolled(world: PortalWorld, visit: PortalVisit) -> pyotp.TOTP:
    setup = await world.portal.totp_setup(visit)
    app = pyotp.TOTP(setup.secret)
    replaced = await world.portal.enrol_totp(
        visit, setup=setup.sealed, code=app.at(world.node.clock.now)
    )
    assert replaced is False
    world.node.next_step()
    return app


async def _stored(world: PortalWorld) -> PortalAgencyUser | None:
    async with world.node.store.sessions() as s:
        return (
            await s.scalars(select(PortalAgencyUser).where(PortalAgencyUser.email == AGENCY_EMAIL))
        ).first()


def _wrong(code: str) -> str:
    return "000000" if code != "000000" else "111111"


def _mail_subjects(inbox: Inbox) -> list[str]:
    return [str(m["Subject"]) for m in inbox.messages if "authenticator" in str(m["Subject"])]


async def test_replacing_needs_a_code_from_the_app_it_replaces(db_url: str, tmp_path: Path) -> None:
    async with _world(db_url, tmp_path) as (world, inbox, alerts):
        first = await _visit(world)
        old_app = await _enrolled(world, first)
        assert _mail_subjects(inbox) == ["Your Handover authenticator app was set up"]
        # A later referral: someone who has only its passcode (one session) tries to put
        # their own app in place of the agency's.
        session = await _visit(world)
        setup = await world.portal.totp_setup(session)
        assert setup.replacing
        mine = pyotp.TOTP(setup.secret)
        with pytest.raises(WrongCurrentCode, match="app this address uses now"):
            await world.portal.enrol_totp(
                session, setup=setup.sealed, code=mine.at(world.node.clock.now)
            )
        with pytest.raises(WrongCurrentCode, match="not right; 4 more tries"):
            await world.portal.enrol_totp(
                session,
                setup=setup.sealed,
                code=mine.at(world.node.clock.now),
                current_code=_wrong(old_app.at(world.node.clock.now)),
            )
        # Still the agency's own app: it signs in to the next referral, the stranger's not.
        token = await _token(world)
        with pytest.raises(WrongPortalCode):
            await world.portal.sign_in(token, totp=mine.at(world.node.clock.now))
        await world.portal.sign_in(token, totp=old_app.at(world.node.clock.now))
        world.node.next_step()
        # With a code from the app in use, the agency itself moves to a new phone.
        replaced = await world.portal.enrol_totp(
            session,
            setup=setup.sealed,
            code=mine.at(world.node.clock.now),
            current_code=old_app.at(world.node.clock.now),
        )
        assert replaced is True
        world.node.next_step()
        token = await _token(world)
        with pytest.raises(WrongPortalCode):
            await world.portal.sign_in(token, totp=old_app.at(world.node.clock.now))
        await world.portal.sign_in(token, totp=mine.at(world.node.clock.now))
        # Both sides were told: the address by e-mail, the school's DSL team by an alert.
        assert _mail_subjects(inbox) == [
            "Your Handover authenticator app was set up",
            "Your Handover authenticator app was replaced",
        ]
        told = inbox.messages[-1]
        assert told["To"] == AGENCY_EMAIL
        raised = [a.subject for a in await alerts.list(world.dsl)]
        assert raised == [
            "An agency's authenticator app was replaced",
            "An agency set up an authenticator app",
        ]
        actions = world.node.audit.actions()
        assert actions.count("portal.totp_replace_failed") == 1
        assert actions.count("portal.totp_replaced") == 1


async def test_wrong_current_codes_in_parallel_stop_at_the_limit(
    db_url: str, tmp_path: Path
) -> None:
    async with _world(db_url, tmp_path) as (world, inbox, alerts):
        old_app = await _enrolled(world, await _visit(world))
        session = await _visit(world)
        setup = await world.portal.totp_setup(session)
        mine = pyotp.TOTP(setup.secret)
        right = old_app.at(world.node.clock.now)
        limit = world.portal.settings.max_attempts

        async def guess(n: int) -> str:
            wrong = f"{n:06d}" if f"{n:06d}" != right else "999999"
            try:
                await world.portal.enrol_totp(
                    session,
                    setup=setup.sealed,
                    code=mine.at(world.node.clock.now),
                    current_code=wrong,
                )
            except WrongCurrentCode:
                return "wrong"
            except AuthenticatorLocked:
                return "locked"
            return "replaced"

        outcomes = await asyncio.gather(*(guess(n) for n in range(4 * limit)))
        assert "replaced" not in outcomes
        assert outcomes.count("wrong") <= limit - 1, outcomes
        assert world.node.audit.actions().count("portal.totp_replace_failed") <= limit
        # Even the right code no longer replaces it: only the school's DSL can now.
        with pytest.raises(AuthenticatorLocked, match="safeguarding lead"):
            await world.portal.enrol_totp(
                session, setup=setup.sealed, code=mine.at(world.node.clock.now), current_code=right
            )
        stored = await _stored(world)
        assert stored is not None and stored.totp_failed_count > limit
        # The sending school's DSL resets it; the agency signs in with a passcode and sets up
        # a new app without any old code. Both are told each time.
        await world.portal.reset_totp(world.dsl, session.pickup_id)
        stored = await _stored(world)
        assert stored is not None and stored.totp_sealed is None
        assert stored.totp_failed_count == 0
        token = await _token(world)
        with pytest.raises(WrongPortalCode):
            await world.portal.sign_in(token, totp=old_app.at(world.node.clock.now))
        fresh = await _visit(world)
        await _enrolled(world, fresh)
        assert _mail_subjects(inbox) == [
            "Your Handover authenticator app was set up",
            "Your Handover authenticator app was removed",
            "Your Handover authenticator app was set up",
        ]
        assert sorted(a.subject for a in await alerts.list(world.dsl)) == [
            "An agency set up an authenticator app",
            "An agency set up an authenticator app",
            "An agency's authenticator app was reset",
        ]
        assert "portal.totp_reset" in world.node.audit.actions()


async def test_only_the_sending_schools_dsl_team_can_reset(db_url: str, tmp_path: Path) -> None:
    async with _world(db_url, tmp_path) as (world, _inbox, _alerts):
        visit = await _visit(world)
        await _enrolled(world, visit)
        admin = await world.node.person("admin", [Role.ADMINISTRATOR])
        with pytest.raises(PermissionDenied):
            await world.portal.reset_totp(
                await world.node.store.actor_for(admin.staff.id), visit.pickup_id
            )
        other = await world.node.person("other-dsl", [Role.DSL], org=OTHER_URN)
        with pytest.raises(NotFoundError):
            await world.portal.reset_totp(
                await world.node.store.actor_for(other.staff.id), visit.pickup_id
            )
        stored = await _stored(world)
        assert stored is not None and stored.totp_sealed is not None
        refused = [e for e in world.node.audit.events if e.action == "portal.totp_reset"]
        assert [e.outcome for e in refused] == ["refused"]
        await world.portal.reset_totp(world.dsl, visit.pickup_id)
        with pytest.raises(ConflictError, match="no authenticator app"):
            await world.portal.reset_totp(world.dsl, visit.pickup_id)


async def test_the_set_up_page_changes_nothing_and_its_form_stays_in_its_session(
    db_url: str, tmp_path: Path
) -> None:
    async with _world(db_url, tmp_path) as (world, _inbox, _alerts):
        first = await _visit(world)
        await world.portal.totp_setup(first)
        await world.portal.totp_setup(first)
        assert await _stored(world) is None  # showing the page stored nothing
        app = await _enrolled(world, first)
        before = await _stored(world)
        assert before is not None
        other = await _visit(world)
        setup = await world.portal.totp_setup(other)
        assert setup.replacing
        after = await _stored(world)
        assert after is not None
        assert (after.totp_sealed, after.totp_pending_sealed, after.totp_last_step) == (
            before.totp_sealed,
            None,
            before.totp_last_step,
        )
        # A set-up form made for one session does not work in another.
        with pytest.raises(InputError, match="set-up form has expired"):
            await world.portal.enrol_totp(
                first,
                setup=setup.sealed,
                code=pyotp.TOTP(setup.secret).at(world.node.clock.now),
                current_code=app.at(world.node.clock.now),
            )


async def test_the_set_up_page_changes_state_only_on_post(db_url: str, tmp_path: Path) -> None:
    """Over HTTP: GET shows a new secret and stores nothing; only a POST with the page's CSRF
    token and the right codes changes the address's app."""
    async with _world(db_url, tmp_path) as (world, inbox, _alerts):
        app = await _enrolled(world, await _visit(world))
        before = await _stored(world)
        assert before is not None
        async with (
            served(world) as base,
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
        ):
            path, _ = world.package()
            issued = await world.portal.create_pickup(
                world.dsl, package=path, referral_id="ref-1", email=AGENCY_EMAIL
            )
            async with http.get(inbox.link()) as resp:
                page = await resp.text()
            form = {
                "t": _field(page, "t"),
                "csrf": _field(page, "csrf"),
                "method": "passcode",
                "passcode": issued.passcode,
            }
            async with http.post(f"{base}/portal/open", data=form) as resp:
                assert resp.status == 200
            pages = []
            for _ in range(3):
                async with http.get(f"{base}/portal/authenticator") as resp:
                    assert resp.status == 200
                    pages.append(await resp.text())
            after = await _stored(world)
            assert after is not None
            assert (after.totp_sealed, after.totp_last_step, after.totp_pending_sealed) == (
                before.totp_sealed,
                before.totp_last_step,
                None,
            )
            secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', pages[-1])
            assert secret is not None
            new_app = pyotp.TOTP(secret.group(1))
            good = {
                "setup": _field(pages[-1], "setup"),
                "current": app.at(world.node.clock.now),
                "code": new_app.at(world.node.clock.now),
            }
            for bad in ({}, {"csrf": "0" * 64}):
                async with http.post(f"{base}/portal/authenticator", data={**good, **bad}) as r:
                    assert r.status == 403
            stored = await _stored(world)
            assert stored is not None and stored.totp_sealed == before.totp_sealed
            async with http.post(
                f"{base}/portal/authenticator",
                data={**good, "csrf": _field(pages[-1], "csrf")},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
                assert resp.headers["Location"] == "/portal/referral?done=authenticator-replaced"
            stored = await _stored(world)
            assert stored is not None and stored.totp_sealed != before.totp_sealed


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, name
    return found.group(1)


async def test_the_dsl_resets_through_the_api(db_url: str, tmp_path: Path) -> None:
    async with _world(db_url, tmp_path) as (world, _inbox, alerts):
        visit = await _visit(world)
        await _enrolled(world, visit)
        await world.node.person("teacher", [Role.STAFF])
        async with (
            served(world) as base,
            aiohttp.ClientSession() as http,
        ):
            tokens = {}
            for name in ("dsl", "teacher"):
                person = world.node.people[name]
                body = {"org": "199001", "username": name, "password": person.password}
                if person.secret:
                    body["totp"] = person.code(world.node.clock.now)
                    world.node.next_step()
                async with http.post(f"{base}/api/v1/session", json=body) as resp:
                    assert resp.status == 201, await resp.text()
                    tokens[name] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
            url = f"{base}/api/v1/portal/pickups/{visit.pickup_id}/reset-authenticator"
            async with http.post(url, headers=tokens["teacher"]) as resp:
                assert resp.status == 403
                assert resp.content_type == "application/problem+json"
            stored = await _stored(world)
            assert stored is not None and stored.totp_sealed is not None
            async with http.post(url, headers=tokens["dsl"]) as resp:
                assert resp.status == 200, await resp.text()
                trail = [e["kind"] for e in (await resp.json())["events"]]
                assert trail[-1] == "totp_reset"
        stored = await _stored(world)
        assert stored is not None and stored.totp_sealed is None
        refused = [e.outcome for e in world.node.audit.events if e.action == "portal.totp_reset"]
        assert refused == ["refused", "ok"]
        assert "An agency's authenticator app was reset" in [
            a.subject for a in await alerts.list(world.dsl)
        ]
