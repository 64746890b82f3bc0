"""From the DSL's selection to a sealed referral package, streamed.

Data minimisation: only what the DSL chose goes. :func:`referral_entries`
reads the pupil's chronology, keeps exactly the selected concerns, triage
decisions, actions, contacts and documents, applies the redaction marks to
copies of their text (the store's records are untouched), and returns the
entries of the package:

- ``records/referral.json``: the form, as the DSL filled it in;
- ``records/chronology.json``: the selected chronology lines (redacted copies);
- ``records/<concerns|triage|actions|contacts|documents>/<id>.json``: each
  selected record (redacted copy);
- ``documents/<sha256>``: each selected document, streamed from the store's
  encrypted file into the package's age stream (never plaintext on disk).

No pupil record and nothing unselected is read into the package. The package
is built by :func:`seal_referral` in a worker thread (documents are fed from
the event loop), signed by the school and encrypted either to the agency's
``age1…`` recipient or, for an offline bundle, to a passphrase (age scrypt).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, BinaryIO, Final
from uuid import UUID

from pydantic import TypeAdapter

from keys import minisign
from schemas.manifest import Manifest, PackageKind, Recipient, Sender, Subject, canonical_json
from schemas.records import SCHEMA_VERSION, ChronologyEntry, DocumentRef
from schemas.referrals import (
    FORM_SCHEMA_VERSION,
    LadoReferral,
    MashReferral,
    NewRedaction,
    PoliceReferral,
    SelectedItem,
)
from transfer.age import Recipient as AgeRecipient
from transfer.errors import NotFoundError
from transfer.package.build import BuiltPackage, write_package
from transfer.package.from_store import _document_source, _LoopBridge, people_entry
from transfer.package.layout import EntrySource
from transfer.referrals.redaction import RedactionError, RedactionPlan, redact_record

if TYPE_CHECKING:
    from transfer.store.permissions import Actor
    from transfer.store.service import Store

__all__ = [
    "FORM_PATH",
    "RECORD_TYPES",
    "ReferralContent",
    "referral_entries",
    "seal_referral",
]

Form = MashReferral | LadoReferral | PoliceReferral

FORM_PATH: Final = "records/referral.json"
CHRONOLOGY_PATH: Final = "records/chronology.json"

_DIRS: Final[Mapping[str, str]] = {
    "concern": "concerns",
    "triage": "triage",
    "action": "actions",
    "contact": "contacts",
    "document": "documents",
}

#: The record types a referral package holds, with their schema versions.
RECORD_TYPES: Final[Mapping[str, int]] = {
    "referral": FORM_SCHEMA_VERSION,
    **{name: SCHEMA_VERSION for name in ("chronology-entry", "person", *_DIRS)},
}

_CHRONOLOGY = TypeAdapter(list[ChronologyEntry])


@dataclass(frozen=True)
class ReferralContent:
    """What goes into a referral package, ready to seal."""

    subject: Subject
    #: The selected chronology lines, as sealed (redacted copies), in time order.
    chronology: tuple[ChronologyEntry, ...]
    entries: tuple[EntrySource, ...]


def subject_of(form: Form) -> Subject:
    """Who the package is about: the child (MASH, police) or the adult (LADO)."""
    if isinstance(form, LadoReferral):
        a = form.adult
        return Subject(upn=None, surname=a.surname, forename=a.forename, dob=a.dob)
    c = form.child
    return Subject(upn=c.upn, surname=c.surname, forename=c.forename, dob=c.dob)


async def referral_entries(
    store: Store,
    actor: Actor,
    pupil_id: str,
    *,
    form: Form,
    selection: Sequence[SelectedItem],
    redactions: Sequence[NewRedaction],
    loop: asyncio.AbstractEventLoop | None = None,
) -> ReferralContent:
    """The package entries for a referral: the form and the selected records, redacted.

    Refuses a selected item that is not in the pupil's chronology (or that the
    actor cannot read), a span mark outside its text or on an unselected
    record, and a string mark found in none of the selected text.
    Documents are read when the package is written, on ``loop`` (default: the
    running loop): write from another thread, as :func:`seal_referral` does.
    """
    bridge = _LoopBridge(loop or asyncio.get_running_loop())
    wanted = {(item.kind, item.id) for item in selection}
    chosen: list[ChronologyEntry] = []
    if wanted:
        for entry in await store.chronology(actor, pupil_id):
            if (entry.kind, entry.id) in wanted:
                chosen.append(entry)
        found = {(e.kind, e.id) for e in chosen}
        for item in selection:
            if (item.kind, item.id) not in found:
                raise NotFoundError(
                    f"the selected {item.kind} {item.id[:64]} is not in this pupil's chronology "
                    "(or you cannot read it); choose again from the chronology"
                )
    plan = RedactionPlan(list(redactions))
    plan.check_marks(wanted)
    redacted: list[ChronologyEntry] = []
    records: list[EntrySource] = []
    documents: dict[str, EntrySource] = {}
    for entry in chosen:
        copy = redact_record(entry.record, plan)
        line = entry.model_copy(update={"record": copy})
        redacted.append(line)
        records.append(EntrySource.from_json(f"records/{_DIRS[entry.kind]}/{entry.id}.json", copy))
        original = entry.record
        if isinstance(original, DocumentRef) and original.sha256 not in documents:
            documents[original.sha256] = _document_source(store, actor, original, bridge)
    missing = plan.unmatched_strings()
    if missing:
        numbers = [str(i + 1) for i, m in enumerate(redactions) if m.text in missing]
        raise RedactionError(
            f"redaction {', '.join(numbers)} marks text found in none of the selected records; "
            "check the spelling (it must match exactly, capitals included)"
        )
    head = [
        EntrySource.from_bytes(FORM_PATH, canonical_json(form.model_dump(mode="json"))),
        EntrySource.from_bytes(
            CHRONOLOGY_PATH, canonical_json(_CHRONOLOGY.dump_python(redacted, mode="json"))
        ),
        await people_entry(store, actor, chosen),
    ]
    return ReferralContent(
        subject=subject_of(form),
        chronology=tuple(redacted),
        entries=(*head, *records, *documents.values()),
    )


async def seal_referral(
    out: BinaryIO,
    content: ReferralContent,
    *,
    kind: PackageKind,
    sender: Sender,
    recipient: Recipient,
    signer: minisign.SecretKey,
    recipients: Sequence[AgeRecipient],
    package_id: UUID,
    created_at: datetime,
) -> BuiltPackage:
    """Write the signed, encrypted referral package to ``out`` (in a worker thread).

    ``recipients`` is the agency's X25519 recipient, or one age scrypt
    (passphrase) recipient. On error ``out`` holds an unfinished age stream:
    discard it.
    """
    manifest = Manifest(
        package_id=package_id,
        kind=kind,
        sender=sender,
        recipient=recipient,
        subject=content.subject,
        created_at=created_at,
        entries=tuple(e.entry for e in content.entries),
        records_schema=dict(RECORD_TYPES),
    )
    return await asyncio.to_thread(
        partial(write_package, signer=signer, recipients=list(recipients)),
        out,
        manifest,
        list(content.entries),
    )
