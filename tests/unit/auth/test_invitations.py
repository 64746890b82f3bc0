"""Inviting staff by a one-time link: single use (also under parallel redemption, on each
engine), expiring, stored only as a hash, and never a way round the two-person rule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.unit.auth.support import URN, Node, open_node
from transfer.auth import codes
from transfer.auth.invitations import INVITATION_DAYS, InvitationInvalid
from transfer.auth.tables import Credential, Invitation
from transfer.errors import InputError
from transfer.store.permissions import Actor, PermissionDenied, Role

NEW_PASSWORD = "quiet harbour lamp seventeen"


async def _admin(node: Node) -> Actor:
    admin = await node.person("admin", [Role.ADMINISTRATOR])
    return (await node.session(admin)).actor


async def test_an_invited_person_sets_their_own_password_once(db_url: str, tmp_path: Path) -> None:
    async with open_node(db_url, tmp_path / "d") as node:
        actor = await _admin(node)
        issued = await node.accounts.invitations.invite(
            actor, username="mo", display_name="Mo Patel", roles=["staff"]
        )
        assert issued.path.startswith("/invitation/hoi_") and issued.waiting is None
        async with node.store.sessions() as s:
            row = await s.scalar(select(Invitation))
            assert row is not None
            assert row.token_hash == codes.token_hash(issued.link_token)
            assert issued.link_token not in repr(row.__dict__)
            assert await s.get(Credential, issued.staff.id) is None
        lines = await node.accounts.invitations.lines(actor)
        assert {(ln.display_name, ln.state) for ln in lines} >= {("Mo Patel", "invited")}
        info = await node.accounts.invitations.info(issued.link_token)
        assert info.display_name == "Mo Patel"
        # A password the policy refuses leaves the link working.
        with pytest.raises(InputError):
            await node.accounts.invitations.accept(issued.link_token, "short")
        result = await node.accounts.invitations.accept(issued.link_token, NEW_PASSWORD)
        assert result.state == "signed_in"
        await node.accounts.authenticate(result.token)
        with pytest.raises(InvitationInvalid):
            await node.accounts.invitations.accept(issued.link_token, NEW_PASSWORD + " again")
        with pytest.raises(InvitationInvalid):
            await node.accounts.invitations.info(issued.link_token)
        signed = await node.accounts.sign_in(URN, "mo", NEW_PASSWORD)
        assert signed.state == "signed_in"
        assert [e.detail["reason"] for e in node.events("account.invitation.refused")] == [
            "used",
            "used",
        ]


async def test_an_administrator_must_enrol_an_authenticator_after_the_link(
    db_url: str, tmp_path: Path
) -> None:
    async with open_node(db_url, tmp_path / "d") as node:
        actor = await _admin(node)
        issued = await node.accounts.invitations.invite(
            actor, username="ada", display_name="Ada", roles=["administrator"]
        )
        result = await node.accounts.invitations.accept(issued.link_token, NEW_PASSWORD)
        assert result.state == "must_enrol_totp"


async def test_a_link_expires_and_a_new_one_withdraws_the_old(db_url: str, tmp_path: Path) -> None:
    async with open_node(db_url, tmp_path / "d") as node:
        actor = await _admin(node)
        first = await node.accounts.invitations.invite(
            actor, username="mo", display_name="Mo", roles=["staff"]
        )
        node.clock.advance(days=INVITATION_DAYS, seconds=1)
        with pytest.raises(InvitationInvalid):
            await node.accounts.invitations.accept(first.link_token, NEW_PASSWORD)
        lines = await node.accounts.invitations.lines(actor)
        assert [ln.state for ln in lines if ln.username == "mo"] == ["invitation expired"]
        second = await node.accounts.invitations.reinvite(actor, first.staff.id)
        third = await node.accounts.invitations.reinvite(actor, first.staff.id)
        with pytest.raises(InvitationInvalid):
            await node.accounts.invitations.accept(second.link_token, NEW_PASSWORD)
        await node.accounts.invitations.accept(third.link_token, NEW_PASSWORD)
        reasons = [e.detail["reason"] for e in node.events("account.invitation.refused")]
        assert reasons == ["expired", "withdrawn"]
        # Wrong or malformed links say the same thing.
        for bad in ("", "hoi_" + "x" * 43, "hos_abc", first.link_token[:-1]):
            with pytest.raises(InvitationInvalid):
                await node.accounts.invitations.info(bad)


async def test_a_deactivated_persons_link_does_not_work(db_url: str, tmp_path: Path) -> None:
    async with open_node(db_url, tmp_path / "d") as node:
        actor = await _admin(node)
        issued = await node.accounts.invitations.invite(
            actor, username="mo", display_name="Mo", roles=["staff"]
        )
        await node.accounts.deactivate(actor, issued.staff.id)
        with pytest.raises(InvitationInvalid):
            await node.accounts.invitations.accept(issued.link_token, NEW_PASSWORD)


async def test_parallel_redemption_of_one_link_lets_exactly_one_in(
    db_url: str, tmp_path: Path
) -> None:
    async with open_node(db_url, tmp_path / "d") as node:
        actor = await _admin(node)
        issued = await node.accounts.invitations.invite(
            actor, username="mo", display_name="Mo", roles=["staff"]
        )

        async def redeem(i: int) -> str:
            try:
                await node.accounts.invitations.accept(issued.link_token, f"{NEW_PASSWORD} {i}")
            except InvitationInvalid:
                return "refused"
            return f"in {i}"

        outcomes = await asyncio.gather(*(redeem(i) for i in range(8)))
        winners = [o for o in outcomes if o != "refused"]
        assert len(winners) == 1, outcomes
        winner = int(winners[0].split()[1])
        # The password that counts is the winner's: nobody else's was written.
        await node.accounts.sign_in(URN, "mo", f"{NEW_PASSWORD} {winner}")
        assert len(node.events("account.invitation.accepted")) == 1
        async with node.store.sessions() as s:
            used = (await s.scalars(select(Invitation.used_at))).all()
        assert len(used) == 1 and used[0] is not None


async def test_a_protected_role_waits_for_a_dsl_and_staff_cannot_invite(
    db_url: str, tmp_path: Path
) -> None:
    async with open_node(db_url, tmp_path / "d") as node:
        await node.person("dsl", [Role.DSL])
        actor = await _admin(node)
        issued = await node.accounts.invitations.invite(
            actor, username="dep", display_name="Dee", roles=["deputy_dsl"]
        )
        assert issued.staff.roles == ("staff",)
        assert issued.waiting is not None and issued.waiting.state == "pending"
        assert issued.waiting.roles == ("deputy_dsl",)
        teacher = await node.person("teacher", [Role.STAFF])
        t_actor = (await node.session(teacher)).actor
        with pytest.raises(PermissionDenied):
            await node.accounts.invitations.invite(
                t_actor, username="x", display_name="X", roles=["staff"]
            )
        with pytest.raises(PermissionDenied):
            await node.accounts.invitations.lines(t_actor)
