"""The directory document: canonical bytes, parsing, building, signing, verifying."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError

from keys import agekeys, minisign
from keys.fingerprint import fingerprint_of_public
from keys.keyset import (
    format_time,
)
from schemas import jsontext
from schemas.directory import (
    Authority,
    DirectoryDocument,
    DirectoryEntry,
    Revocation,
)
from schemas.manifest import canonical_json
from schemas.text import where
from transfer.audit.checkpoint import NoteError, Verifier
from transfer.directory.document.authority import (
    authority_fingerprint,
)
from transfer.directory.document.errors import (
    DirectoryExpiredError,
    DirectoryFormatError,
    DirectoryRollbackError,
    DirectorySignatureError,
    SerialConflictError,
    WrongAuthorityError,
)
from transfer.errors import ConflictError, InputError, PolicyError
from transfer.wording import plural

#: The context label that starts the trusted comment of every directory signature.
DIRECTORY_CONTEXT: Final = "handover-directory-v1"
#: Largest ``directory.json`` accepted (about 40,000 organisations).
MAX_DOCUMENT_BYTES: Final = 32 * 1024 * 1024
#: Largest ``directory.json.minisig`` accepted.
MAX_SIGNATURE_BYTES: Final = 4096
#: How long after ``next_update`` a node still accepts a document.
DEFAULT_GRACE: Final = timedelta(days=7)

#: Entry fields added after directories were first signed: left out of the canonical
#: bytes when None, so an older signed directory still verifies.
_OMITTED_WHEN_NONE: Final = ("audit_key", "town")
_SERIAL_RE = re.compile(r"serial=(0|[1-9][0-9]{0,15})")


# ------------------------------------------------------------------ documents


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{where(first['loc'])}: {first['msg']}"


def _load_json(data: bytes, what: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DirectoryFormatError(f"the {what} is not UTF-8 text") from None
    try:
        return jsontext.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise DirectoryFormatError(f"the {what} is not valid JSON ({exc})") from None


def document_bytes(doc: DirectoryDocument) -> bytes:
    """The exact bytes of ``directory.json``.

    An entry's ``audit_key`` and ``town`` are left out when they are None (every other
    field is always present), so a directory signed before those fields existed keeps its
    bytes.
    """
    data = doc.model_dump(mode="json")
    for entry in data["organisations"]:
        for optional in _OMITTED_WHEN_NONE:
            if entry.get(optional) is None:
                entry.pop(optional, None)
    return canonical_json(data)


def _key_id_of(signing_key: str) -> str:
    return minisign.PublicKey.from_base64(signing_key).key_id_hex


def _entry_key_problem(entry: DirectoryEntry) -> str | None:
    """What is wrong between an entry's keys and the ids and fingerprint it states."""
    try:
        if _key_id_of(entry.signing_key) != entry.key_id:
            return f"key_id {entry.key_id} is not the id of the signing key given"
        for p in entry.previous_keys:
            if _key_id_of(p.signing_key) != p.key_id:
                return f"key_id {p.key_id} is not the id of the earlier signing key given"
        agekeys.decode_recipient(entry.recipient)
        expected = fingerprint_of_public(
            entry.recipient, minisign.PublicKey.from_base64(entry.signing_key)
        )
    except InputError as exc:
        return exc.message
    if expected != entry.fingerprint:
        return (
            f"the fingerprint {entry.fingerprint} is not the fingerprint of the keys given "
            f"(they give {expected})"
        )
    if entry.audit_key is not None:
        try:
            verifier = Verifier.from_vkey(entry.audit_key.vkey)
        except NoteError as exc:
            return f"audit_key: the audit log key is not a valid verifier key: {exc}"
        if verifier.name != entry.audit_key.origin:
            return (
                f"audit_key: the audit log key is named {verifier.name!r}, not the origin "
                f"{entry.audit_key.origin!r}"
            )
    return None


def check_entry_keys(entry: DirectoryEntry, what: str = "the entry") -> DirectoryEntry:
    """``entry`` if its keys agree with the ids and the fingerprint it states; else raise
    :class:`DirectoryFormatError` (an entry whose parts disagree is never used)."""
    problem = _entry_key_problem(entry)
    if problem is not None:
        raise DirectoryFormatError(f"{what} is not valid: {entry.org_id}: {problem}")
    return entry


def check_document_keys(doc: DirectoryDocument, what: str = "the directory") -> DirectoryDocument:
    """``doc`` if every entry's keys agree with what it states (:func:`check_entry_keys`)."""
    for entry in doc.organisations:
        check_entry_keys(entry, what)
    return doc


