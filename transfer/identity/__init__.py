"""A node's identity: the data directory, its database and its KEK belong together.

``handover init`` gives a node an id and writes it twice: in the database's
``node_identity`` row, beside a fixed text sealed under the key-encryption key
(AES-256-GCM, associated data ``handover/kek-check/v1|<node id>``), and in the
data directory's ``node-identity`` file. Every command and ``serve`` then opens
the node's database through :func:`prepare_database`, which refuses, before
anything is read or written:

- a database that is missing, empty (0 bytes) or holds no tables, when the data
  directory says the node was set up (the file, or key files and an audit
  checkpoint left by a node set up before identities existed): without this,
  SQLite would quietly start a blank new node over a lost database;
- a database of another node (its row names another id);
- a KEK that does not open the check value (:class:`WrongKekError`): without
  this, commands that read only plaintext columns (pupils' names, alert
  subjects) ran with any random KEK.

Nodes set up before this existed get their identity the first time they are
opened, once the KEK has opened a value sealed before (an organisation key, or
the audit log's key); a database with nothing sealed in it (a node not yet set
up) is left alone until ``init`` establishes it (:func:`establish`).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keys import aead
from transfer.errors import ConfigError, DamagedStateError
from transfer.identity.tables import node_identity
from transfer.store.db import check_integrity, database_location, migrate, sqlite_path

#: The identity file in the data directory.
MARKER = "node-identity"
_FORMAT = "handover-node-identity/1"
_CHECK_TEXT = b"handover: this is the node's key-encryption key"
_RESTORE = "(docs/operations.md, 'Backup and restore')"


class WrongKekError(ConfigError):
    """The key-encryption key given is not the one the node was set up with."""

    slug = "wrong-kek"
    title = "The key-encryption key is not this node's"


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    created_at: datetime


def _check_aad(node_id: str) -> bytes:
    return f"handover/kek-check/v1|{node_id}".encode()


def seal_check(kek: bytes, node_id: str) -> bytes:
    """The check value for ``node_id`` under ``kek``."""
    return aead.seal(kek, _CHECK_TEXT, _check_aad(node_id))


def kek_opens(kek: bytes, node_id: str, sealed: bytes) -> bool:
    """Whether ``kek`` opens the check value (AES-GCM's tag check decides, in constant time)."""
    try:
        return aead.unseal(kek, sealed, _check_aad(node_id)) == _CHECK_TEXT
    except aead.UnsealError:
        return False


# ------------------------------------------------------------------ the file


def read_marker(data_dir: Path) -> NodeIdentity | None:
    """The identity recorded in the data directory, or None if it has none."""
    path = data_dir / MARKER
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DamagedStateError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
        if doc.get("format") != _FORMAT:
            raise ValueError("format")
        node_id = str(uuid.UUID(str(doc["node_id"])))
        created = datetime.fromisoformat(str(doc["created_at"]))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise DamagedStateError(
            f"the node's identity file {path} is damaged: restore it from your backup of the "
            f"data directory {_RESTORE}"
        ) from None
    return NodeIdentity(node_id, created)


def write_marker(data_dir: Path, identity: NodeIdentity) -> None:
    """Write the identity file atomically (0600)."""
    doc = {
        "format": _FORMAT,
        "node_id": identity.node_id,
        "created_at": identity.created_at.isoformat(),
        "note": "written by 'handover init'; it ties this directory to its database",
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".node-identity-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, data_dir / MARKER)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def was_set_up(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a node that was set up (so its database must exist).

    The identity file says so; for a node set up before identities existed, its
    organisations' key files or its audit log's checkpoint file do.
    """
    if (data_dir / MARKER).exists() or (data_dir / "audit" / "latest-checkpoint.note").exists():
        return True
    keys = data_dir / "keys"
    return keys.is_dir() and any(p.is_file() for p in keys.iterdir())


# -------------------------------------------------------------- the database


async def require_database(engine: AsyncEngine, data_dir: Path, url: str) -> None:
    """Refuse a missing, empty or table-less database for a node that was set up.

    Runs before any migration, so a lost database is never replaced by a blank one.
    """
    if not was_set_up(data_dir):
        return
    where = database_location(url)
    path = sqlite_path(url)
    advice = (
        f"{data_dir} was set up as a node, so its data is lost or elsewhere: restore the "
        f"database from your last backup {_RESTORE}, or point database.url at it"
    )
    if path is not None:
        if not path.exists():
            raise DamagedStateError(f"the database {where} is missing; {advice}")
        wal = path.with_name(path.name + "-wal")
        if path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size > 0):
            raise DamagedStateError(f"the database {where} is empty (0 bytes); {advice}")
    async with engine.connect() as conn:
        has_schema = await conn.run_sync(lambda c: sa.inspect(c).has_table("alembic_version"))
    if not has_schema:
        raise DamagedStateError(f"the database {where} holds no Handover data; {advice}")


async def _table_exists(conn: AsyncConnection, name: str) -> bool:
    return bool(await conn.run_sync(lambda c: sa.inspect(c).has_table(name)))


async def _opens_earlier_seal(conn: AsyncConnection, kek: bytes) -> bool | None:
    """For a database without an identity row: does ``kek`` open something sealed before?

    True or False from the first organisation key (or else the audit log's key); None
    when nothing sealed under a KEK is stored yet (a node not yet set up).
    """
    from transfer.audit.checkpoints import key_aad
    from transfer.store.keyring import org_key_aad

    if await _table_exists(conn, "organisations"):
        row = (
            await conn.execute(
                sa.text("SELECT id, sealed_key FROM organisations ORDER BY id LIMIT 1")
            )
        ).first()
        if row is not None:
            try:
                aead.unseal(kek, bytes(row.sealed_key), org_key_aad(row.id))
            except aead.UnsealError:
                return False
            return True
    if await _table_exists(conn, "audit_key"):
        row = (await conn.execute(sa.text("SELECT origin, sealed_seed FROM audit_key"))).first()
        if row is not None:
            try:
                aead.unseal(kek, bytes(row.sealed_seed), key_aad(row.origin))
            except aead.UnsealError:
                return False
            return True
    return None


def _wrong_kek(kek_source: str) -> WrongKekError:
    return WrongKekError(
        f"the key-encryption key from {kek_source} is not this node's key: it does not open "
        "the check value sealed when the node was set up. Give the node the KEK it was set "
        "up with; nothing was read or changed"
    )


async def _row(conn: AsyncConnection) -> sa.Row[tuple[int, str, bytes, datetime]] | None:
    if not await _table_exists(conn, "node_identity"):
        return None
    return (await conn.execute(sa.select(node_identity).where(node_identity.c.id == 1))).first()


async def _insert(engine: AsyncEngine, identity: NodeIdentity, kek: bytes) -> NodeIdentity:
    """Insert the identity row, or return the one another process inserted first."""
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(node_identity).values(
                    id=1,
                    node_id=identity.node_id,
                    kek_check=seal_check(kek, identity.node_id),
                    created_at=identity.created_at,
                )
            )
        return identity
    except sa_exc.IntegrityError:
        async with engine.connect() as conn:
            row = await _row(conn)
        if row is None:  # pragma: no cover - the row that clashed cannot vanish
            raise
        return NodeIdentity(row.node_id, row.created_at)


async def check_identity(
    engine: AsyncEngine,
    kek: bytes,
    *,
    data_dir: Path,
    url: str,
    kek_source: str,
    adopt: bool = True,
) -> NodeIdentity | None:
    """Check that the database is this data directory's and the KEK is the node's.

    ``adopt``: give a node set up before identities existed its identity (row and
    file), once the KEK has opened a value sealed before; off for read-only
    commands. Returns the identity, or None for a node not yet set up.
    """
    marker = read_marker(data_dir)
    async with engine.connect() as conn:
        row = await _row(conn)
        earlier = None if row is not None else await _opens_earlier_seal(conn, kek)
    where = database_location(url)
    if row is not None:
        if marker is not None and row.node_id != marker.node_id:
            raise DamagedStateError(
                f"the database {where} belongs to another node (node {row.node_id}), not to "
                f"the data directory {data_dir} (node {marker.node_id}): point database.url "
                f"at this node's database, or restore it from your backup {_RESTORE}"
            )
        if not kek_opens(kek, row.node_id, bytes(row.kek_check)):
            raise _wrong_kek(kek_source)
        identity = NodeIdentity(row.node_id, row.created_at)
        if marker is None and adopt:
            write_marker(data_dir, identity)
        return identity
    if earlier is False:
        raise _wrong_kek(kek_source)
    if earlier is None:
        if marker is not None:
            raise DamagedStateError(
                f"the database {where} holds none of this node's data (the data directory "
                f"{data_dir} was set up as node {marker.node_id}): restore the database from "
                f"your last backup {_RESTORE}, or point database.url at it"
            )
        return None
    identity = marker or NodeIdentity(str(uuid.uuid4()), datetime.now(UTC))
    if not adopt:
        return identity
    identity = await _insert(engine, identity, kek)
    if marker is None:
        write_marker(data_dir, identity)
    return identity


async def establish(engine: AsyncEngine, kek: bytes, data_dir: Path) -> NodeIdentity:
    """``handover init``: give the node its identity (row and file), or keep the one it has."""
    marker = read_marker(data_dir)
    async with engine.connect() as conn:
        row = await _row(conn)
    if row is not None:
        identity = NodeIdentity(row.node_id, row.created_at)
    else:
        identity = await _insert(
            engine, marker or NodeIdentity(str(uuid.uuid4()), datetime.now(UTC)), kek
        )
    if marker != identity:
        write_marker(data_dir, identity)
    return identity


async def prepare_database(
    engine: AsyncEngine,
    kek: bytes,
    *,
    data_dir: Path,
    url: str,
    kek_source: str,
    migrate_schema: bool = True,
    full_check: bool = False,
    adopt: bool = True,
) -> NodeIdentity | None:
    """What every opener of a node's database runs first, in this order.

    The database must exist and hold tables if the node was set up
    (:func:`require_database`); ``full_check`` reads the whole file for damage
    (``serve``); then the schema is migrated (``migrate_schema``) and the identity
    and KEK are checked (:func:`check_identity`).
    """
    await require_database(engine, data_dir, url)
    if full_check:
        await check_integrity(engine, url)
    if migrate_schema:
        await migrate(engine)
    return await check_identity(
        engine, kek, data_dir=data_dir, url=url, kek_source=kek_source, adopt=adopt
    )
