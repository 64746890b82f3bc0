"""The replay table: every nonce of a signed peer request, kept while a replay could pass.

A signed request is accepted only within ``clock_skew_seconds`` of its creation
time (:mod:`transfer.httpsig`), so its nonce need only be remembered until
``created + skew`` (plus a margin): after that a replay fails the time check
anyway. The table lives in the database, so every ``serve`` process on one
PostgreSQL shares it; the primary key (key id, nonce) makes "seen before" an
atomic insert.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from transfer.errors import AuthenticationError, InputError
from transfer.exchange.tables import PeerNonce
from transfer.store.db import sessionmaker

#: Extra time a nonce is kept beyond the last moment its request could be accepted.
MARGIN = timedelta(seconds=60)
MAX_NONCE_LENGTH = 128
#: Expired nonces are pruned once every this many inserts.
_PRUNE_EVERY = 200
_INSERT = insert(PeerNonce)


class ReplayedRequestError(AuthenticationError):
    """A signed request whose nonce was already used: a replay (or a client bug)."""

    slug = "replayed-request"
    title = "This request was already received"


class NonceTable:
    """Remembers nonces per signing key; :meth:`remember` refuses one seen before."""

    def __init__(
        self, engine: AsyncEngine, *, skew_seconds: int, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._engine = engine
        self._sessions: async_sessionmaker[AsyncSession] = sessionmaker(engine)
        self._skew = timedelta(seconds=skew_seconds)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._inserts = 0

    async def remember(self, key_id: str, nonce: str, created: int) -> None:
        """Record ``nonce`` of ``key_id``; raise :class:`ReplayedRequestError` if already held."""
        if not nonce or len(nonce) > MAX_NONCE_LENGTH or not nonce.isprintable():
            raise InputError(
                f"the request's signature nonce must be 1 to {MAX_NONCE_LENGTH} printable "
                "characters"
            )
        expires = datetime.fromtimestamp(created, UTC) + self._skew + MARGIN
        try:
            # One Core statement, not the ORM's unit of work: every signed request stores
            # one (three per package delivered), and this halves its CPU.
            async with self._engine.begin() as conn:
                await conn.execute(
                    _INSERT, {"key_id": key_id, "nonce": nonce, "expires_at": expires}
                )
        except sa_exc.IntegrityError:
            raise ReplayedRequestError(
                "this request was already received (its signature nonce was used before): "
                "a replayed request is refused; sign every request afresh"
            ) from None
        self._inserts += 1
        if self._inserts % _PRUNE_EVERY == 1:
            await self.prune()

    async def prune(self) -> int:
        """Forget nonces whose requests could no longer be accepted; how many were dropped."""
        now = self._clock()
        async with self._sessions() as s, s.begin():
            result = await s.execute(delete(PeerNonce).where(PeerNonce.expires_at < now))
        return int(getattr(result, "rowcount", 0) or 0)
