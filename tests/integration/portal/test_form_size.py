"""The portal refuses oversized form bodies itself: the root app's 16 MiB limit is not its own."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.support.portal import portal_world, served


async def test_an_oversized_form_is_refused_with_413(tmp_path: Path) -> None:
    async with portal_world(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as world:
        async with served(world) as base, aiohttp.ClientSession() as http:
            big = {"t": "x" * (200 * 1024), "method": "passcode", "passcode": "1", "csrf": "y"}
            async with http.post(f"{base}/portal/open", data=big) as resp:
                assert resp.status == 413
                assert "too large" in await resp.text()
            small = {"t": "x", "method": "passcode", "passcode": "1", "csrf": "y"}
            async with http.post(f"{base}/portal/open", data=small) as resp:
                assert resp.status == 403  # a normal-sized form reaches the CSRF check
