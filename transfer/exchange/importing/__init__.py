"""Importing an accepted leaver's file into the receiving organisation's store.

Three steps, driven by :class:`transfer.exchange.inbox.Inbox`:

1. :func:`parse_records` reads the JSON records of a verified package
   (``records/pupil.json`` and ``records/<kind>/<id>.json``) into models.
2. :meth:`Importer.plan` decides which pupil the file goes to: the pupil
   with the same UPN *and* date of birth and name, or a new pupil when no
   pupil has that UPN. A pupil with the UPN but another date of birth or name
   is a mismatch: refused with a :class:`PupilMismatchError` that shows both,
   unless the DSL names the pupil (``pupil_id``) or asks for a new one
   (``create_new``). The plan holds the pupil's data key, so documents can be
   encrypted into the store (:meth:`Importer.write_document`) while the package
   streams, never touching disk in plaintext.
3. :meth:`Importer.commit` writes the pupil (if new) and every record in one
   transaction, each with its :class:`Provenance` (which organisation, which
   package, when received, its id there), text sealed under the pupil's key
   exactly as the store seals its own records.

Ids from the sending organisation (its pupil and staff ids) are not ids here:
the pupil is linked to ours, concerns keep only our pupil, an action's
assignee is dropped, and ``recorded_by``/``decided_by``/``created_by`` keep the
sender's staff id, which the provenance marks as the sender's.

Parts: :mod:`.records` (step 1), :mod:`.importer` (steps 2 and 3), :mod:`.plan` (what
an import is to do and did), :mod:`.writer` (step 3's inserts).
"""

from transfer.exchange.importing.importer import Importer, PupilMismatchError
from transfer.exchange.importing.plan import ImportPlan, RecordsImported
from transfer.exchange.importing.records import (
    PackageRecords,
    RecordsError,
    RecordTooLargeError,
    is_record_path,
    parse_records,
    records_json,
)

__all__ = [
    "ImportPlan",
    "Importer",
    "PackageRecords",
    "PupilMismatchError",
    "RecordTooLargeError",
    "RecordsError",
    "RecordsImported",
    "is_record_path",
    "parse_records",
    "records_json",
]
