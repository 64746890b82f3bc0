"""Step-up: a fresh authenticator code before a sensitive action, checked by Accounts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.unit.auth.support import Node, open_node
from transfer.auth import AccountLocked, SlowDown, TotpEnrolmentRequired, WrongCode
from transfer.config import SecuritySection
from transfer.errors import ConflictError
from transfer.store.permissions import Role


async def test_a_fresh_code_is_accepted_once(node: Node) -> None:
    dsl = await node.person("dsl", [Role.DSL])
    principal = await node.session(dsl)
    code = dsl.code(node.clock.now)
    await node.accounts.step_up(principal, code)
    assert [e.outcome for e in node.events("stepup.ok")] == ["ok"]
    with pytest.raises(WrongCode):
        await node.accounts.step_up(principal, code)
    node.next_step()
    await node.accounts.step_up(principal, dsl.code(node.clock.now))


async def test_the_sign_in_code_cannot_be_reused_for_a_step_up(node: Node) -> None:
    dsl = await node.person("dsl", [Role.DSL])
    code = dsl.code(node.clock.now)
    result = await node.accounts.sign_in("199001", "dsl", dsl.password, totp=code)
    principal = await node.accounts.authenticate(result.token)
    with pytest.raises(WrongCode):
        await node.accounts.step_up(principal, code)
    failed = node.events("signin.failed")
    assert failed[-1].detail == {"reason": "bad_totp", "during": "step_up", "totp": "reused"}


async def test_wrong_codes_slow_down_then_lock_the_account(db_url: str, tmp_path: Path) -> None:
    security = SecuritySection(failed_signins_before_delay=2, failed_signins_before_lock=3)
    async with open_node(db_url, tmp_path / "data", security) as node:
        dsl = await node.person("dsl", [Role.DSL])
        principal = await node.session(dsl)
        for _ in range(2):
            with pytest.raises(WrongCode):
                await node.accounts.step_up(principal, "000000")
        with pytest.raises(SlowDown):
            await node.accounts.step_up(principal, "000000")
        node.clock.advance(seconds=5)
        with pytest.raises(WrongCode):
            await node.accounts.step_up(principal, "000000")
        with pytest.raises(AccountLocked):
            await node.accounts.step_up(principal, dsl.code(node.clock.now))
        assert node.events("account.locked")


async def test_without_an_authenticator_it_says_so(node: Node) -> None:
    teacher = await node.person("teacher", [Role.STAFF], enrol=False)
    principal = await node.session(teacher)
    with pytest.raises(ConflictError):
        await node.accounts.step_up(principal, "123456")


async def test_an_enrolment_session_cannot_step_up(node: Node) -> None:
    await node.accounts.bootstrap_account(
        "199001", username="new", display_name="New", roles=["dsl"], password="a long phrase here"
    )
    result = await node.accounts.sign_in("199001", "new", "a long phrase here")
    principal = await node.accounts.authenticate(result.token, allow_enrolment=True)
    with pytest.raises(TotpEnrolmentRequired):
        await node.accounts.step_up(principal, "123456")


async def test_parallel_step_ups_with_one_code_accept_it_once(node: Node) -> None:
    dsl = await node.person("dsl", [Role.DSL])
    principal = await node.session(dsl)
    code = dsl.code(node.clock.now)
    results = await asyncio.gather(
        *(node.accounts.step_up(principal, code) for _ in range(8)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    # The rest are refused: the code was used, or (each attempt being counted before it is
    # checked) they came too fast after those failures.
    assert all(isinstance(r, WrongCode | SlowDown) for r in results if r is not None)
