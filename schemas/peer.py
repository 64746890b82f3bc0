"""The peer protocol's wire bodies (``docs/protocol.md``): what one node sends another.

Strict and closed (unknown fields refused, nothing coerced), so a body either means
exactly one thing or is refused with a problem document. The JSON Schemas are exported
with the others (``python -m schemas.export``, ``schemas/json/peer-*.schema.json``).
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.manifest import PackageKind
from schemas.text import Line, Prose

__all__ = [
    "MAX_NOTE",
    "MAX_REASON",
    "WIRE_BODIES",
    "Decision",
    "OfferBody",
    "PeerDecision",
    "PeerTransferRequest",
]

#: A transfer request is answered by authorising (the file follows) or declining.
Decision = Literal["authorised", "declined"]
MAX_NOTE: Final = 500
MAX_REASON: Final = 500


class OfferBody(BaseModel):
    """``POST /peer/v1/packages``: what the sender is about to upload."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    package_id: uuid.UUID = Field(strict=False)  # a UUID string on the wire
    package_kind: PackageKind
    sender_org_id: str = Field(min_length=1, max_length=64)
    recipient_org_id: str = Field(min_length=1, max_length=64)
    size: int = Field(ge=1, le=2**62)
    ciphertext_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True, strict=True)


class PeerTransferRequest(_Body):
    """The body of ``POST /peer/v1/transfer-requests`` (contracts §5)."""

    request_id: uuid.UUID = Field(strict=False)
    requester_org_id: str = Field(min_length=1, max_length=64)
    holder_org_id: str = Field(min_length=1, max_length=64)
    upn: str = Field(min_length=13, max_length=13)
    dob: date | None = Field(default=None, strict=False)  # an ISO date string on the wire
    surname: Line = Field(min_length=1, max_length=200)
    forename: Line = Field(min_length=1, max_length=200)
    note: Prose | None = Field(default=None, max_length=MAX_NOTE)


class PeerDecision(_Body):
    """The body of ``POST /peer/v1/transfer-requests/{id}/decision``."""

    decision: Decision
    reason: Prose | None = Field(default=None, max_length=MAX_REASON)
    package_id: uuid.UUID | None = Field(default=None, strict=False)


#: Each wire body by the name its JSON Schema is exported under (``peer-<name>.schema.json``).
WIRE_BODIES: Final[dict[str, type[BaseModel]]] = {
    "peer-offer": OfferBody,
    "peer-transfer-request": PeerTransferRequest,
    "peer-decision": PeerDecision,
}
