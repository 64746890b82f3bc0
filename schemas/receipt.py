"""A signed receipt (``handover.receipt`` version 1): what a receiver says it did with a package.

The receiving organisation issues one receipt per step: ``delivered`` (the
node holds exactly these ciphertext bytes), ``viewed`` (a DSL opened it),
``accepted`` (a DSL took it on; names the manifest accepted) or ``rejected``
(with a reason). The body is signed over its canonical JSON bytes
(:meth:`ReceiptBody.canonical_bytes`, the same form as the manifest: keys
sorted, compact, UTF-8); :mod:`transfer.receipts` signs and verifies it. See
``docs/receipts.md``.

Pure: no I/O.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas import jsontext
from schemas.manifest import PackageKind, canonical_json, format_rfc3339
from schemas.text import Line, Prose, where

__all__ = [
    "RECEIPT_TYPE",
    "ReceiptActor",
    "ReceiptBody",
    "ReceiptDecodeError",
    "ReceiptKind",
    "json_schema",
    "json_schema_text",
]

#: The value of ``type`` in every receipt: binds the bytes to their meaning.
RECEIPT_TYPE: Final = "handover.receipt"
#: Longest ``reason`` of a rejection, in characters.
MAX_REASON: Final = 2000
#: Longest ``reference`` (the receiver's own case number), in characters.
MAX_REFERENCE: Final = 100
#: Longest ``checkpoint`` (a signed audit checkpoint note), in characters.
MAX_CHECKPOINT: Final = 8192

ReceiptKind = Literal["delivered", "viewed", "accepted", "rejected"]

_OrgId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$")
]
_KeyId = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-F]{16}$",
        description="The minisign key id of the receiver's signing key, as minisign prints it.",
    ),
]
_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_UtcTime = Annotated[
    AwareDatetime,
    PlainSerializer(format_rfc3339, return_type=str, when_used="json"),
]


class ReceiptDecodeError(ValueError):
    """The bytes are not a receipt body in canonical form; the message says why (one line)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReceiptActor(_Model):
    """The person at the receiving organisation who acted (never a pupil's details)."""

    name: Annotated[Line, Field(min_length=1, max_length=200)]
    role: Annotated[Line, Field(min_length=1, max_length=64)]


class ReceiptBody(_Model):
    """The signed body of a receipt."""

    type: Literal["handover.receipt"] = RECEIPT_TYPE
    version: Literal[1] = 1
    receipt_id: UUID
    kind: ReceiptKind
    package_id: UUID
    package_kind: PackageKind
    #: Who sent the package.
    sender_org_id: _OrgId
    #: Who issues (and signs) this receipt: the package's recipient.
    receiver_org_id: _OrgId
    #: The receiver's signing key that signs this receipt.
    receiver_key_id: _KeyId
    #: SHA-256 (hex) of exactly the ciphertext bytes received.
    ciphertext_sha256: _Sha256
    ciphertext_size: Annotated[int, Field(ge=0, le=2**63 - 1)]
    #: SHA-256 (hex) of the manifest accepted; only on ``accepted``.
    manifest_sha256: _Sha256 | None = None
    #: The person who acted; on ``viewed``, ``accepted`` and ``rejected``.
    acted_by: ReceiptActor | None = None
    #: Why the package was rejected; only (and always) on ``rejected``.
    reason: Annotated[Prose, Field(min_length=1, max_length=MAX_REASON)] | None = None
    #: The receiver's own reference (e.g. a MASH case number); on ``accepted`` or ``rejected``.
    reference: Annotated[Line, Field(min_length=1, max_length=MAX_REFERENCE)] | None = None
    issued_at: _UtcTime
    #: The receiver's latest signed audit checkpoint (note text), when it has one.
    checkpoint: Annotated[str, Field(min_length=1, max_length=MAX_CHECKPOINT)] | None = None

    @field_validator("issued_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("reason", "reference")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _fields_for_kind(self) -> ReceiptBody:
        kind = self.kind
        what = f"an {kind} receipt" if kind == "accepted" else f"a {kind} receipt"
        if kind == "delivered" and self.acted_by is not None:
            raise ValueError("a delivered receipt is issued by the node, so has no acted_by")
        if kind != "delivered" and self.acted_by is None:
            raise ValueError(f"{what} must name the person who acted (acted_by)")
        if kind == "accepted" and self.manifest_sha256 is None:
            raise ValueError("an accepted receipt must give the manifest's SHA-256")
        if kind != "accepted" and self.manifest_sha256 is not None:
            raise ValueError(f"{what} has no manifest_sha256 (only accepted has)")
        if kind == "rejected" and self.reason is None:
            raise ValueError("a rejected receipt must give a reason")
        if kind != "rejected" and self.reason is not None:
            raise ValueError(f"{what} has no reason (only rejected has)")
        if kind in ("delivered", "viewed") and self.reference is not None:
            raise ValueError(f"{what} has no reference (accepted or rejected may)")
        return self

    # ------------------------------------------------------------- canonical

    def canonical_bytes(self) -> bytes:
        """The exact signed bytes: sorted keys, compact, UTF-8, no newline."""
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> ReceiptBody:
        """Parse receipt body bytes; they must be valid and exactly in canonical form.

        Raises :class:`ReceiptDecodeError` with a one-line reason.
        """
        try:
            raw = jsontext.loads(data)
        except UnicodeDecodeError:
            raise ReceiptDecodeError("the receipt is not UTF-8 text") from None
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise ReceiptDecodeError(f"the receipt is not valid JSON ({exc})") from None
        body = cls.from_object(raw)
        if body.canonical_bytes() != data:
            raise ReceiptDecodeError("the receipt is not in canonical form")
        return body

    @classmethod
    def from_object(cls, raw: Any) -> ReceiptBody:
        """Validate a parsed JSON value as a receipt body (no canonical-form check)."""
        if not isinstance(raw, dict):
            raise ReceiptDecodeError("the receipt is not a JSON object")
        if raw.get("type") != RECEIPT_TYPE:
            raise ReceiptDecodeError(
                f"the JSON is of type {str(raw.get('type'))[:40]!r}, not {RECEIPT_TYPE!r}: "
                "it is not a receipt"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            at = where(first["loc"])
            raise ReceiptDecodeError(f"the receipt is not valid: {at}: {first['msg']}") from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a receipt body (kept in ``schemas/json/receipt.schema.json``)."""
    schema = ReceiptBody.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://handover.invalid/schemas/receipt.schema.json"
    return schema


def json_schema_text() -> str:
    """The schema file's exact text."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
