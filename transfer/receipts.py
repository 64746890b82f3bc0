"""Signing and verifying receipts (:class:`schemas.receipt.ReceiptBody`).

A receipt is the canonical JSON bytes of its body and a minisign signature of
exactly those bytes by the receiving organisation's current signing key. The
signature's trusted comment binds it to its purpose::

    handover-receipt-v1 <kind> <package_id>

so a manifest signature (``handover-manifest-v1 ...``), or any other thing the
same key signed, is never taken for a receipt, and a receipt for one package
or step cannot be passed off as another's. On the wire a receipt is
``{"receipt": <body>, "signature": "<.minisig text>"}``; as evidence it is two
files, ``<name>.json`` (the body bytes) and ``<name>.json.minisig``, which
``minisign -Vm <name>.json -p receiver.pub`` checks. See ``docs/receipts.md``.

Pure except :func:`write_evidence`, which writes those two files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from keys import minisign
from keys.keyset import KeySet
from schemas import jsontext
from schemas.manifest import canonical_json
from schemas.receipt import ReceiptBody, ReceiptDecodeError
from transfer.errors import ConflictError, InputError, IntegrityError

__all__ = [
    "RECEIPT_CONTEXT",
    "ReceiptContradictionError",
    "ReceiptError",
    "ReceiptFormatError",
    "SignedReceipt",
    "contradicts_final",
    "receipt_trusted_comment",
    "sign_receipt",
    "verify_receipt",
    "write_evidence",
]

#: The context label that starts the trusted comment of every receipt signature.
RECEIPT_CONTEXT = "handover-receipt-v1"
#: Largest signed receipt accepted as JSON (the body is small; a checkpoint is at most 8 KiB).
MAX_RECEIPT_BYTES = 64 * 1024


class ReceiptFormatError(InputError):
    """A signed receipt is not well-formed JSON of the expected shape."""

    slug = "malformed-receipt"
    title = "The receipt is malformed"


class ReceiptError(IntegrityError):
    """A receipt failed verification: bad signature, wrong key, or not the receipt expected."""

    slug = "receipt-invalid"
    title = "The receipt is not valid"


class ReceiptContradictionError(ConflictError):
    """A valid receipt says the opposite of a final one already held (a rejected receipt
    for a package already accepted, or the other way round): refused, never stored."""

    slug = "receipt-contradicts-final-state"
    title = "The receipt contradicts the package's final state"


#: The kinds of receipt that end a package's journey; each excludes the other.
FINAL_KINDS = frozenset({"accepted", "rejected"})


def contradicts_final(state: str, kind: str) -> bool:
    """Whether a receipt of ``kind`` contradicts a package whose state is ``state``: the
    package was accepted and the receipt says rejected, or the other way round (pure)."""
    return state in FINAL_KINDS and kind in FINAL_KINDS and kind != state


def receipt_trusted_comment(body: ReceiptBody) -> str:
    """The signed context of a receipt's signature (shown by ``minisign -V``)."""
    return f"{RECEIPT_CONTEXT} {body.kind} {body.package_id}"


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt body, its exact signed bytes and its ``.minisig`` text."""

    body: ReceiptBody
    #: The canonical JSON of ``body``: exactly the bytes signed.
    body_bytes: bytes
    #: The minisign signature of ``body_bytes``.
    signature_text: str

    def to_dict(self) -> dict[str, Any]:
        """The wire form as a JSON-ready value: ``{"receipt": {...}, "signature": "..."}``."""
        return {"receipt": json.loads(self.body_bytes), "signature": self.signature_text}

    def to_json(self) -> bytes:
        """The wire form, canonical JSON."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, value: Any) -> SignedReceipt:
        """Parse the wire form already decoded from JSON (e.g. a member of a larger body).

        Raises :class:`ReceiptFormatError`. The signature is not checked here:
        use :func:`verify_receipt`.
        """
        if not isinstance(value, dict) or set(value) != {"receipt", "signature"}:
            raise ReceiptFormatError(
                'a signed receipt is a JSON object with exactly "receipt" and "signature"'
            )
        signature = value["signature"]
        if not isinstance(signature, str):
            raise ReceiptFormatError("a signed receipt's signature must be minisign text")
        try:
            body = ReceiptBody.from_object(value["receipt"])
            body_bytes = canonical_json(value["receipt"])
        except ReceiptDecodeError as exc:
            raise ReceiptFormatError(str(exc)) from None
        except (TypeError, ValueError):
            raise ReceiptFormatError("the receipt holds values that are not plain JSON") from None
        if body.canonical_bytes() != body_bytes:
            raise ReceiptFormatError(
                "the receipt is not in canonical form (a time, id or hash is written differently "
                "from how it was signed)"
            )
        try:
            minisign.Signature.from_text(signature)
        except minisign.MinisignFormatError as exc:
            raise ReceiptFormatError(f"the receipt's signature is malformed: {exc}") from None
        return cls(body=body, body_bytes=body_bytes, signature_text=signature)

    @classmethod
    def from_json(cls, data: bytes) -> SignedReceipt:
        """Parse the wire form; raise :class:`ReceiptFormatError` (an InputError) if malformed."""
        if len(data) > MAX_RECEIPT_BYTES:
            raise ReceiptFormatError(f"a signed receipt is larger than {MAX_RECEIPT_BYTES} bytes")
        try:
            value = jsontext.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise ReceiptFormatError(f"a signed receipt is not valid JSON ({exc})") from None
        return cls.from_dict(value)


