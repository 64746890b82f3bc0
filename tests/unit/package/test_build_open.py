"""Building and opening whole packages (age layer included): round trips and tampering."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from keys.keyset import KeySet
from schemas.manifest import Manifest, ManifestEntry, Recipient, Sender, Subject
from tests.unit.package.support import CREATED, Parties, make_manifest, parties, sample_entries
from transfer.age import X25519Identity, decrypt, encrypt
from transfer.errors import IntegrityError
from transfer.package.build import (
    BuiltPackage,
    EntrySource,
    build_package,
    build_package_file,
    write_package,
)
from transfer.package.errors import (
    ALTERED,
    EntryMismatchError,
    PackageDecryptError,
    PackageTamperedError,
)
from transfer.package.layout import VerifiedPackage, sign_manifest, write_package_tar
from transfer.package.open import (
    extract_package,
    inspect_package,
    open_package,
    verify_package,
)

MB = 1024 * 1024


@pytest.fixture
def p() -> Parties:
    return parties()


def identity(ks: KeySet) -> X25519Identity:
    return X25519Identity.from_private_bytes(ks.encryption.secret)


def _build(p: Parties, out: BinaryIO, entries: list[EntrySource] | None = None) -> BuiltPackage:
    return build_package(
        out,
        kind="leaver_file",
        sender=Sender(
            org_id=p.sender.org_id,
            key_fingerprint=p.sender.fingerprint,
            signing_key_id=p.sender.key_id_hex,
        ),
        recipient=Recipient(org_id=p.recipient.org_id, key_fingerprint=p.recipient.fingerprint),
        subject=Subject(surname="Smith", forename="Jo"),
        entries=sample_entries() if entries is None else entries,
        signer=p.sender.minisign_secret_key(),
        recipients=[identity(p.recipient).recipient],
        created_at=CREATED,
        records_schema={"pupil": 1},
    )


def _verify(p: Parties, data: bytes) -> object:
    return verify_package(
        io.BytesIO(data),
        identities=[identity(p.recipient)],
        sender_keys=p.sender_keys,
        addressee=p.addressee,
    )


def test_build_then_verify(p: Parties) -> None:
    out = io.BytesIO()
    built = _build(p, out)
    data = out.getvalue()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert built.ciphertext_size == len(data)
    assert built.ciphertext_sha256 == hashlib.sha256(data).hexdigest()
    result = verify_package(
        io.BytesIO(data),
        identities=[identity(p.recipient)],
        sender_keys=p.sender_keys,
        addressee=p.addressee,
        hash_ciphertext=True,
    )
    assert result.manifest == built.manifest
    assert result.manifest_bytes == built.manifest_bytes
    assert result.ciphertext_sha256 == built.ciphertext_sha256
    assert result.ciphertext_size == len(data)
    assert result.signature_text == built.signature
    assert "OK" not in result.summary() and "3 entries" in result.summary()


def test_inspect_reads_only_the_manifest(p: Parties) -> None:
    out = io.BytesIO()
    doc = EntrySource.from_bytes("documents/" + "12" * 32, os.urandom(300_000))
    built = _build(p, out, [*sample_entries(), doc])
    # Damage the end of the ciphertext: inspect does not read that far, verify does.
    data = bytearray(out.getvalue())
    data[-5] ^= 1
    seen = inspect_package(
        io.BytesIO(bytes(data)),
        identities=[identity(p.recipient)],
        sender_keys=p.sender_keys,
        addressee=p.addressee,
    )
    assert seen.manifest == built.manifest and not seen.entries_checked
    with pytest.raises(PackageDecryptError):
        _verify(p, bytes(data))


def test_flipped_bits_anywhere_are_refused(p: Parties) -> None:
    out = io.BytesIO()
    big = [*sample_entries(), EntrySource.from_bytes("documents/" + "ef" * 32, os.urandom(200_000))]
    _build(p, out, big)
    data = out.getvalue()
    header_end = data.index(b"\n---") + 1
    positions = [
        0,
        30,
        header_end + 10,
        header_end + 60,
        len(data) // 2,
        len(data) - 20,
        len(data) - 1,
    ]
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(IntegrityError) as info:
            _verify(p, bytes(bad))
        assert "\n" not in str(info.value)


def test_truncated_or_extended_ciphertext_is_refused(p: Parties) -> None:
    out = io.BytesIO()
    _build(p, out)
    data = out.getvalue()
    for cut in (10, 200, len(data) // 2, len(data) - 1):
        with pytest.raises(PackageDecryptError):
            _verify(p, data[:cut])
    with pytest.raises(PackageDecryptError):
        _verify(p, data + b"\x00")


def test_a_package_for_another_key_cannot_be_opened(p: Parties) -> None:
    out = io.BytesIO()
    _build(p, out)
    stranger = X25519Identity.generate()
    with pytest.raises(PackageDecryptError, match="not encrypted to any of our keys"):
        verify_package(
            io.BytesIO(out.getvalue()),
            identities=[stranger],
            sender_keys=p.sender_keys,
            addressee=p.addressee,
        )


def test_re_encrypted_modified_tar_with_stale_signature_is_refused(p: Parties) -> None:
    """Anyone can encrypt to us; a modified tar re-encrypted keeps the stale signature."""
    sources = sample_entries()
    manifest = make_manifest(p, sources)
    data, sig = sign_manifest(manifest, p.sender.minisign_secret_key())
    plain = io.BytesIO()
    write_package_tar(plain, manifest, data, sig, sources)
    tampered = plain.getvalue().replace(b'"surname":"Smith"', b'"surname":"Smyth"', 1)
    assert tampered != plain.getvalue()
    with pytest.raises(PackageTamperedError) as info:
        _verify(p, encrypt(tampered, [identity(p.recipient).recipient]))
    assert str(info.value).startswith(ALTERED)


def test_a_self_checking_source_is_counted_not_hashed_again(p: Parties) -> None:
    """Issue 16: the store's reader checks a document's SHA-256 itself; the build only counts
    its bytes (a wrong size still stops it) and the package is byte for byte the same."""
    good = sample_entries()
    hashed: list[int] = []

    def chunks() -> Iterator[bytes]:
        data = b"".join(good[2].opener())
        hashed.append(len(data))  # the source's own check would hash these
        yield data

    checked = replace(good[2], opener=chunks, self_checking=True)
    plain, again = io.BytesIO(), io.BytesIO()
    manifest = make_manifest(p, good)
    data, sig = sign_manifest(manifest, p.sender.minisign_secret_key())
    write_package_tar(plain, manifest, data, sig, good)
    write_package_tar(again, manifest, data, sig, [*good[:2], checked])
    assert again.getvalue() == plain.getvalue() and hashed == [good[2].size]
    short = replace(checked, opener=lambda: [b"X" * (good[2].size - 1)])
    with pytest.raises(EntryMismatchError, match="not its declared"):
        write_package_tar(io.BytesIO(), manifest, data, sig, [*good[:2], short])


def test_builder_aborts_when_a_document_does_not_match_its_hash(p: Parties, tmp_path: Path) -> None:
    good = sample_entries()
    liar = replace(good[2], opener=lambda: [b"X" * good[2].size])
    out = io.BytesIO()
    with pytest.raises(EntryMismatchError):
        _build(p, out, [*good[:2], liar])
    # What was written so far is not a package: it does not decrypt to the end.
    with pytest.raises(IntegrityError):
        _verify(p, out.getvalue())
    target = tmp_path / "pkg.age"
    with pytest.raises(EntryMismatchError):
        build_package_file(
            target,
            kind="other",
            sender=Sender(
                org_id=p.sender.org_id,
                key_fingerprint=p.sender.fingerprint,
                signing_key_id=p.sender.key_id_hex,
            ),
            recipient=Recipient(org_id=p.recipient.org_id, key_fingerprint=p.recipient.fingerprint),
            subject=Subject(surname="Smith", forename="Jo"),
            entries=[*good[:2], liar],
            signer=p.sender.minisign_secret_key(),
            recipients=[identity(p.recipient).recipient],
        )
    assert list(tmp_path.iterdir()) == []


def test_write_package_checks_sources_against_the_manifest(p: Parties) -> None:
    sources = sample_entries()
    manifest = make_manifest(p, sources[:2])
    with pytest.raises(Exception, match="do not match the manifest"):
        write_package(
            io.BytesIO(),
            manifest,
            sources,
            signer=p.sender.minisign_secret_key(),
            recipients=[identity(p.recipient).recipient],
        )
    other = KeySet.generate("urn:school:100001")
    with pytest.raises(Exception, match="being signed with key"):
        write_package(
            io.BytesIO(),
            make_manifest(p, sources),
            sources,
            signer=other.minisign_secret_key(),
            recipients=[identity(p.recipient).recipient],
        )


def test_open_package_hands_entries_over_only_after_a_full_verification(
    p: Parties, tmp_path: Path
) -> None:
    path = tmp_path / "pkg.age"
    with path.open("wb") as f:
        _build(p, f)
    got: dict[str, bytes] = {}

    def take(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        got[entry.path] = b"".join(chunks)

    result = open_package(
        path,
        take,
        identities=[identity(p.recipient)],
        sender_keys=p.sender_keys,
        addressee=p.addressee,
    )
    assert set(got) == {e.path for e in result.manifest.entries}
    # A package that fails anywhere (here: its last chunk) hands nothing over.
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    bad = tmp_path / "bad.age"
    bad.write_bytes(bytes(data))
    got.clear()
    with pytest.raises(PackageDecryptError):
        open_package(
            bad,
            take,
            identities=[identity(p.recipient)],
            sender_keys=p.sender_keys,
            addressee=p.addressee,
        )
    assert got == {}


def test_the_ciphertext_is_hashed_only_when_asked(p: Parties) -> None:
    """The node hashed the ciphertext as it arrived; verifying does not do it again unless
    the caller (``handover package verify``, which prints it) asks."""
    out = io.BytesIO()
    _build(p, out)
    result = _verify(p, out.getvalue())
    assert isinstance(result, VerifiedPackage) and result.entries_checked
    assert result.ciphertext_sha256 is None
    assert result.ciphertext_size == len(out.getvalue())


def test_open_package_refuses_a_file_swapped_for_another_package_between_its_passes(
    p: Parties, tmp_path: Path
) -> None:
    """Pass 1 verifies one package; if the file is then replaced by another (validly signed,
    for us) before pass 2, what pass 2 streams is not what was verified: refused."""
    path = tmp_path / "pkg.age"
    with path.open("wb") as f:
        first = _build(p, f)
    other = tmp_path / "other.age"
    with other.open("wb") as f:
        second = _build(p, f, entries=sample_entries()[:1])
    assert first.manifest_bytes != second.manifest_bytes
    swapped = False

    def swap_after_pass_one(done: int, total: int | None) -> None:
        nonlocal swapped
        if not swapped and total is not None and done >= total // 2:
            os.replace(other, path)  # pass 1 holds the old file open; pass 2 opens this one
            swapped = True

    got: list[str] = []
    with pytest.raises(PackageTamperedError) as info:
        open_package(
            path,
            lambda entry, chunks: got.append(entry.path),
            identities=[identity(p.recipient)],
            sender_keys=p.sender_keys,
            addressee=p.addressee,
            progress=swap_after_pass_one,
        )
    assert swapped
    assert "changed while it was being opened" in str(info.value)


def test_open_package_accepts_the_same_package_encrypted_again_between_its_passes(
    p: Parties, tmp_path: Path
) -> None:
    """The check is on contents (the signed manifest, whose SHA-256s pass 2 checks every
    entry against), not on the age layer's bytes."""
    path = tmp_path / "pkg.age"
    with path.open("wb") as f:
        _build(p, f)
    plain = decrypt(path.read_bytes(), [identity(p.recipient)])
    again = tmp_path / "again.age"
    again.write_bytes(encrypt(plain, [identity(p.recipient).recipient]))
    assert again.read_bytes() != path.read_bytes()
    swapped = False

    def swap_after_pass_one(done: int, total: int | None) -> None:
        nonlocal swapped
        if not swapped and total is not None and done >= total // 2:
            os.replace(again, path)
            swapped = True

    got: dict[str, bytes] = {}

    def take(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        got[entry.path] = b"".join(chunks)

    result = open_package(
        path,
        take,
        identities=[identity(p.recipient)],
        sender_keys=p.sender_keys,
        addressee=p.addressee,
        progress=swap_after_pass_one,
    )
    assert swapped
    assert set(got) == {e.path for e in result.manifest.entries}


def test_extract_writes_everything_or_nothing(p: Parties, tmp_path: Path) -> None:
    path = tmp_path / "pkg.age"
    with path.open("wb") as f:
        built = _build(p, f)
    out = tmp_path / "opened"
    extract_package(
        path,
        out,
        identities=[identity(p.recipient)],
        sender_keys=p.sender_keys,
        addressee=p.addressee,
    )
    assert (out / "manifest.json").read_bytes() == built.manifest_bytes
    assert (out / "manifest.json.minisig").read_text() == built.signature
    for entry in built.manifest.entries:
        assert hashlib.sha256((out / entry.path).read_bytes()).hexdigest() == entry.sha256
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        extract_package(
            path,
            tmp_path / "again",
            identities=[identity(p.recipient)],
            sender_keys=p.sender_keys,
            addressee=p.addressee,
        )
    assert sorted(x.name for x in tmp_path.iterdir()) == ["opened", "pkg.age"]


def test_manifest_round_trips_through_the_package(p: Parties) -> None:
    out = io.BytesIO()
    built = _build(p, out)
    assert Manifest.from_bytes(built.manifest_bytes) == built.manifest


# ------------------------------------------------------------ bounded memory


def _generated(size: int, seed: bytes) -> tuple[str, EntrySource]:
    """A deterministic stream of ``size`` bytes (hashed in a first pass, never stored)."""
    block = hashlib.sha512(seed).digest() * 1024  # 64 KiB

    def chunks() -> Iterator[bytes]:
        left = size
        while left:
            n = min(left, len(block))
            yield block[:n]
            left -= n

    digest = hashlib.sha256()
    for c in chunks():
        digest.update(c)
    return digest.hexdigest(), EntrySource(
        path="documents/" + digest.hexdigest(), size=size, sha256=digest.hexdigest(), opener=chunks
    )


class _Sink(io.RawIOBase):
    """A writable that keeps only a hash (the package is never held)."""

    def __init__(self) -> None:
        self.size = 0
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.size += len(data)
        self.digest.update(data)
        return len(data)


def test_a_large_document_streams_with_bounded_memory(p: Parties, tmp_path: Path) -> None:
    size = 200 * MB
    _, doc = _generated(size, b"large")
    path = tmp_path / "large.age"
    tracemalloc.start()
    try:
        with path.open("wb") as f:
            _build(p, f, [*sample_entries(), doc])
        _, build_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with path.open("rb") as f:
            result = verify_package(
                f,
                identities=[identity(p.recipient)],
                sender_keys=p.sender_keys,
                addressee=p.addressee,
            )
        _, open_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.manifest.total_size > size
    assert path.stat().st_size > size
    assert build_peak < 8 * MB, f"building peaked at {build_peak / MB:.1f} MiB"
    assert open_peak < 8 * MB, f"verifying peaked at {open_peak / MB:.1f} MiB"


def _payload_chunks(data: bytes) -> tuple[bytes, list[bytes]]:
    """The age header (with the payload nonce) and the ciphertext chunks."""
    header_end = data.index(b"\n", data.index(b"\n--- ")) + 1 + 16
    body = data[header_end:]
    size = 64 * 1024 + 16
    return data[:header_end], [body[i : i + size] for i in range(0, len(body), size)]


def test_reordered_dropped_or_duplicated_chunks_are_refused(p: Parties) -> None:
    out = io.BytesIO()
    doc = EntrySource.from_bytes("documents/" + "34" * 32, os.urandom(300_000))
    _build(p, out, [*sample_entries(), doc])
    head, chunks = _payload_chunks(out.getvalue())
    assert len(chunks) >= 5
    variants = {
        "swapped": [chunks[0], chunks[2], chunks[1], *chunks[3:]],
        "duplicated": [chunks[0], chunks[1], chunks[1], *chunks[2:]],
        "dropped": [chunks[0], *chunks[2:]],
        "last dropped": chunks[:-1],
        "last moved": [*chunks[:-2], chunks[-1], chunks[-2]],
    }
    for name, body in variants.items():
        with pytest.raises(PackageDecryptError) as info:
            _verify(p, head + b"".join(body))
        assert "could not be decrypted" in str(info.value), name


def test_the_manifest_is_read_first_and_nothing_follows_a_bad_one(p: Parties) -> None:
    """A flip inside the manifest's chunk fails before any entry is handed over."""
    out = io.BytesIO()
    _build(p, out)
    head, chunks = _payload_chunks(out.getvalue())
    bad = bytearray(chunks[0])
    bad[600] ^= 0x01  # the manifest starts at plaintext offset 512 (after its tar header)
    seen: list[str] = []
    with pytest.raises(PackageDecryptError):
        verify_package(
            io.BytesIO(head + bytes(bad) + b"".join(chunks[1:])),
            identities=[identity(p.recipient)],
            sender_keys=p.sender_keys,
            addressee=p.addressee,
            on_entry=lambda e, c: seen.append(e.path),
        )
    assert seen == []
