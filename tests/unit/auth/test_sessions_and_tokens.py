"""Sessions (idle and absolute expiry, sign-out) and scoped, revocable API tokens."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from schemas.records import NewPupil
from tests.unit.auth.support import PASSWORD, URN, Node
from transfer.auth import SessionInvalid, WeakPassword
from transfer.auth.records import ApprovalRecord
from transfer.auth.service import WrongPassword
from transfer.auth.tables import ApiTokenRow, SessionRow
from transfer.store.permissions import Permission, PermissionDenied, Role

PUPIL = NewPupil(
    upn="H801200001001", surname="Okafor", forename="Amara", dob=date(2014, 11, 3), sex="F"
)


async def test_session_expires_after_idle_time_and_use_extends_it(node: Node) -> None:
    teacher = await node.person("teacher", [Role.STAFF])
    result = await node.accounts.sign_in(URN, teacher.username, PASSWORD)
    idle = node.accounts.security.session_idle_minutes
    for _ in range(4):  # used just inside the idle limit, again and again: still alive
        node.clock.advance(minutes=idle - 1)
        await node.accounts.authenticate(result.token)
    node.clock.advance(minutes=idle)
    with pytest.raises(SessionInvalid):
        await node.accounts.authenticate(result.token)
    ended = node.events("session.end")[-1]
    assert ended.detail["reason"] == "expired_idle"
    with pytest.raises(SessionInvalid):  # and it stays ended
        await node.accounts.authenticate(result.token)


async def test_session_ends_at_the_absolute_limit_however_busy(node: Node) -> None:
    teacher = await node.person("teacher", [Role.STAFF])
    result = await node.accounts.sign_in(URN, teacher.username, PASSWORD)
    hours = node.accounts.security.session_max_hours
    for _ in range(hours * 6 - 1):
        node.clock.advance(minutes=10)
        await node.accounts.authenticate(result.token)
    node.clock.advance(minutes=10)
    with pytest.raises(SessionInvalid):
        await node.accounts.authenticate(result.token)
    assert node.events("session.end")[-1].detail["reason"] == "expired_max"


async def test_sign_out_ends_the_session_and_only_its_hash_was_stored(node: Node) -> None:
    teacher = await node.person("teacher", [Role.STAFF])
    result = await node.accounts.sign_in(URN, teacher.username, PASSWORD)
    async with node.store.sessions() as s:
        hashes = (await s.scalars(select(SessionRow.token_hash))).all()
    assert result.token not in hashes and all(result.token[4:] not in h for h in hashes)
    principal = await node.accounts.authenticate(result.token)
    await node.accounts.sign_out(principal)
    with pytest.raises(SessionInvalid):
        await node.accounts.authenticate(result.token)
    assert node.events("session.end")[-1].detail["reason"] == "signed_out"
    with pytest.raises(SessionInvalid):
        await node.accounts.authenticate("hos_" + "A" * 43)
    with pytest.raises(SessionInvalid):
        await node.accounts.authenticate("something else entirely")


async def test_token_scopes_limit_what_it_can_do(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    session = await node.session(admin)
    await node.store.create_pupil(session.actor, PUPIL)
    issued = await node.accounts.create_token(
        session, name="MIS sync", scopes=[Permission.READ_PUPILS.value], expires_in_days=30
    )
    assert issued.token.startswith("hot_")
    principal = await node.accounts.authenticate(issued.token)
    assert principal.kind == "token"
    assert principal.actor.has(Permission.READ_PUPILS)
    assert not principal.actor.has(Permission.MANAGE_PUPILS)
    assert len(await node.store.list_pupils(principal.actor)) == 1
    with pytest.raises(PermissionDenied):
        await node.store.create_pupil(principal.actor, PUPIL)
    with pytest.raises(PermissionDenied):  # a token cannot mint tokens
        await node.accounts.create_token(principal, name="x", scopes=["pupil.read"])
    used = node.events("token.used")[-1]
    assert used.targets["token"] == issued.id and issued.token not in repr(node.audit.events)
    async with node.store.sessions() as s:
        stored = (await s.scalars(select(ApiTokenRow.token_hash))).all()
    assert issued.token not in stored


async def test_a_token_cannot_hold_more_than_its_owner(node: Node) -> None:
    teacher = await node.person("teacher", [Role.STAFF])
    session = await node.session(teacher)
    with pytest.raises(PermissionDenied):
        await node.accounts.create_token(session, name="x", scopes=["staff.manage"])
    assert node.events("token.created")[-1].outcome == "refused"
    # The role is checked at use too: a demoted owner's token loses what the role lost.
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    a_session = await node.session(admin)
    dsl = await node.person("dsl", [Role.DSL])
    d_session = await node.session(dsl)
    issued = await node.accounts.create_token(d_session, name="t", scopes=["pupil.manage"])
    # Removing the DSL role waits for another DSL's approval (the two-person rule).
    waiting = await node.accounts.set_roles(a_session.actor, dsl.staff.id, [Role.STAFF.value])
    assert isinstance(waiting, ApprovalRecord) and waiting.state == "pending"
    assert (await node.accounts.authenticate(issued.token)).actor.has(Permission.MANAGE_PUPILS)
    other = await node.person("dsl2", [Role.DSL])
    await node.accounts.approve((await node.session(other)).actor, waiting.id)
    principal = await node.accounts.authenticate(issued.token)
    assert not principal.actor.has(Permission.MANAGE_PUPILS)


async def test_revoked_and_expired_tokens_stop_working(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    session = await node.session(admin)
    issued = await node.accounts.create_token(
        session, name="t", scopes=["pupil.read"], expires_in_days=1
    )
    short = await node.accounts.create_token(
        session, name="u", scopes=["pupil.read"], expires_in_days=1
    )
    await node.accounts.authenticate(issued.token)
    info = await node.accounts.revoke_token(session, issued.id)
    assert info.revoked_at is not None
    with pytest.raises(SessionInvalid, match="revoked"):
        await node.accounts.authenticate(issued.token)
    assert "token.revoked" in node.audit.actions()
    node.clock.advance(days=1, seconds=1)
    with pytest.raises(SessionInvalid, match="expired"):
        await node.accounts.authenticate(short.token)
    listed = await node.accounts.list_tokens(await node.session(admin))
    assert [t.name for t in listed] == ["t", "u"]


async def test_deactivation_and_role_changes_end_sessions(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    teacher = await node.person("teacher", [Role.STAFF])
    a = await node.session(admin)
    t1 = await node.accounts.sign_in(URN, "teacher", PASSWORD)
    await node.accounts.set_roles(a.actor, teacher.staff.id, [Role.STAFF.value, Role.AUDITOR.value])
    with pytest.raises(SessionInvalid):
        await node.accounts.authenticate(t1.token)
    t2 = await node.accounts.sign_in(URN, "teacher", PASSWORD)
    tok = await node.accounts.create_token(
        await node.accounts.authenticate(t2.token), name="t", scopes=["pupil.read"]
    )
    await node.accounts.deactivate(a.actor, teacher.staff.id)
    for token in (t2.token, tok.token):
        with pytest.raises(SessionInvalid):
            await node.accounts.authenticate(token)
    assert "account.deactivated" in node.audit.actions()
    assert "account.roles_changed" in node.audit.actions()


async def test_account_administration_needs_staff_manage(node: Node) -> None:
    teacher = await node.person("teacher", [Role.STAFF])
    t = await node.session(teacher)
    with pytest.raises(PermissionDenied):
        await node.accounts.create_account(
            t.actor, username="new", display_name="New", roles=["staff"], password=PASSWORD
        )
    with pytest.raises(PermissionDenied):
        await node.accounts.sign_in_problems(t.actor)
    with pytest.raises(PermissionDenied):
        await node.accounts.set_roles(t.actor, teacher.staff.id, ["administrator"])
    refused = [e for e in node.audit.events if e.outcome == "refused"]
    assert {e.action for e in refused} >= {"account.created", "account.roles_changed"}


async def test_weak_password_creates_nothing(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    a = await node.session(admin)
    with pytest.raises(WeakPassword):
        await node.accounts.create_account(
            a.actor,
            username="newbie",
            display_name="New",
            roles=["staff"],
            password="password1234",
        )
    assert await node.store.find_staff(URN, "newbie") is None
    made = await node.accounts.create_account(
        a.actor, username="newbie", display_name="New", roles=["staff"], password=PASSWORD
    )
    assert (await node.accounts.sign_in(URN, "newbie", PASSWORD)).staff_id == made.id


async def test_changing_ones_password(node: Node) -> None:
    teacher = await node.person("teacher", [Role.STAFF])
    first = await node.accounts.sign_in(URN, "teacher", PASSWORD)
    second = await node.accounts.sign_in(URN, "teacher", PASSWORD)
    me = await node.accounts.authenticate(first.token)
    with pytest.raises(WrongPassword):
        await node.accounts.change_password(me, "not my password", "a brand new passphrase")
    assert node.events("signin.failed")[-1].detail["during"] == "password_change"
    with pytest.raises(WeakPassword):
        await node.accounts.change_password(me, PASSWORD, "teacher-teacher-1")
    await node.accounts.change_password(me, PASSWORD, "a brand new passphrase")
    await node.accounts.authenticate(first.token)  # this session lives on
    with pytest.raises(SessionInvalid):  # the other one ended
        await node.accounts.authenticate(second.token)
    assert (await node.accounts.sign_in(URN, "teacher", "a brand new passphrase")).token
    assert teacher.staff.id