def sign_receipt(body: ReceiptBody, keyset: KeySet) -> SignedReceipt:
    """Sign ``body`` with the receiver's current signing key.

    The body must name the key set's organisation and current key id.
    """
    if body.receiver_org_id != keyset.org_id:
        raise InputError(
            f"the receipt is issued by {body.receiver_org_id}, "
            f"but is being signed with the keys of {keyset.org_id}"
        )
    if body.receiver_key_id != keyset.key_id_hex:
        raise InputError(
            f"the receipt names signing key {body.receiver_key_id}, "
            f"but the current signing key is {keyset.key_id_hex}"
        )
    data = body.canonical_bytes()
    signature = minisign.sign(
        keyset.minisign_secret_key(),
        data,
        trusted_comment=receipt_trusted_comment(body),
        untrusted_comment=f"handover {body.kind} receipt, signed by {body.receiver_org_id}",
    )
    return SignedReceipt(body=body, body_bytes=data, signature_text=signature)


def verify_receipt(
    data: bytes | SignedReceipt,
    *,
    public_key: minisign.PublicKey,
    package_id: UUID | None = None,
    ciphertext_sha256: str | None = None,
    receiver_org_id: str | None = None,
) -> SignedReceipt:
    """Verify a receipt signed by ``public_key``; return it, or raise :class:`ReceiptError`.

    Checks the signature over the exact body bytes, that it was made as a
    receipt of this kind for this package (the trusted comment), that the body
    names the signing key, and, when given, the package id, the ciphertext
    hash and the issuing organisation.
    """
    try:
        signed = SignedReceipt.from_json(data) if isinstance(data, bytes) else data
        body = ReceiptBody.from_bytes(signed.body_bytes)
    except (ReceiptFormatError, ReceiptDecodeError) as exc:
        raise ReceiptError(f"the receipt is malformed: {exc}") from None
    if body != signed.body:
        raise ReceiptError("the receipt's body does not match its signed bytes")
    try:
        verified = minisign.verify(public_key, signed.body_bytes, signed.signature_text)
    except minisign.KeyMismatchError:
        raise ReceiptError(
            f"the receipt was signed by another key than {public_key.key_id_hex}, "
            f"the key expected for {body.receiver_org_id}"
        ) from None
    except (minisign.SignatureError, minisign.MinisignFormatError):
        raise ReceiptError(
            "the receipt's signature does not verify: the receipt was altered, or its signature "
            "belongs to something else"
        ) from None
    if verified.trusted_comment != receipt_trusted_comment(body):
        raise ReceiptError(
            "the signature is valid but was not made for this receipt (it is a signature of "
            "something else, or of another package or step)"
        )
    if body.receiver_key_id != public_key.key_id_hex:
        raise ReceiptError(
            f"the receipt names signing key {body.receiver_key_id}, "
            f"but was signed by {public_key.key_id_hex}"
        )
    if package_id is not None and body.package_id != package_id:
        raise ReceiptError(f"the receipt is for package {body.package_id}, not {package_id}")
    if ciphertext_sha256 is not None and body.ciphertext_sha256 != ciphertext_sha256.lower():
        raise ReceiptError(
            "the receipt's ciphertext SHA-256 is not that of the package sent: the receiver "
            "holds different bytes"
        )
    if receiver_org_id is not None and body.receiver_org_id != receiver_org_id:
        raise ReceiptError(
            f"the receipt was issued by {body.receiver_org_id}, not by {receiver_org_id}"
        )
    return SignedReceipt(
        body=body, body_bytes=signed.body_bytes, signature_text=signed.signature_text
    )


def write_evidence(signed: SignedReceipt, json_path: Path) -> tuple[Path, Path]:
    """Write ``json_path`` (the body bytes) and ``json_path.minisig`` (the signature).

    Each file is written to a temporary name, flushed to disk and renamed, so
    a reader never sees half a file. ``minisign -Vm <json_path> -p key.pub``
    then checks the pair.
    """
    sig_path = json_path.with_name(json_path.name + ".minisig")
    for path, content in (
        (json_path, signed.body_bytes),
        (sig_path, signed.signature_text.encode()),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    return json_path, sig_path