def parse_document(data: bytes, *, canonical: bool = True) -> DirectoryDocument:
    """Parse ``directory.json``. With ``canonical``, it must be exactly in canonical form."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DirectoryFormatError(
            f"the directory is {len(data)} bytes, over the limit of {MAX_DOCUMENT_BYTES}"
        )
    raw = _load_json(data, "directory")
    if not isinstance(raw, dict) or raw.get("type") != "handover.directory":
        raise DirectoryFormatError(
            "the file is not a directory document (its type is not handover.directory)"
        )
    if raw.get("version") != 1:
        raise DirectoryFormatError(
            f"the directory is of version {str(raw.get('version'))[:20]}, this node reads 1"
        )
    try:
        doc = DirectoryDocument.model_validate(raw)
    except ValidationError as exc:
        raise DirectoryFormatError(f"the directory is not valid: {_first_error(exc)}") from None
    check_document_keys(doc)
    if canonical and document_bytes(doc) != data:
        raise DirectoryFormatError(
            "the directory is not in canonical form (it was edited after it was signed?)"
        )
    return doc


def parse_entry(data: bytes) -> DirectoryEntry:
    """Parse one entry (as ``handover directory export-entry`` writes it)."""
    if len(data) > 1024 * 1024:
        raise DirectoryFormatError("the entry file is too large to be a directory entry")
    raw = _load_json(data, "entry")
    if not isinstance(raw, dict):
        raise DirectoryFormatError("the entry file does not hold a JSON object")
    try:
        entry = DirectoryEntry.model_validate(raw)
    except ValidationError as exc:
        raise DirectoryFormatError(f"the entry is not valid: {_first_error(exc)}") from None
    return check_entry_keys(entry)


def trusted_comment(serial: int) -> str:
    return f"{DIRECTORY_CONTEXT} serial={serial}"


def new_document(authority_name: str, *, now: datetime, valid_for: timedelta) -> DirectoryDocument:
    """An empty, unsigned directory (serial 0; the first signature makes it 1)."""
    try:
        return DirectoryDocument(
            authority=Authority(name=authority_name.strip(), key_id="0" * 16),
            serial=0,
            issued_at=now,
            next_update=now + valid_for,
        )
    except ValidationError as exc:
        raise InputError(f"cannot make the directory: {_first_error(exc)}") from None


def add_organisation(
    doc: DirectoryDocument, entry: DirectoryEntry, *, replace: bool = False
) -> DirectoryDocument:
    """The document with ``entry`` added (or, with ``replace``, put in place of the old one)."""
    existing = doc.entry(entry.org_id)
    if existing is not None and not replace:
        raise ConflictError(
            f"organisation {entry.org_id} is already in the directory; pass --replace to "
            "put the new entry (new keys, endpoint...) in place of the old one"
        )
    others = tuple(e for e in doc.organisations if e.org_id != entry.org_id)
    ordered = tuple(sorted((*others, entry), key=lambda e: e.org_id))
    return doc.model_copy(update={"organisations": ordered})


def add_revocation(doc: DirectoryDocument, revocation: Revocation) -> DirectoryDocument:
    """The document with a revocation added; it may move an earlier one earlier, never later."""
    entry = doc.entry(revocation.org_id)
    if entry is None:
        raise InputError(f"organisation {revocation.org_id} is not in the directory")
    if revocation.key_id not in entry.key_ids():
        raise InputError(
            f"key {revocation.key_id} is not one of {revocation.org_id}'s signing keys in the "
            f"directory (they are {', '.join(entry.key_ids())})"
        )
    kept: list[Revocation] = []
    for r in doc.revocations:
        if r.org_id == revocation.org_id and r.key_id == revocation.key_id:
            if revocation.revoked_at > r.revoked_at:
                raise PolicyError(
                    f"key {r.key_id} of {r.org_id} is already revoked from "
                    f"{format_time(r.revoked_at)}; a revocation can be moved earlier, not later"
                )
            continue
        kept.append(r)
    kept.append(revocation)
    kept.sort(key=lambda r: (r.org_id, r.key_id))
    return doc.model_copy(update={"revocations": tuple(kept)})


def sign_document(
    doc: DirectoryDocument,
    secret: minisign.SecretKey,
    *,
    authority_name: str | None = None,
    now: datetime,
    valid_for: timedelta,
) -> tuple[DirectoryDocument, bytes, str]:
    """Issue the next serial: set the authority key, issue time and next update, and sign.

    Returns the signed document, its exact bytes and the ``.minisig`` text.
    """
    if valid_for <= timedelta(0):
        raise InputError("the directory must be valid for some time (--valid-days 1 or more)")
    name = authority_name or doc.authority.name
    try:
        issued = DirectoryDocument.model_validate(
            {
                **doc.model_dump(),
                "authority": {"name": name, "key_id": secret.key_id_hex},
                "serial": doc.serial + 1,
                "issued_at": now.astimezone(UTC),
                "next_update": now.astimezone(UTC) + valid_for,
            }
        )
    except ValidationError as exc:
        raise InputError(f"cannot sign the directory: {_first_error(exc)}") from None
    check_document_keys(issued, "the directory to sign")
    data = document_bytes(issued)
    signature = minisign.sign(
        secret,
        data,
        trusted_comment=trusted_comment(issued.serial),
        untrusted_comment=f"directory of {name[:60]}, serial {issued.serial}",
    )
    return issued, data, signature


@dataclass(frozen=True)
class VerifiedDocument:
    document: DirectoryDocument
    #: True when the node already held this very document (same serial, same bytes).
    unchanged: bool


def verify_document(
    data: bytes,
    signature: str | bytes,
    *,
    authority: minisign.PublicKey,
    now: datetime,
    held_serial: int | None = None,
    held_bytes: bytes | None = None,
    grace: timedelta = DEFAULT_GRACE,
) -> VerifiedDocument:
    """Check a directory before importing it; return it or raise, saying why.

    Refuses: a malformed signature or document (:class:`DirectoryFormatError`), a
    signature by another key than the pinned ``authority`` (:class:`WrongAuthorityError`),
    a document that does not match its signature (:class:`DirectorySignatureError`), a
    lower serial than ``held_serial`` (:class:`DirectoryRollbackError`), and a document
    past ``next_update + grace`` (:class:`DirectoryExpiredError`).
    """
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise DirectoryFormatError("the directory's signature file is too large to be one")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DirectoryFormatError(
            f"the directory is {len(data)} bytes, over the limit of {MAX_DOCUMENT_BYTES}"
        )
    try:
        parsed = minisign.Signature.from_text(signature)
    except minisign.MinisignFormatError as exc:
        raise DirectoryFormatError(f"the directory's signature is malformed: {exc}") from None
    pinned_fp = authority_fingerprint(authority)
    if not hmac.compare_digest(parsed.key_id, authority.key_id):
        raise WrongAuthorityError(
            f"the directory is signed by key {parsed.key_id_hex}, not by the directory authority "
            f"this node trusts (key {authority.key_id_hex}, fingerprint {pinned_fp}); if the "
            "authority changed its key, pin the new one with 'handover directory pin --replace'"
        )
    try:
        verified = minisign.verify(authority, data, parsed)
    except minisign.SignatureError as exc:
        raise DirectorySignatureError(
            f"the directory does not match its signature, so it was not imported: {exc}"
        ) from None
    try:
        rest = verified.require_context(DIRECTORY_CONTEXT)
    except minisign.SignatureError:
        raise DirectorySignatureError(
            "the signature is the authority's but was not made for a directory "
            f"(its trusted comment does not start with {DIRECTORY_CONTEXT})"
        ) from None
    match = _SERIAL_RE.fullmatch(rest)
    if match is None:
        raise DirectorySignatureError("the directory's signature does not name its serial")
    doc = parse_document(data)
    if doc.serial != int(match.group(1)):
        raise DirectorySignatureError(
            f"the directory says serial {doc.serial} but its signature was made for serial "
            f"{match.group(1)}"
        )
    if doc.authority.key_id != authority.key_id_hex:
        raise WrongAuthorityError(
            f"the directory names authority key {doc.authority.key_id}, not the pinned key "
            f"{authority.key_id_hex}"
        )
    unchanged = False
    if held_serial is not None:
        if doc.serial < held_serial:
            raise DirectoryRollbackError(
                f"the directory is serial {doc.serial}, older than serial {held_serial} that "
                "this node already holds; an old directory may list revoked keys, so it is "
                "refused (ask the authority for the current one)"
            )
        if doc.serial == held_serial:
            if held_bytes is None or not hmac.compare_digest(
                hashlib.sha256(held_bytes).digest(), hashlib.sha256(data).digest()
            ):
                raise SerialConflictError(
                    f"the directory is serial {doc.serial}, which this node already holds with "
                    "different contents; the authority must sign a new serial"
                )
            unchanged = True
    when = now.astimezone(UTC)
    if when > doc.next_update + grace:
        raise DirectoryExpiredError(
            f"the directory (serial {doc.serial}) expired: its next update was due "
            f"{format_time(doc.next_update)}, and {plural(grace.days, 'day')} of grace have "
            "passed; "
            "ask the authority to sign a current one"
        )
    return VerifiedDocument(document=doc, unchanged=unchanged)


def merge_revocations(*groups: Iterable[Revocation]) -> list[Revocation]:
    """Every revocation in ``groups``, one per key, keeping the earliest time of each."""
    out: dict[tuple[str, str], Revocation] = {}
    for group in groups:
        for r in group:
            key = (r.org_id, r.key_id)
            if key not in out or r.revoked_at < out[key].revoked_at:
                out[key] = r
    return sorted(out.values(), key=lambda r: (r.org_id, r.key_id))
