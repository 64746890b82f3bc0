"""The node's directory: the pinned authority, the imported document, local entries.

:class:`Directory` answers "who is this organisation, where is its node, what
are its keys" and "whose key is this, and does it stand for a signature made
then". Its view merges, in this order of precedence:

1. the node's own organisations, from its key files (endpoint: ``node.base_url``);
2. the entries of the directory document signed by the pinned authority;
3. entries added by hand after their fingerprint was confirmed.

Revocations from the document and from the node's own key sets always apply.
Every import, pin and local addition is audited, refused ones too.

The code is in parts, one a module, joined here by :class:`Directory`:
:mod:`~transfer.directory.service.core` (the state, the merged view, the contract),
:mod:`~transfer.directory.service.entries` (own and local entries),
:mod:`~transfer.directory.service.authority` (the pinned authority, the import) and
:mod:`~transfer.directory.service.records` (the answers and errors).
"""

from __future__ import annotations

from transfer.directory.service.authority import DirectoryAuthority
from transfer.directory.service.entries import DirectoryEntries
from transfer.directory.service.records import (
    DirectoryImported,
    FingerprintMismatchError,
    HeldDocument,
    ListedEntry,
    NoAuthorityError,
    PinnedAuthority,
    UnknownOrganisationError,
    UnknownSignerError,
)

__all__ = [
    "Directory",
    "DirectoryImported",
    "FingerprintMismatchError",
    "HeldDocument",
    "ListedEntry",
    "NoAuthorityError",
    "PinnedAuthority",
    "UnknownOrganisationError",
    "UnknownSignerError",
]


class Directory(DirectoryEntries, DirectoryAuthority):
    """The directory view of one node. Uses the store's engine and audit sink."""
