"""The tamper-evident audit log: an RFC 6962 Merkle tree with signed C2SP checkpoints.

``merkle`` and ``checkpoint`` are pure; ``log`` keeps the tree in the database;
``export`` writes and checks an auditor's bundle. See ``docs/audit-log.md``.
"""
