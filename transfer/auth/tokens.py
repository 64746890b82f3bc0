"""Scoped API tokens: issuing, listing and revoking them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import select

from transfer.auth import codes
from transfer.auth.base import AccountsBase, new_id
from transfer.auth.errors import TotpEnrolmentRequired
from transfer.auth.records import IssuedToken, Principal, TokenInfo
from transfer.auth.tables import ApiTokenRow
from transfer.errors import InputError, NotFoundError
from transfer.store.permissions import Permission, PermissionDenied


class Tokens(AccountsBase):
    """Scoped API tokens of the signed-in person."""

    # -------------------------------------------------------------- API tokens

    async def create_token(
        self,
        principal: Principal,
        *,
        name: str,
        scopes: Iterable[str],
        expires_in_days: int | None = None,
    ) -> IssuedToken:
        """A new API token for the signed-in person, limited to ``scopes``.

        Each scope is a :class:`Permission` the person holds now; the token never
        holds more than its owner's roles grant at the time of use.
        """
        self._needs_session(principal)
        if principal.kind != "session":
            raise TotpEnrolmentRequired("set up two-factor authentication first")
        actor = principal.actor
        name = name.strip()
        if not name or len(name) > 100:
            raise InputError("a token's name must be 1 to 100 characters")
        wanted: list[str] = []
        for value in scopes:
            try:
                perm = Permission(value)
            except ValueError:
                raise InputError(f"unknown scope {value[:60]!r}") from None
            if not actor.has(perm):
                await self._audit(
                    "token.created",
                    actor,
                    actor.org_id,
                    {},
                    "refused",
                    scope=perm.value,
                )
                raise PermissionDenied(f"you cannot give a token a permission you lack ({perm})")
            if perm.value not in wanted:
                wanted.append(perm.value)
        if not wanted:
            raise InputError("a token needs at least one scope")
        if expires_in_days is not None and not 1 <= expires_in_days <= 366:
            raise InputError("a token's lifetime must be 1 to 366 days")
        now = self.now()
        token = codes.new_token(codes.API_TOKEN_PREFIX)
        row = ApiTokenRow(
            id=new_id(),
            token_hash=codes.token_hash(token),
            staff_id=actor.staff_id,
            org_id=actor.org_id,
            name=name,
            scopes=wanted,
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        )
        async with self._sessions() as s, s.begin():
            s.add(row)
        await self._audit(
            "token.created",
            actor,
            actor.org_id,
            {"token": row.id},
            scopes=",".join(wanted),
        )
        return IssuedToken(
            id=row.id,
            name=name,
            token=token,
            scopes=tuple(wanted),
            created_at=now,
            expires_at=row.expires_at,
        )

    @staticmethod
    def _token_info(r: ApiTokenRow) -> TokenInfo:
        return TokenInfo(
            id=r.id,
            staff_id=r.staff_id,
            name=r.name,
            scopes=tuple(r.scopes),
            created_at=r.created_at,
            expires_at=r.expires_at,
            last_used_at=r.last_used_at,
            revoked_at=r.revoked_at,
        )

    async def list_tokens(self, principal: Principal) -> list[TokenInfo]:
        """The signed-in person's API tokens (never the tokens themselves)."""
        self._needs_session(principal)
        async with self._sessions() as s:
            rows = await s.scalars(
                select(ApiTokenRow)
                .where(ApiTokenRow.staff_id == principal.actor.staff_id)
                .order_by(ApiTokenRow.created_at)
            )
            return [self._token_info(r) for r in rows]

    async def revoke_token(self, principal: Principal, token_id: str) -> TokenInfo:
        """Revoke one's own token (or, with ``staff.manage``, anyone's in the organisation)."""
        self._needs_session(principal)
        actor = principal.actor
        async with self._sessions() as s, s.begin():
            row = await s.get(ApiTokenRow, token_id)
            if row is None or row.org_id != actor.org_id:
                raise NotFoundError("no such API token")
            if row.staff_id != actor.staff_id:
                await self._require(actor, Permission.MANAGE_STAFF, "token.revoked", row.staff_id)
            if row.revoked_at is None:
                row.revoked_at = self.now()
            info = self._token_info(row)
        await self._audit("token.revoked", actor, actor.org_id, {"token": token_id})
        return info


__all__ = ["Tokens"]
