"""The audit log's tables (created by migration ``audit_0001``; never by ``create_all``)."""

from __future__ import annotations

import sqlalchemy as sa

from transfer.store.db import Base

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)

#: One row (id = 1): the tree size, its compact range and the last leaf hash.
#: Appenders lock it (``SELECT ... FOR UPDATE``), which gives one total order.
audit_head = sa.Table(
    "audit_head",
    Base.metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("compact", sa.LargeBinary(), nullable=False),
    sa.Column("last_leaf", sa.LargeBinary(), nullable=False),
)

audit_entries = sa.Table(
    "audit_entries",
    Base.metadata,
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
    # Copies of fields inside ``body``, for searching; verify() checks they agree.
    sa.Column("at", _TS, nullable=False, index=True),
    sa.Column("action", sa.String(100), nullable=False, index=True),
    sa.Column("actor", sa.String(100), nullable=True, index=True),
    sa.Column("org", sa.String(100), nullable=True, index=True),
    sa.Column("pupil", sa.String(100), nullable=True, index=True),
    sa.Column("person", sa.String(100), nullable=True, index=True),
)

#: Hashes of complete subtrees of height >= 1: (level, index) covers leaves
#: [index * 2**level, (index + 1) * 2**level). Leaves (level 0) are in audit_entries.
audit_nodes = sa.Table(
    "audit_nodes",
    Base.metadata,
    sa.Column("level", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(), nullable=False),
)

#: The log's Ed25519 note key (id = 1), its seed sealed under the KEK.
audit_key = sa.Table(
    "audit_key",
    Base.metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("origin", sa.String(200), nullable=False),
    sa.Column("public_key", sa.LargeBinary(), nullable=False),
    sa.Column("sealed_seed", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    Base.metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("size", sa.BigInteger(), nullable=False, index=True),
    sa.Column("root", sa.LargeBinary(), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

#: Checkpoints other logs' owners sent us (and copies of ours handed back).
audit_witnessed = sa.Table(
    "audit_witnessed",
    Base.metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("from_org", sa.String(100), nullable=False, index=True),
    sa.Column("origin", sa.String(200), nullable=False, index=True),
    sa.Column("vkey", sa.String(300), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("root", sa.LargeBinary(), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Column("prev_size", sa.BigInteger(), nullable=True),
    sa.Column("proof", sa.Text(), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("received_at", _TS, nullable=False),
)

#: Audit entries promised by a committed change and not yet in the log (migration
#: ``audit_0002``). A service writes the row in the same transaction as the change it
#: records; the append that puts the entry in the log deletes the row in its own
#: transaction, so each promised entry is appended exactly once, and a process killed in
#: between leaves the row for :meth:`AuditLog.replay_intents` (``docs/adr/0011``).
audit_intents = sa.Table(
    "audit_intents",
    Base.metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("event", sa.Text(), nullable=False),
    sa.Column("created_at", _TS, nullable=False, index=True),
)

AUDIT_TABLES = frozenset(
    t.name
    for t in (
        audit_head,
        audit_entries,
        audit_nodes,
        audit_key,
        audit_checkpoints,
        audit_witnessed,
        audit_intents,
    )
)
