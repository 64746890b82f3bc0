"""Who is who: the directory of organisations, their nodes and their keys.

- :mod:`transfer.directory.document`: the signed directory document and the
  key view (pure).
- :mod:`transfer.directory.service`: :class:`Directory`, the node's directory
  in its database (pinned authority, imported document, local entries) merged
  with the node's own organisations.

See ``docs/directory.md``.
"""

from __future__ import annotations

from transfer.directory.document import (
    DirectoryExpiredError,
    DirectoryFormatError,
    DirectoryRollbackError,
    DirectorySignatureError,
    DirectoryView,
    WrongAuthorityError,
)

__all__ = [
    "DirectoryExpiredError",
    "DirectoryFormatError",
    "DirectoryRollbackError",
    "DirectorySignatureError",
    "DirectoryView",
    "WrongAuthorityError",
]
