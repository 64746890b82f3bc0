"""Shared fixtures: a real PostgreSQL server for the session, and database URLs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.postgres import PostgresServer, create_database, running_postgres

_counter = itertools.count()

# No per-example deadline: the suite runs on a shared two-core machine beside real servers
# and browsers, where a pure example can wait for a core; speed is measured in `make bench`,
# never in a timed test (a property test that failed here once was only slow, not wrong).
settings.register_profile("handover", deadline=None)
settings.load_profile("handover")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return create_database(postgres_server, f"t{next(_counter)}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each engine: the embedded SQLite and a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'handover.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return create_database(server, f"t{next(_counter)}")
