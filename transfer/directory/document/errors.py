"""The errors of a directory import: each names the reason the node audits."""

from __future__ import annotations

from transfer.errors import ConflictError, InputError, IntegrityError, PolicyError

# ---------------------------------------------------------------------- errors


class DirectoryImportError(Exception):
    """Mixin: a refusal to import a directory, with a short ``reason`` for the audit log."""

    reason: str = "refused"


class DirectoryFormatError(InputError, DirectoryImportError):
    """The file is not a directory document (or not in canonical form)."""

    reason = "malformed"


class DirectorySignatureError(IntegrityError, DirectoryImportError):
    """The directory does not match its signature, or the signature is not a directory's."""

    reason = "bad-signature"


class WrongAuthorityError(IntegrityError, DirectoryImportError):
    """The directory is signed by another key than the authority key this node pinned."""

    reason = "wrong-authority"


class DirectoryRollbackError(PolicyError, DirectoryImportError):
    """The directory is older (a lower serial) than the one this node holds."""

    reason = "rollback"


class DirectoryExpiredError(PolicyError, DirectoryImportError):
    """The directory is past its next_update (and the grace period): it may be stale."""

    reason = "expired"


class SerialConflictError(ConflictError, DirectoryImportError):
    """Two different documents signed with the same serial."""

    reason = "serial-conflict"
