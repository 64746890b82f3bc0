"""The fuzz targets: each takes untrusted bytes the way the node meets them, with the good
inputs (seeds) it starts from. A target returns or raises a HandoverError; nothing else.

- ``age``: an age file (binary and armored), decrypted with the right identity;
- ``package``: a sealed package verified as the inbox does (decrypt, tar, manifest,
  signature, every entry); the plaintext tar layer is fuzzed by
  ``tests/unit/package/test_tar_fuzz.py``;
- ``ctf``: a Common Transfer File, as ``POST /api/v1/ctf-imports`` and ``ctf import`` parse it;
- ``directory``: a signed directory document and its signature, verified against the pinned
  authority (``directory import``), and a single entry (``directory add-local``);
- ``receipt``: a signed receipt's JSON, parsed and verified against the issuer's key;
- ``checkpoint``: a signed checkpoint note, as the checkpoint file and peers' receipts
  carry it, parsed and verified.

The peer protocol's bodies are fuzzed over HTTP against a real node
(``test_peer_bodies.py``).
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from keys import minisign
from keys.keyset import KeySet
from schemas.receipt import ReceiptActor, ReceiptBody
from tests.integration.package.support import identity
from tests.unit.package.support import parties, plain_package
from transfer.age import X25519Identity
from transfer.age.stream import decrypt, encrypt
from transfer.audit import merkle
from transfer.audit.checkpoint import Checkpoint, Signer, parse_checkpoint, sign_checkpoint
from transfer.audit.checkpoint import verify_checkpoint as verify_note
from transfer.ctf import parse_ctf
from transfer.directory.document import (
    add_organisation,
    entry_from_keyset,
    new_document,
    parse_entry,
    sign_document,
    verify_document,
)
from transfer.package.layout import Limits
from transfer.package.open import verify_package
from transfer.receipts import SignedReceipt, sign_receipt, verify_receipt

ASSETS = Path(__file__).resolve().parents[1] / "assets"
T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class FuzzTarget:
    name: str
    seeds: tuple[bytes, ...]
    run: Any  # Callable[[bytes], object]
    #: JSON seeds to mutate as structures too (empty: bytes only).
    json_seeds: tuple[Any, ...] = ()


# ------------------------------------------------------------------ age


@functools.cache
def _age_identity() -> X25519Identity:
    return X25519Identity.generate()


def age_target() -> FuzzTarget:
    ident = _age_identity()
    plain = b"a pupil's chronology, " * 200
    seeds = (
        encrypt(plain, [ident.recipient]),
        encrypt(plain, [ident.recipient], armor=True),
        encrypt(b"", [ident.recipient]),
        encrypt(plain * 16, [ident.recipient]),  # more than one 64 KiB chunk
    )
    return FuzzTarget("age", seeds, lambda data: decrypt(data, [ident]))


# ------------------------------------------------------------------ package


@functools.cache
def package_target() -> FuzzTarget:
    p = parties()
    ident = identity(p.recipient)
    sealed = encrypt(plain_package(p), [ident.recipient])

    def run(data: bytes) -> object:
        return verify_package(
            io.BytesIO(data),
            identities=[ident],
            sender_keys=p.sender_keys,
            addressee=p.addressee,
            limits=Limits(max_total_bytes=1_000_000),
        )

    return FuzzTarget("package", (sealed,), run)


# ------------------------------------------------------------------ CTF


def ctf_target() -> FuzzTarget:
    seeds = tuple(p.read_bytes() for p in sorted((ASSETS / "ctf").glob("*.xml")))
    return FuzzTarget("ctf", seeds, parse_ctf)


# ------------------------------------------------------------------ directory


@functools.cache
def _directory() -> tuple[minisign.SecretKey, bytes, str, bytes]:
    secret = minisign.SecretKey.generate()
    ks = KeySet.generate("123456", now=T0)
    entry = entry_from_keyset(
        ks, name="Riverside Academy", kind="school", endpoint="https://riverside.example:8443"
    )
    doc = new_document("Testshire County Council", now=T0, valid_for=timedelta(days=30))
    doc = add_organisation(doc, entry)
    _, data, sig = sign_document(doc, secret, now=T0, valid_for=timedelta(days=30))
    return secret, data, sig, entry.model_dump_json().encode()


def directory_target() -> FuzzTarget:
    secret, data, sig, _ = _directory()
    authority = secret.public_key

    def run(blob: bytes) -> object:
        # Document and signature travel as two files: both are the attacker's.
        doc, _, signature = blob.partition(b"\x00SIGNATURE\x00")
        return verify_document(doc, signature, authority=authority, now=T0 + timedelta(days=1))

    seed = data + b"\x00SIGNATURE\x00" + sig.encode()
    return FuzzTarget("directory", (seed,), run, json_seeds=())


def directory_entry_target() -> FuzzTarget:
    *_, entry = _directory()
    return FuzzTarget("directory-entry", (entry,), parse_entry, json_seeds=(json.loads(entry),))


# ------------------------------------------------------------------ receipts


@functools.cache
def _receipt_keys() -> KeySet:
    return KeySet.generate("urn:school:100002", now=T0)


def receipt_seed(kind: str = "accepted") -> SignedReceipt:
    keys = _receipt_keys()
    fields: dict[str, Any] = {
        "receipt_id": UUID("5f0c7a52-1b43-4b0e-9a55-0d9b7c1e2f3a"),
        "kind": kind,
        "package_id": UUID("0b6c2f7e-9a1d-4c1b-8d2e-3f4a5b6c7d8e"),
        "package_kind": "leaver_file",
        "sender_org_id": "urn:school:100001",
        "receiver_org_id": keys.org_id,
        "receiver_key_id": keys.key_id_hex,
        "ciphertext_sha256": "ab" * 32,
        "ciphertext_size": 123_456,
        "issued_at": T0,
    }
    if kind != "delivered":
        fields["acted_by"] = ReceiptActor(name="Sam Patel", role="dsl")
    if kind == "accepted":
        fields["manifest_sha256"] = "cd" * 32
    return sign_receipt(ReceiptBody(**fields), keys)


def receipt_target() -> FuzzTarget:
    keys = _receipt_keys()
    seeds = tuple(receipt_seed(k).to_json() for k in ("delivered", "accepted"))

    def run(data: bytes) -> object:
        return verify_receipt(data, public_key=keys.minisign_public_key)

    return FuzzTarget("receipt", seeds, run, json_seeds=tuple(json.loads(s) for s in seeds))


# ------------------------------------------------------------------ checkpoints


@functools.cache
def _signer() -> Signer:
    return Signer("riverside.example/audit", bytes(range(32)))


def checkpoint_note(size: int = 42) -> str:
    root = merkle.leaf_hash(b"entry %d" % size)
    return sign_checkpoint(Checkpoint(_signer().name, size, root), _signer())


def checkpoint_target() -> FuzzTarget:
    verifier = _signer().verifier

    def run(data: bytes) -> object:
        try:
            note = data.decode("utf-8")
        except UnicodeDecodeError:
            return None  # the checkpoint file's reader refuses what is not UTF-8 first
        parse_checkpoint(note)
        return verify_note(note, verifier)

    ext = sign_checkpoint(
        Checkpoint(_signer().name, 7, merkle.leaf_hash(b"x"), ("extension line",)), _signer()
    )
    return FuzzTarget("checkpoint", (checkpoint_note().encode(), ext.encode()), run)


def all_targets() -> list[FuzzTarget]:
    return [
        age_target(),
        package_target(),
        ctf_target(),
        directory_target(),
        directory_entry_target(),
        receipt_target(),
        checkpoint_target(),
    ]


def by_name(name: str) -> FuzzTarget:
    for target in all_targets():
        if target.name == name:
            return target
    raise KeyError(name)
