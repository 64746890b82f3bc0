"""Fixtures of the web tests: the demo's world served by real processes, and Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser, async_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, WebWorld
from transfer.demo import scenario

#: The secondary node's idle timeout (minutes), so that the expiry tests wait one minute.
SHORT_IDLE = "1"


@pytest.fixture(scope="module")
def web_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    """The demo's two schools, seeded, each served by a real ``handover serve`` process."""
    root = tmp_path_factory.mktemp("web") / "demo"
    root.mkdir(mode=0o700)
    world = scenario.build(root)
    try:
        seeded = asyncio.run(scenario.seed(world))
        scenario.write_web_json(world, seeded, root / "web.json")
        world.nodes["secondary"].serve.env["HANDOVER_SECURITY__SESSION_IDLE_MINUTES"] = SHORT_IDLE
        world.start()
        yield WebWorld.load(root, {n: w.data_dir for n, w in world.nodes.items()})
    finally:
        world.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
