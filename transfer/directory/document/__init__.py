"""The directory document: its canonical bytes, its signature, its checks, and the key view.

Pure: bytes and models in, models out or an error raised. No files, no
network, no database (those are in :mod:`transfer.directory.service` and the
``handover directory`` commands).

- :func:`document_bytes` / :func:`parse_document`: ``directory.json`` is the
  canonical JSON of a :class:`~schemas.directory.DirectoryDocument` (sorted
  keys, compact, UTF-8, no final newline), so that what is signed is
  unambiguous and ``minisign -V`` can check the file as it is.
- :func:`sign_document` / :func:`verify_document`: minisign (prehashed ``ED``)
  with the trusted comment ``handover-directory-v1 serial=<n>``.
- :func:`authority_secret_key_text` / :func:`parse_authority_secret_key`: the
  authority's key in minisign's own secret key format, passphrase-free (what
  ``minisign -G -W`` writes), so ``minisign -S`` can also use it.
- :class:`DirectoryView`: entries and revocations, answering "which key is
  this, and does it stand for a signature dated then?".

The code is in parts, one a module, re-exported here:
:mod:`~transfer.directory.document.errors`,
:mod:`~transfer.directory.document.authority` (the authority's key),
:mod:`~transfer.directory.document.documents` (the document itself),
:mod:`~transfer.directory.document.own_keys` (a node's own entries) and
:mod:`~transfer.directory.document.view` (the key view).
"""

from __future__ import annotations

from transfer.directory.document.authority import (
    authority_fingerprint,
    authority_secret_key_text,
    parse_authority_secret_key,
)
from transfer.directory.document.documents import (
    DEFAULT_GRACE,
    DIRECTORY_CONTEXT,
    MAX_DOCUMENT_BYTES,
    MAX_SIGNATURE_BYTES,
    VerifiedDocument,
    add_organisation,
    add_revocation,
    document_bytes,
    merge_revocations,
    new_document,
    parse_document,
    parse_entry,
    sign_document,
    trusted_comment,
    verify_document,
)
from transfer.directory.document.errors import (
    DirectoryExpiredError,
    DirectoryFormatError,
    DirectoryImportError,
    DirectoryRollbackError,
    DirectorySignatureError,
    SerialConflictError,
    WrongAuthorityError,
)
from transfer.directory.document.own_keys import (
    entry_from_keyset,
    revocations_from_keyset,
)
from transfer.directory.document.view import (
    DirectoryView,
)

__all__ = [
    "DEFAULT_GRACE",
    "DIRECTORY_CONTEXT",
    "MAX_DOCUMENT_BYTES",
    "MAX_SIGNATURE_BYTES",
    "DirectoryExpiredError",
    "DirectoryFormatError",
    "DirectoryImportError",
    "DirectoryRollbackError",
    "DirectorySignatureError",
    "DirectoryView",
    "SerialConflictError",
    "VerifiedDocument",
    "WrongAuthorityError",
    "add_organisation",
    "add_revocation",
    "authority_fingerprint",
    "authority_secret_key_text",
    "document_bytes",
    "entry_from_keyset",
    "merge_revocations",
    "new_document",
    "parse_authority_secret_key",
    "parse_document",
    "parse_entry",
    "revocations_from_keyset",
    "sign_document",
    "trusted_comment",
    "verify_document",
]
