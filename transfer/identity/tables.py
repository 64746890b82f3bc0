"""The node's identity row (created by migration ``node_0001``; never by ``create_all``).

One row: the id ``handover init`` gave this node, and a value sealed under the
key-encryption key when it did. The same id is in the data directory's
``node-identity`` file, so a node opens only its own database, and only with its
own KEK (:mod:`transfer.identity`).
"""

from __future__ import annotations

import sqlalchemy as sa

from transfer.store.db import Base
from transfer.store.types import UTCDateTime

node_identity = sa.Table(
    "node_identity",
    Base.metadata,
    #: Always 1: a database belongs to one node.
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("node_id", sa.String(36), nullable=False),
    #: AES-256-GCM of a fixed text under the KEK, bound to the node id (``keys.aead``).
    sa.Column("kek_check", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

IDENTITY_TABLES = frozenset({"node_identity"})
