"""Errors of packaging: every one is an IntegrityError, PeerError or PolicyError.

Messages are one line, safe to show (no record content), and say what a DSL
can do: refuse the package, ask the sender to send it again, or add the
sender's key.
"""

from __future__ import annotations

from transfer.errors import IntegrityError, PeerError, PolicyError

__all__ = [
    "EntryMismatchError",
    "NotAddressedToUsError",
    "PackageDecryptError",
    "PackageError",
    "PackageFormatError",
    "PackageLimitError",
    "PackageTamperedError",
    "UnknownSenderError",
    "UnsafeTarError",
]

#: The sentence every tampering error starts with.
ALTERED = "the package was altered after it was signed"


class PackageError(IntegrityError):
    """Root of the integrity failures of a package."""


class PackageDecryptError(PackageError):
    """The age layer failed: not for our keys, corrupt, truncated or altered ciphertext."""


class PackageTamperedError(PackageError):
    """The signed manifest and the bytes disagree: the package was altered after signing."""


class PackageFormatError(PeerError):
    """The sender's package is not a well-formed ``handover-package/1``."""


class UnsafeTarError(PackageFormatError):
    """The tar stream holds something a safe reader refuses (links, ``..``, devices...)."""


class UnknownSenderError(PeerError):
    """The package is signed by a key we do not know for its claimed sender."""


class NotAddressedToUsError(PolicyError):
    """The signed manifest names another recipient organisation or key."""


class PackageLimitError(PolicyError):
    """The package is bigger than this node accepts (manifest, entries or total size)."""


class EntryMismatchError(IntegrityError):
    """While building: a source's bytes do not match its declared size or SHA-256."""
