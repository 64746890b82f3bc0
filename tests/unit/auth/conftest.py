from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.auth.support import Node, open_node


@pytest.fixture
async def node(db_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    async with open_node(db_url, tmp_path / "data") as n:
        yield n
