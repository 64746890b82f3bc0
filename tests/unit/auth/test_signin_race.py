"""Parallel sign-in guesses: the attempt is counted before the password is checked.

Before this was fixed, 40 concurrent wrong passwords were all checked against an
account whose limit was 8, the right password after them signed in, and the
counter ended at 5 (read, changed and written back by each attempt at once).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.unit.auth.support import KEK, PASSWORD, URN, open_node
from transfer.auth import CHEAPEST, AccountLocked, Accounts, SignInFailed, SlowDown, passwords
from transfer.auth.tables import Credential, UnknownSignIn
from transfer.config import SecuritySection
from transfer.store.permissions import Role
from transfer.store.service import Store

LIMIT = 8
GUESSES = 40


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count every Argon2id verification the accounts service makes."""
    calls: list[str] = []
    real = passwords.verify_password

    def counting(stored: str, password: str) -> bool:
        calls.append(password)
        return real(stored, password)

    monkeypatch.setattr("transfer.auth.base.verify_password", counting)
    return calls


async def _outcomes(accounts: list[Accounts], username: str, n: int) -> list[str]:
    async def guess(i: int) -> str:
        try:
            await accounts[i % len(accounts)].sign_in(URN, username, f"wrong guess number {i}")
        except SignInFailed:
            return "failed"
        except AccountLocked:
            return "locked"
        except SlowDown:
            return "slow"
        return "in"

    return list(await asyncio.gather(*(guess(i) for i in range(n))))


async def test_parallel_wrong_passwords_never_check_more_than_the_limit(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No slow-down before the lock, so only the lock bounds the burst.
    security = SecuritySection(failed_signins_before_delay=100, failed_signins_before_lock=LIMIT)
    async with open_node(db_url, tmp_path / "d", security) as node:
        teacher = await node.person("teacher", [Role.STAFF])
        calls = _counting(monkeypatch)
        outcomes = await _outcomes([node.accounts], "teacher", GUESSES)
        assert "in" not in outcomes
        assert len(calls) <= LIMIT, (len(calls), outcomes)
        assert outcomes.count("failed") == len(calls) == LIMIT
        assert outcomes.count("locked") == GUESSES - LIMIT
        async with node.store.sessions() as s:
            cred = await s.get(Credential, teacher.staff.id)
        assert cred is not None and cred.failed_count == LIMIT and cred.locked_until is not None
        assert len(node.events("account.locked")) == 1
        # The right password after the limit is refused, and not even checked.
        checked = len(calls)
        with pytest.raises(AccountLocked):
            await node.accounts.sign_in(URN, "teacher", PASSWORD)
        assert len(calls) == checked


async def test_parallel_guesses_with_the_slow_down_on_check_fewer(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    security = SecuritySection(failed_signins_before_delay=3, failed_signins_before_lock=LIMIT)
    async with open_node(db_url, tmp_path / "d", security) as node:
        await node.person("teacher", [Role.STAFF])
        calls = _counting(monkeypatch)
        outcomes = await _outcomes([node.accounts], "teacher", GUESSES)
        assert "in" not in outcomes
        # Three free failures, then one more after the (zero) wait; the rest must wait (429).
        assert len(calls) <= 4, (len(calls), outcomes)
        assert outcomes.count("failed") == len(calls)
        assert outcomes.count("slow") == GUESSES - len(calls)
        with pytest.raises(SlowDown) as slow:
            await node.accounts.sign_in(URN, "teacher", PASSWORD)
        assert slow.value.http_status == 429 and slow.value.retry_after >= 1


async def test_the_right_password_among_parallel_guesses_resets_the_count(
    db_url: str, tmp_path: Path
) -> None:
    security = SecuritySection(failed_signins_before_delay=100, failed_signins_before_lock=LIMIT)
    async with open_node(db_url, tmp_path / "d", security) as node:
        teacher = await node.person("teacher", [Role.STAFF])
        for i in range(3):
            with pytest.raises(SignInFailed):
                await node.accounts.sign_in(URN, "teacher", f"wrong guess {i}")
        await node.accounts.sign_in(URN, "teacher", PASSWORD)
        async with node.store.sessions() as s:
            cred = await s.get(Credential, teacher.staff.id)
        assert cred is not None and cred.failed_count == 0 and cred.last_failed_at is None


async def test_parallel_guesses_at_an_unknown_username_lock_like_a_real_one(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    security = SecuritySection(failed_signins_before_delay=100, failed_signins_before_lock=LIMIT)
    async with (
        open_node(db_url, tmp_path / "d", security) as node,
        await Store.open(
            db_url, KEK, node.audit, data_dir=tmp_path / "d", clock=node.clock
        ) as other_store,
    ):
        # A second store and accounts service on the same database, with their own
        # connections: a second ``serve`` process.
        second = Accounts(
            other_store, KEK, node.audit, security, clock=node.clock, hashing=CHEAPEST
        )
        calls = _counting(monkeypatch)
        outcomes = await _outcomes([node.accounts, second], "nobody", GUESSES)
        assert "in" not in outcomes
        # Only the dummy-hash checks of counted attempts ran: no more than the limit.
        assert len(calls) <= LIMIT, (len(calls), outcomes)
        assert outcomes.count("failed") == LIMIT
        assert outcomes.count("locked") == GUESSES - LIMIT
        for accounts in (node.accounts, second):
            with pytest.raises(AccountLocked):
                await accounts.sign_in(URN, "nobody", PASSWORD)
        # One counter for the name, kept under a keyed hash, never the name typed.
        async with node.store.sessions() as s:
            rows = (await s.execute(select(UnknownSignIn))).scalars().all()
        assert [(r.failed_count, r.locked_until is not None) for r in rows] == [(LIMIT, True)]
        assert "nobody" not in rows[0].key_hash and len(rows[0].key_hash) == 64


async def test_unknown_names_are_forgotten_after_a_day_like_real_failures(
    db_url: str, tmp_path: Path
) -> None:
    security = SecuritySection(failed_signins_before_delay=100, failed_signins_before_lock=3)
    async with open_node(db_url, tmp_path / "d", security) as node:
        teacher = await node.person("teacher", [Role.STAFF])
        for name in ("ghost", "teacher"):
            for _ in range(2):
                with pytest.raises(SignInFailed):
                    await node.accounts.sign_in(URN, name, "wrong guess again")
        node.clock.advance(hours=24)
        # A day later both start again from nothing: two more failures do not lock either.
        for name in ("ghost", "teacher"):
            for _ in range(2):
                with pytest.raises(SignInFailed):
                    await node.accounts.sign_in(URN, name, "wrong guess again")
        assert node.events("account.locked") == []
        node.clock.advance(hours=25)
        # A new unknown name clears the rows of names idle for more than a day.
        with pytest.raises(SignInFailed):
            await node.accounts.sign_in(URN, "someone else", "wrong guess again")
        async with node.store.sessions() as s:
            rows = (await s.execute(select(UnknownSignIn))).scalars().all()
        assert [r.failed_count for r in rows] == [1]
        assert (await node.accounts.sign_in(URN, "teacher", teacher.password)).token
