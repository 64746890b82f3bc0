"""The HTTP JSON API (aiohttp): :func:`transfer.api.app.create_app`. See ``docs/api.md``."""

from __future__ import annotations

from transfer.api.app import create_app

__all__ = ["create_app"]
