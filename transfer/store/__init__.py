"""The concern store: SQLAlchemy 2 (async) on the embedded SQLite or PostgreSQL.

The public API is :class:`transfer.store.service.Store` (see ``docs/store.md``).
It is imported lazily so that ``transfer.store.db`` stays importable on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transfer.store.service import Store

__all__ = ["Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from transfer.store.service import Store

        return Store
    raise AttributeError(name)
