"""Administration, staff accounts: in-process on each engine. Each form's validation, each
refusal by web address (a teacher and a DSL on the administrator's pages; an administrator
raising their own roles), the one-time invitation link (single use, expiry, parallel
redemption) and the two-person rule as the pages show it."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest

from tests.support.web import Page, Site, site_for
from tests.unit.auth.support import URN, Person
from transfer.auth import AccountLocked, SignInFailed, SlowDown
from transfer.auth.invitations import INVITATION_DAYS
from transfer.store.permissions import Role

NEW_PASSWORD = "quiet harbour lamp seventeen"
ADMIN_ONLY = (
    "/admin/staff",
    "/admin/staff/invite",
)


@dataclass
class World:
    site: Site
    dsl: Person
    deputy: Person
    teacher: Person
    admin: Person

    def text(self, page: Page) -> str:
        return html.unescape(page.text)


@pytest.fixture
async def world(db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with site_for(db_url, tmp_path) as site:
        node = site.node
        yield World(
            site,
            await node.person("dsl", [Role.DSL]),
            await node.person("deputy", [Role.DEPUTY_DSL]),
            await node.person("teacher", [Role.STAFF]),
            await node.person("admin", [Role.ADMINISTRATOR]),
        )


async def _as(world: World, who: Person | None) -> Page | None:
    site = world.site
    if site.client.session.cookie_jar:
        site.client.session.cookie_jar.clear()
    if who is None:
        return None
    home = await site.sign_in(who)
    assert home.title == "Home - Handover", home.text[:500]
    return home


def _fields(page: Page) -> dict[str, str]:
    return {"csrf": page.hidden("csrf"), "form_owner": page.hidden("form_owner")}


async def _invite(world: World, **values: str | list[str]) -> Page:
    form = await world.site.get("/admin/staff/invite")
    data: list[tuple[str, str]] = list(_fields(form).items())
    for key, value in values.items():
        for v in [value] if isinstance(value, str) else value:
            data.append((key, v))
    return await world.site.post("/admin/staff/invite", data)


def _link(page: Page) -> str:
    found = re.search(r'id="invitation-link">https?://[^/]+(/invitation/[^<]+)</code>', page.text)
    assert found, page.text[:2000]
    return found.group(1)


async def test_teachers_and_the_dsl_are_refused_the_administrators_pages(world: World) -> None:
    staff_id = world.teacher.staff.id
    for who in (world.teacher, world.dsl):
        home = await _as(world, who)
        assert home is not None
        for path in (
            *ADMIN_ONLY,
            f"/admin/staff/{staff_id}",
            f"/admin/staff/{staff_id}/deactivate",
        ):
            page = await world.site.get(path)
            assert page.status == 403, (who.username, path)
        csrf = home.hidden("csrf")
        for path, data in (
            ("/admin/staff/invite", {"display_name": "X", "username": "x", "roles": "staff"}),
            (f"/admin/staff/{staff_id}/roles", {"roles": "administrator"}),
            (f"/admin/staff/{staff_id}/deactivate", {}),
            (f"/admin/staff/{staff_id}/two-factor", {}),
        ):
            page = await world.site.post(path, {"csrf": csrf, **data})
            assert page.status == 403, (who.username, path)
    lines = await world.site.node.store.list_staff(
        await world.site.node.store.actor_for(world.admin.staff.id)
    )
    assert {s.username for s in lines} == {"dsl", "deputy", "teacher", "admin"}
    assert [s.roles for s in lines if s.username == "teacher"] == [("staff",)]
    # The DSL's Administration area starts with the account changes; a teacher has none.
    home = await _as(world, world.dsl)
    assert home is not None and 'href="/admin"' in home.text
    page = await world.site.get("/admin")
    assert page.title == "Account changes waiting for approval - Handover"
    assert 'href="/admin/staff"' not in page.text
    home = await _as(world, world.teacher)
    assert home is not None and 'href="/admin"' not in home.text
    assert (await world.site.get("/admin")).status == 403
    assert (await world.site.get("/admin/approvals")).status == 403


async def test_the_administrator_sees_everyone_and_no_concern_content(world: World) -> None:
    home = await _as(world, world.admin)
    assert home is not None and 'href="/admin"' in home.text
    page = await world.site.get("/admin")
    assert page.title == "Staff accounts - Handover"
    text = world.text(page)
    for name in ("Dsl", "Deputy", "Teacher", "Admin"):
        assert name in text
    assert "Designated safeguarding lead" in text and "Active" in text


async def test_the_invitation_form_says_what_is_wrong_at_each_field(world: World) -> None:
    await _as(world, world.admin)
    page = await _invite(world, display_name="", username="", email="not-an-address")
    assert page.status == 400 and page.title.startswith("Error: Invite someone")
    text = world.text(page)
    for message in (
        "Enter their full name",
        "Enter a username",
        "Enter an email address like",
        "Select at least one role",
    ):
        assert message in text
    page = await _invite(world, display_name="Mo", username="teacher", roles="staff")
    assert page.status == 400 and "This username is taken already" in world.text(page)
    page = await _invite(world, display_name="Mo", username="mo", roles="wizard")
    assert page.status == 400 and "Select at least one role" in world.text(page)
    assert not world.site.node.events("account.invited")


async def test_an_invitation_link_works_once_then_never(world: World) -> None:
    await _as(world, world.admin)
    page = await _invite(world, display_name="Mo Patel", username="mo", roles="administrator")
    assert page.title == "Invitation for Mo Patel - Handover"
    link = _link(page)
    assert "/invitation/hoi_" in link
    listing = world.text(await world.site.get("/admin/staff"))
    assert "Mo Patel" in listing and "Invited" in listing
    await _as(world, None)
    form = await world.site.get(link)
    assert form.status == 200 and "Welcome, Mo Patel" in world.text(form)
    # Mistakes keep the link working.
    page = await world.site.post(
        "/invitation",
        {
            "csrf": form.hidden("csrf"),
            "token": form.hidden("token"),
            "new_password": NEW_PASSWORD,
            "confirm_password": "something else",
        },
    )
    assert page.status == 400 and "The passwords do not match" in world.text(page)
    page = await world.site.post(
        "/invitation",
        {
            "csrf": form.hidden("csrf"),
            "token": form.hidden("token"),
            "new_password": "short",
            "confirm_password": "short",
        },
    )
    assert page.status == 400 and page.title.startswith("Error: Choose your password")
    page = await world.site.post(
        "/invitation",
        {
            "csrf": form.hidden("csrf"),
            "token": form.hidden("token"),
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
        follow=False,
    )
    assert page.status == 303 and page.headers["Location"] == "/sign-in/authenticator"
    enrol = await world.site.get("/sign-in/authenticator")
    assert enrol.title == "Set up your authenticator app - Handover"
    # The same link again: a plain page, nothing changed.
    await _as(world, None)
    again = await world.site.get(link)
    assert again.status == 410 and "has been used already" in world.text(again)
    assert len(world.site.node.events("account.invitation.accepted")) == 1


async def test_an_expired_link_is_refused_and_a_new_one_works(world: World) -> None:
    await _as(world, world.admin)
    first = _link(await _invite(world, display_name="Mo", username="mo", roles="staff"))
    world.site.node.clock.advance(days=INVITATION_DAYS, seconds=1)
    await _as(world, None)
    assert (await world.site.get(first)).status == 410
    await _as(world, world.admin)
    mo = next(
        line
        for line in await world.site.node.accounts.invitations.lines(
            await world.site.node.store.actor_for(world.admin.staff.id)
        )
        if line.username == "mo"
    )
    person = await world.site.get(f"/admin/staff/{mo.staff_id}")
    assert "Invitation expired" in world.text(person)
    second = _link(await world.site.post(f"/admin/staff/{mo.staff_id}/invitation", _fields(person)))
    await _as(world, None)
    assert (await world.site.get(second)).status == 200


async def test_parallel_redemption_of_one_link_lets_one_in(world: World) -> None:
    await _as(world, world.admin)
    link = _link(await _invite(world, display_name="Mo", username="mo", roles="staff"))
    await _as(world, None)
    form = await world.site.get(link)

    async def send(i: int) -> int:
        page = await world.site.post(
            "/invitation",
            {
                "csrf": form.hidden("csrf"),
                "token": form.hidden("token"),
                "new_password": f"{NEW_PASSWORD} {i}",
                "confirm_password": f"{NEW_PASSWORD} {i}",
            },
            follow=False,
        )
        return page.status

    statuses = await asyncio.gather(*(send(i) for i in range(6)))
    assert sorted(statuses) == [303, 410, 410, 410, 410, 410], statuses
    assert len(world.site.node.events("account.invitation.accepted")) == 1


async def test_nobody_raises_their_own_roles_whatever_the_page_sends(world: World) -> None:
    home = await _as(world, world.admin)
    assert home is not None
    own = world.admin.staff.id
    page = await world.site.get(f"/admin/staff/{own}")
    assert "Nobody can change their own roles" in world.text(page)
    assert 'action="/admin/staff/' + own + '/roles"' not in page.text
    refused = await world.site.post(
        f"/admin/staff/{own}/roles",
        [("csrf", home.hidden("csrf")), ("roles", "administrator"), ("roles", "dsl")],
    )
    assert refused.status == 403 and "Nobody may change their own roles" in world.text(refused)
    roles = (await world.site.node.store.actor_for(own)).roles
    assert roles == frozenset({Role.ADMINISTRATOR})
    assert [e.outcome for e in world.site.node.events("account.roles_changed")] == ["refused"]
    assert not await world.site.node.accounts.list_approvals(
        await world.site.node.store.actor_for(own)
    )


async def test_a_protected_role_waits_and_a_dsl_approves_it_in_the_browser(world: World) -> None:
    await _as(world, world.admin)
    teacher = world.teacher.staff.id
    page = await world.site.get(f"/admin/staff/{teacher}")
    empty = await world.site.post(f"/admin/staff/{teacher}/roles", _fields(page))
    assert empty.status == 400 and "Select at least one role" in world.text(empty)
    done = await world.site.post(
        f"/admin/staff/{teacher}/roles", [*_fields(page).items(), ("roles", "deputy_dsl")]
    )
    assert "waiting for a DSL&#39;s approval" in done.text or "waiting for a DSL's approval" in (
        world.text(done)
    )
    listing = world.text(await world.site.get("/admin/staff"))
    assert "Waiting for a DSL's approval" in listing
    # The administrator sees it but cannot approve it.
    waiting = await world.site.get("/admin/approvals")
    assert "Approve" not in waiting.text and "Withdraw" in waiting.text
    approval_id = re.findall(r"/admin/approvals/([0-9a-f-]{36})/decline", waiting.text)[0]
    refused = await world.site.post(f"/admin/approvals/{approval_id}/approve", _fields(waiting))
    assert refused.status == 403
    # The DSL approves it.
    home = await _as(world, world.dsl)
    assert home is not None and 'href="/admin"' in home.text
    waiting = await world.site.get("/admin/approvals")
    text = world.text(waiting)
    assert "Admin (administrator) asked to change the roles of Teacher" in text
    approved = await world.site.post(f"/admin/approvals/{approval_id}/approve", _fields(waiting))
    assert "The change has been approved and made" in world.text(approved)
    roles = (await world.site.node.store.actor_for(teacher)).roles
    assert roles == frozenset({Role.DEPUTY_DSL})
    again = await world.site.post(f"/admin/approvals/{approval_id}/approve", _fields(waiting))
    assert again.status == 409


async def test_deactivate_unlock_and_reset_two_factor(world: World) -> None:
    node = world.site.node
    # The deputy locks their account with wrong passwords.
    for _ in range(node.accounts.security.failed_signins_before_lock):
        try:
            await node.accounts.sign_in(URN, "deputy", "wrong password here")
        except (SignInFailed, SlowDown, AccountLocked):
            node.clock.advance(seconds=400)
    await _as(world, world.admin)
    deputy = world.deputy.staff.id
    page = await world.site.get(f"/admin/staff/{deputy}")
    assert "Locked" in world.text(page)
    page = await world.site.post(f"/admin/staff/{deputy}/unlock", _fields(page))
    assert "The account has been unlocked" in world.text(page) and "Locked" not in page.text
    # Their authenticator: they are in the DSL team, so a DSL approves it.
    confirm = await world.site.get(f"/admin/staff/{deputy}/two-factor")
    assert confirm.title == "Remove Deputy's authenticator app? - Handover"
    done = await world.site.post(f"/admin/staff/{deputy}/two-factor", _fields(confirm))
    assert "waiting for a DSL's approval" in world.text(done)
    # A teacher's is removed at once (enrolled for the test), then they are deactivated.
    teacher = world.teacher.staff.id
    result = await node.accounts.sign_in(URN, "teacher", world.teacher.password)
    principal = await node.accounts.authenticate(result.token)
    enrolment = await node.accounts.begin_totp_enrolment(principal)
    await node.accounts.confirm_totp_enrolment(
        principal, pyotp.TOTP(enrolment.secret).at(node.clock.now)
    )
    confirm = await world.site.get(f"/admin/staff/{teacher}/two-factor")
    done = await world.site.post(f"/admin/staff/{teacher}/two-factor", _fields(confirm))
    assert "Their authenticator app has been removed" in world.text(done)
    confirm = await world.site.get(f"/admin/staff/{teacher}/deactivate")
    assert confirm.title == "Deactivate Teacher's account? - Handover"
    done = await world.site.post(f"/admin/staff/{teacher}/deactivate", _fields(confirm))
    assert "The account has been deactivated" in world.text(done)
    assert "Deactivated" in world.text(await world.site.get("/admin/staff"))
    # Nobody deactivates themselves, whatever the page sends.
    own = await world.site.post(f"/admin/staff/{world.admin.staff.id}/deactivate", _fields(confirm))
    assert own.status == 409


async def test_no_administration_page_shows_an_administrator_concern_content(
    world: World,
) -> None:
    from datetime import date

    from schemas.records import NewConcern, NewPupil

    node = world.site.node
    admin_actor = await node.store.actor_for(world.admin.staff.id)
    pupil = await node.store.create_pupil(
        admin_actor,
        NewPupil(
            upn="H801200001001", surname="Okafor", forename="Amara", dob=date(2015, 1, 2), sex="F"
        ),
    )
    concern = await node.store.record_concern(
        await node.store.actor_for(world.teacher.staff.id),
        NewConcern(
            pupil_ids=(pupil.id,),
            category="bullying",
            happened_at=node.clock.now,
            account="She said the word tangerine.",
            location="The quiet garden",
        ),
    )
    await _as(world, world.admin)
    for path in (
        "/admin/staff",
        "/admin/approvals",
        "/admin/pupils",
        f"/admin/pupils/{pupil.upn}/edit",
        f"/admin/staff/{world.teacher.staff.id}",
        "/admin/organisation",
    ):
        page = await world.site.get(path)
        assert page.status == 200, path
        assert "tangerine" not in page.text and "quiet garden" not in page.text, path
    assert (await world.site.get(f"/concerns/{concern.id}")).status == 403
    assert (await world.site.get("/admin/retention")).status == 403
