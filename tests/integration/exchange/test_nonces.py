"""The replay table on both engines: the same nonce offered by many requests at once is
taken by exactly one; another key's same nonce is its own; expired ones are pruned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from transfer.exchange.nonces import NonceTable, ReplayedRequestError
from transfer.exchange.tables import PeerNonce
from transfer.store.db import make_engine, migrate


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(PeerNonce))).scalar_one())


async def test_one_nonce_sent_by_many_requests_at_once_is_taken_once(engine: AsyncEngine) -> None:
    table = NonceTable(engine, skew_seconds=300)
    now = int(time.time())
    results = await asyncio.gather(
        *(table.remember("key-a", "n-1", now) for _ in range(12)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, ReplayedRequestError)]
    assert [r for r in results if r is None] == [None]
    assert len(refused) == 11, results
    assert "already received" in str(refused[0])
    # Another key may use the same nonce; the first key may not, later either.
    await table.remember("key-b", "n-1", now)
    with pytest.raises(ReplayedRequestError):
        await table.remember("key-a", "n-1", now)
    assert await _count(engine) == 2


async def test_expired_nonces_are_pruned_and_live_ones_kept(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    table = NonceTable(engine, skew_seconds=300, clock=lambda: now + timedelta(hours=1))
    # (The first insert also prunes, with nothing to prune yet.)
    await table.remember("key-a", "new", int((now + timedelta(hours=1)).timestamp()))
    await table.remember("key-a", "old", int((now - timedelta(hours=1)).timestamp()))
    assert await _count(engine) == 2
    assert await table.prune() == 1
    assert await _count(engine) == 1
    with pytest.raises(ReplayedRequestError):
        await table.remember("key-a", "new", int(now.timestamp()))
