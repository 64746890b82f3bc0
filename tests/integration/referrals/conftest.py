"""A school on each database engine with keys and three agencies in its directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.auditing import MemoryAudit
from tests.integration.store.conftest import KEK, make_school, start_clock
from tests.support.referrals import Setting, make_setting
from transfer.store.service import Store


@pytest.fixture
async def setting(db_url: str, tmp_path: Path) -> AsyncIterator[Setting]:
    audit = MemoryAudit()
    clock = start_clock()
    data_dir = tmp_path / "data"
    store = await Store.open(db_url, KEK, audit, data_dir=data_dir, clock=clock)
    try:
        school = await make_school(store, audit, clock, data_dir)
        yield await make_setting(school, data_dir)
    finally:
        await store.close()
