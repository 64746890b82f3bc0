"""The two-person rule: account changes that give or take away access to concerns wait for a
DSL's approval, never the requester's own; nobody changes their own roles.

Before this, an administrator could make themselves a DSL (and read restricted concerns), or
reset a DSL's password and authenticator and take the account over.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from sqlalchemy import select

from tests.unit.auth.support import PASSWORD, URN, Node, Person
from transfer.auth import SessionInvalid, SignInFailed
from transfer.auth.records import ApprovalRecord
from transfer.auth.tables import StaffApproval
from transfer.errors import ConflictError
from transfer.store.permissions import Actor, Permission, PermissionDenied, Role

NEW_PASSWORD = "a completely different phrase"


async def _actor(node: Node, p: Person) -> Actor:
    return (await node.session(p)).actor


async def _roles(node: Node, staff_id: str) -> tuple[str, ...]:
    return tuple((await node.store.actor_for(staff_id)).roles)


async def test_nobody_changes_their_own_roles(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    a = await _actor(node, admin)
    for roles in (["administrator", "dsl"], ["administrator", "auditor"], ["staff"]):
        with pytest.raises(PermissionDenied, match="own roles"):
            await node.accounts.set_roles(a, admin.staff.id, roles)
    # Nor through the store directly (the rule is in the domain layer, not only the API).
    with pytest.raises(PermissionDenied):
        await node.store.update_staff(a, admin.staff.id, roles=["administrator", "dsl"])
    assert await _roles(node, admin.staff.id) == (Role.ADMINISTRATOR,)
    refused = [e for e in node.events("account.roles_changed") if e.outcome == "refused"]
    assert len(refused) == 3 and all(e.detail["reason"] == "own_account" for e in refused)
    assert not a.has(Permission.READ_RESTRICTED)


async def test_granting_the_dsl_role_waits_for_another_dsl(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    boss = await node.person("boss", [Role.ADMINISTRATOR, Role.DSL])
    dsl = await node.person("dsl", [Role.DSL])
    deputy = await node.person("deputy", [Role.DEPUTY_DSL])
    teacher = await node.person("teacher", [Role.STAFF])
    a, b = await _actor(node, admin), await _actor(node, boss)
    teacher_session = await node.accounts.sign_in(URN, "teacher", PASSWORD)

    waiting = await node.accounts.set_roles(b, teacher.staff.id, ["staff", "dsl"])
    assert isinstance(waiting, ApprovalRecord)
    assert (waiting.state, waiting.kind, waiting.roles) == (
        "pending",
        "change_roles",
        ("staff", "dsl"),
    )
    assert waiting.summary == (
        "Boss (administrator and DSL) asked to change the roles of Teacher from staff to "
        "staff and DSL"
    )
    assert await _roles(node, teacher.staff.id) == (Role.STAFF,)  # nothing changed yet
    # The DSL team is alerted (in the app; by e-mail when SMTP is set up).
    alerts = await node.accounts.approvals.alerts.list(await _actor(node, dsl))
    assert [(x.level, x.ref) for x in alerts] == [("info", waiting.id)]
    assert "Boss (administrator and DSL)" in alerts[0].message
    # The requester cannot approve their own request, even as a DSL; nor a deputy, nor an
    # administrator, nor the operator acting for a DSL, nor an API token.
    with pytest.raises(PermissionDenied, match="you asked for this change"):
        await node.accounts.approve(b, waiting.id)
    for who in (await _actor(node, deputy), a):
        with pytest.raises(PermissionDenied, match="only a DSL"):
            await node.accounts.approve(who, waiting.id)
    d = await _actor(node, dsl)
    with pytest.raises(PermissionDenied, match="signed in"):
        await node.accounts.approve(replace(d, operator=True), waiting.id)
    assert await _roles(node, teacher.staff.id) == (Role.STAFF,)
    assert [e.detail["reason"] for e in node.events("account.approval.approved")] == [
        "own_request",
        "role",
        "role",
        "operator",
    ]

    approved = await node.accounts.approve(d, waiting.id)
    assert approved.state == "approved" and approved.decided_by == dsl.staff.id
    assert approved.decided_by_name == "Dsl (DSL)"
    assert set(await _roles(node, teacher.staff.id)) == {Role.STAFF, Role.DSL}
    with pytest.raises(SessionInvalid):  # the teacher's session ended
        await node.accounts.authenticate(teacher_session.token)
    with pytest.raises(ConflictError, match="approved already"):
        await node.accounts.approve(d, waiting.id)
    assert await node.accounts.approvals.alerts.list(d) == []  # the alert is resolved
    changed = node.events("account.roles_changed")[-1]
    assert (changed.actor, changed.targets["staff"], changed.detail["requested_by"]) == (
        dsl.staff.id,
        teacher.staff.id,
        boss.staff.id,
    )


async def test_removing_a_protected_role_waits_too_and_other_roles_do_not(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    head = await node.person("head", [Role.HEAD_TEACHER])
    teacher = await node.person("teacher", [Role.STAFF])
    a = await _actor(node, admin)
    waiting = await node.accounts.set_roles(a, head.staff.id, ["staff"])
    assert isinstance(waiting, ApprovalRecord) and waiting.roles_before == ("head_teacher",)
    assert await _roles(node, head.staff.id) == (Role.HEAD_TEACHER,)
    # Roles that read no concern content change at once.
    done = await node.accounts.set_roles(a, teacher.staff.id, ["staff", "auditor"])
    assert not isinstance(done, ApprovalRecord) and done.roles == ("staff", "auditor")
    # The store refuses a protected change made around the accounts service.
    with pytest.raises(PermissionDenied, match="DSL's approval"):
        await node.store.update_staff(a, teacher.staff.id, roles=["staff", "dsl"])
    with pytest.raises(PermissionDenied, match="DSL's approval"):
        await node.store.create_staff(a, username="x", display_name="X", roles=["deputy_dsl"])


async def test_a_dsls_password_reset_waits_and_the_dsl_can_decline_it(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    dsl = await node.person("dsl", [Role.DSL])
    a = await _actor(node, admin)
    waiting = await node.accounts.reset_password(a, dsl.staff.id, NEW_PASSWORD)
    assert waiting is not None and waiting.kind == "reset_password"
    assert waiting.summary == "Admin (administrator) asked to set a new password for Dsl (DSL)"
    # The old password still works, the new one does not.
    await node.session(dsl)
    with pytest.raises(SignInFailed):
        await node.accounts.sign_in(URN, "dsl", NEW_PASSWORD, totp=dsl.code(node.clock.now))
    # The person it is about may not approve it, but may decline it.
    d = await _actor(node, dsl)
    with pytest.raises(PermissionDenied, match="your own account"):
        await node.accounts.approve(d, waiting.id)
    declined = await node.accounts.decline(d, waiting.id)
    assert declined.state == "declined"
    async with node.store.sessions() as s:
        row = await s.get(StaffApproval, waiting.id)
    assert row is not None and row.password_hash is None  # no hash kept once decided
    await node.session(dsl)  # still the old password
    # A new request can be made once the first is decided; another DSL approves it.
    again = await node.accounts.reset_password(a, dsl.staff.id, NEW_PASSWORD)
    assert again is not None
    other = await node.person("other", [Role.DSL])
    await node.accounts.approve(await _actor(node, other), again.id)
    node.next_step()
    with pytest.raises(SignInFailed):
        await node.accounts.sign_in(URN, "dsl", PASSWORD, totp=dsl.code(node.clock.now))
    node.next_step()
    ok = await node.accounts.sign_in(URN, "dsl", NEW_PASSWORD, totp=dsl.code(node.clock.now))
    assert ok.state == "signed_in"
    assert [e.action for e in node.audit.events if e.action.startswith("account.approval")] == [
        "account.approval.requested",
        "account.approval.approved",
        "account.approval.declined",
        "account.approval.requested",
        "account.approval.approved",
    ]


async def test_a_dsls_authenticator_reset_waits_and_own_resets_are_refused(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    other_admin = await node.person("admin2", [Role.ADMINISTRATOR])
    dsl = await node.person("dsl", [Role.DSL])
    teacher = await node.person("teacher", [Role.STAFF], enrol=True)
    a = await _actor(node, admin)
    waiting = await node.accounts.reset_totp(a, dsl.staff.id)
    assert waiting is not None and waiting.kind == "reset_totp"
    await node.session(dsl)  # the authenticator still works
    # Someone with no protected role: at once.
    assert await node.accounts.reset_totp(a, teacher.staff.id) is None
    # Nobody resets their own password or authenticator through administration.
    with pytest.raises(PermissionDenied):
        await node.accounts.reset_totp(a, admin.staff.id)
    with pytest.raises(PermissionDenied):
        await node.accounts.reset_password(a, admin.staff.id, NEW_PASSWORD)
    # Withdrawn by whoever asked.
    withdrawn = await node.accounts.decline(a, waiting.id)
    assert withdrawn.state == "withdrawn"
    # Another administrator cannot decide it.
    again = await node.accounts.reset_totp(a, dsl.staff.id)
    assert again is not None
    with pytest.raises(PermissionDenied):
        await node.accounts.decline(await _actor(node, other_admin), again.id)
    second = await node.person("dsl2", [Role.DSL])
    await node.accounts.approve(await _actor(node, second), again.id)
    result = await node.accounts.sign_in(URN, "dsl", PASSWORD)
    assert result.state == "must_enrol_totp"


async def test_an_account_with_a_protected_role_is_created_only_on_approval(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    dsl = await node.person("dsl", [Role.DSL])
    a = await _actor(node, admin)
    waiting = await node.accounts.create_account(
        a, username="dee", display_name="Dee Okoro", roles=["dsl"], password=NEW_PASSWORD
    )
    assert isinstance(waiting, ApprovalRecord) and waiting.kind == "create_account"
    assert (
        waiting.summary
        == "Admin (administrator) asked to add an account for Dee Okoro (dee) as DSL"
    )
    assert await node.store.find_staff(URN, "dee") is None
    with pytest.raises(ConflictError, match="already waiting"):
        await node.accounts.create_account(
            a, username="Dee", display_name="Dee", roles=["dsl"], password=NEW_PASSWORD
        )
    approved = await node.accounts.approve(await _actor(node, dsl), waiting.id)
    assert approved.staff_id is not None
    made = await node.store.find_staff(URN, "dee")
    assert made is not None and made.roles == ("dsl",) and made.id == approved.staff_id
    assert (await node.accounts.sign_in(URN, "dee", NEW_PASSWORD)).state == "must_enrol_totp"
    assert node.events("account.created")[-1].targets["staff"] == made.id


async def test_the_operator_creates_the_first_dsl_and_asks_for_the_next(node: Node) -> None:
    first = await node.accounts.create_account_as_operator(
        URN, username="dee", display_name="Dee Okoro", roles=["dsl"], password=PASSWORD
    )
    assert not isinstance(first, ApprovalRecord)  # nobody could approve it
    second = await node.accounts.create_account_as_operator(
        URN, username="sam", display_name="Sam Patel", roles=["deputy_dsl"], password=PASSWORD
    )
    assert isinstance(second, ApprovalRecord)
    assert (second.requested_as, second.requested_by) == ("operator", None)
    assert second.summary.startswith("the server operator asked to add an account for Sam Patel")
    assert await node.store.find_staff(URN, "sam") is None


async def test_only_one_of_two_dsls_deciding_at_once_wins(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    teacher = await node.person("teacher", [Role.STAFF])
    dsls = [await _actor(node, await node.person(f"dsl{i}", [Role.DSL])) for i in range(4)]
    a = await _actor(node, admin)
    # Parallel identical requests: one waits, the others are told one is waiting.
    asked = await asyncio.gather(
        *(node.accounts.set_roles(a, teacher.staff.id, ["staff", "dsl"]) for _ in range(4)),
        return_exceptions=True,
    )
    waiting = [r for r in asked if isinstance(r, ApprovalRecord)]
    assert len(waiting) == 1 and all(
        isinstance(r, ConflictError) for r in asked if r not in waiting
    )
    # Two approve and two decline at the same moment: exactly one decision stands.
    calls = [node.accounts.approve(d, waiting[0].id) for d in dsls[:2]] + [
        node.accounts.decline(d, waiting[0].id) for d in dsls[2:]
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    decided = [r for r in results if isinstance(r, ApprovalRecord)]
    assert len(decided) == 1, results
    assert all(isinstance(r, ConflictError) for r in results if r not in decided)
    roles = set(await _roles(node, teacher.staff.id))
    assert roles == ({Role.STAFF, Role.DSL} if decided[0].state == "approved" else {Role.STAFF})
    async with node.store.sessions() as s:
        rows = (await s.execute(select(StaffApproval))).scalars().all()
    assert [(r.state, r.pending_key) for r in rows] == [(decided[0].state, None)]


async def test_a_request_expires_and_a_stale_one_is_refused(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    dsl = await node.person("dsl", [Role.DSL])
    teacher = await node.person("teacher", [Role.STAFF])
    a = await _actor(node, admin)
    old = await node.accounts.set_roles(a, teacher.staff.id, ["staff", "head_teacher"])
    assert isinstance(old, ApprovalRecord)
    node.clock.advance(days=7, seconds=1)
    d = await _actor(node, dsl)
    with pytest.raises(ConflictError, match="expired"):
        await node.accounts.approve(d, old.id)
    assert [r.state for r in await node.accounts.list_approvals(d, state=None)] == ["expired"]
    assert Role.HEAD_TEACHER not in await _roles(node, teacher.staff.id)
    # Asked again; meanwhile the teacher's other roles change: the request is stale.
    fresh = await node.accounts.set_roles(a, teacher.staff.id, ["staff", "head_teacher"])
    assert isinstance(fresh, ApprovalRecord)
    await node.accounts.set_roles(a, teacher.staff.id, ["staff", "auditor"])
    d = await _actor(node, dsl)
    with pytest.raises(ConflictError, match="changed since"):
        await node.accounts.approve(d, fresh.id)
    listed = await node.accounts.list_approvals(d)
    assert [(r.id, r.state) for r in listed] == [(fresh.id, "pending")]  # still to decline
    assert set(await _roles(node, teacher.staff.id)) == {Role.STAFF, Role.AUDITOR}


async def test_who_may_see_the_requests(node: Node) -> None:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    dsl = await node.person("dsl", [Role.DSL])
    deputy = await node.person("deputy", [Role.DEPUTY_DSL])
    teacher = await node.person("teacher", [Role.STAFF])
    a = await _actor(node, admin)
    waiting = await node.accounts.set_roles(a, teacher.staff.id, ["staff", "deputy_dsl"])
    assert isinstance(waiting, ApprovalRecord)
    for who in (a, await _actor(node, dsl)):
        assert [r.id for r in await node.accounts.list_approvals(who)] == [waiting.id]
        assert (await node.accounts.get_approval(who, waiting.id)).id == waiting.id
    for p in (deputy, teacher):
        with pytest.raises(PermissionDenied):
            await node.accounts.list_approvals(await _actor(node, p))
