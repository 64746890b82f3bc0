"""The HTTP JSON API (aiohttp): :func:`transfer.api.app.create_app`. See ``docs/api.md``."""

from __future__ import annotations

from transfer.api.app import create_app
from transfer.api.request_ids import RequestIdAudit

__all__ = ["RequestIdAudit", "create_app"]
