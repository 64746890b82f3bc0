"""The kill -9 campaign (``tests/faults/campaign.py``): short seeded runs in ``make test``,
long ones with ``make faults`` (``-m faults_long``; seeds and sizes from the environment:
``FAULTS_SEEDS``, ``FAULTS_PACKAGES``, ``FAULTS_KILLS``; the figures of each run are written
to ``FAULTS_REPORT`` when set). ``docs/reliability.md`` quotes the latest long run."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.faults.campaign import Engine, Plan, run_campaign
from tests.support.postgres import PostgresServer, create_database


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)


async def _run(tmp_path: Path, plan: Plan, request: pytest.FixtureRequest) -> None:
    pg_urls = None
    if plan.engine == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pg_urls = (
            create_database(server, f"faults_s{plan.seed}_a"),
            create_database(server, f"faults_s{plan.seed}_b"),
        )
    figures = await run_campaign(tmp_path / "world", plan, pg_urls=pg_urls)
    report = os.environ.get("FAULTS_REPORT")
    if report:
        line = json.dumps(figures.to_json()) + "\n"
        await asyncio.to_thread(_append, Path(report), line)
    assert sum(figures.kills.values()) == plan.kills


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_short_campaign(
    engine: Engine, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    await _run(tmp_path, Plan(seed=17, packages=5, engine=engine, kills=6), request)


def _seeds() -> list[int]:
    return [int(s) for s in os.environ.get("FAULTS_SEEDS", "1,2,3").split(",") if s.strip()]


@pytest.mark.faults_long
@pytest.mark.parametrize("seed", _seeds())
@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_long_campaign(
    engine: Engine, seed: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    plan = Plan(
        seed=seed,
        packages=int(os.environ.get("FAULTS_PACKAGES", "30")),
        engine=engine,
        kills=int(os.environ.get("FAULTS_KILLS", "30")),
        patience=3600.0,
    )
    await _run(tmp_path, plan, request)
