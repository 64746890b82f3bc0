"""Small read-only lookups made on a node's database without opening the whole store:
for commands that work on other parts of the node (the audit log, ``init``) and need a
fact from it. Each opens one engine for the call and disposes of it.
"""

from __future__ import annotations

import sqlalchemy as sa

from transfer.errors import InputError, NotFoundError, TransportError
from transfer.identifiers import UPN_LENGTH, validate_upn
from transfer.store.db import database_location, make_engine
from transfer.store.tables import Pupil


async def pupil_id_by_reference(url: str, ref: str, org: str | None) -> str:
    """The pupil id for a pupil named by a person: a UPN (13 characters, checked by the
    DfE's rules) is looked up among the node's pupils (of ``org`` when given); anything
    else is taken as the id, as it is."""
    text = ref.strip()
    if len(text) != UPN_LENGTH:
        return text
    upn = validate_upn(text)
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            query = sa.select(Pupil.id, Pupil.org_id).where(Pupil.upn == upn)
            if org:
                query = query.where(Pupil.org_id == org)
            rows = (await conn.execute(query)).all()
    finally:
        await engine.dispose()
    if not rows:
        where = f" of {org}" if org else ""
        raise NotFoundError(f"no pupil{where} on this node has the UPN {upn}")
    if len(rows) > 1:
        orgs = ", ".join(sorted(r.org_id for r in rows))
        raise InputError(
            f"the UPN {upn} is on the roll of several organisations here ({orgs}): add --org"
        )
    return str(rows[0].id)


async def table_names(url: str) -> list[str]:
    """The tables the database holds now (none: a blank database); TransportError if the
    database cannot be reached, saying where and why."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    except (OSError, sa.exc.DBAPIError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TransportError(
            f"cannot reach the database {database_location(url)}: {reason}"
        ) from None
    finally:
        await engine.dispose()


async def drop_all_tables(url: str) -> None:
    """Empty a database of every table it holds (``init`` undoing what it made in a
    PostgreSQL database that was blank before it ran)."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:

            def drop(c: sa.Connection) -> None:
                found = sa.MetaData()
                found.reflect(c)
                found.drop_all(c)

            await conn.run_sync(drop)
    finally:
        await engine.dispose()
