"""Parallel wrong passcodes cannot get more checks than the limit (the count is atomic)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from receivers.portal.service import LinkLocked, WrongPortalCode
from tests.support.portal import AGENCY_EMAIL, portal_world


async def test_parallel_guesses_cannot_pass_the_limit(db_url: str, tmp_path: Path) -> None:
    async with portal_world(db_url, tmp_path) as world:
        path, _ = world.package()
        issued = await world.portal.create_pickup(
            world.dsl, package=path, referral_id="ref-1", email=AGENCY_EMAIL
        )
        assert issued.link is not None
        token = issued.link.split("?t=", 1)[1]
        limit = world.portal.settings.max_attempts

        async def guess(n: int) -> str:
            try:
                await world.portal.sign_in(token, passcode=f"{n:03d}-000-000-000")
            except WrongPortalCode:
                return "wrong"
            except LinkLocked:
                return "locked"
            return "in"

        outcomes = await asyncio.gather(*(guess(n) for n in range(4 * limit)))
        assert "in" not in outcomes
        # Every guess was counted before it was checked: at most ``limit`` were checked.
        assert outcomes.count("wrong") <= limit, outcomes
        events = world.node.audit.actions().count("portal.passcode_failed")
        assert events <= limit
        info = await world.portal.get_pickup(world.dsl, issued.pickup.id)
        assert info.state == "locked"
