"""Fixtures of the end-to-end tests: pairs of real nodes, and an HTTP client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.support import Pair, build_pair


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """Two fresh nodes built on disk, not started (for tests that stop, kill or revoke);
    every ``serve`` process is stopped afterwards."""
    built = build_pair(tmp_path / "world")
    try:
        yield built
    finally:
        built.world.stop()


@pytest.fixture
def pg_pair(tmp_path: Path, pg_url: str) -> Iterator[Pair]:
    """Like ``pair``, with the primary school's node on a fresh PostgreSQL database."""
    built = build_pair(tmp_path / "world", primary_db=pg_url)
    try:
        yield built
    finally:
        built.world.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two nodes serving for the whole module (for tests that leave both running). Tests
    sharing it look only at their own packages, keys and audit reasons."""
    built = build_pair(tmp_path_factory.mktemp("shared") / "world")
    try:
        built.world.start()
        yield built
    finally:
        built.world.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
