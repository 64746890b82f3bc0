"""The plaintext layer: a good package verifies; every hostile or altered tar is refused.

These tests work on the tar stream inside the age encryption
(:func:`read_package_tar`), so they can build any tar at all.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from keys import minisign
from keys.keyset import KeyRevokedError, KeySet
from schemas.manifest import ManifestEntry
from tests.unit.package.support import (
    Parties,
    RawMember,
    make_manifest,
    parties,
    plain_package,
    raw_tar,
    sample_entries,
    signed_members,
    source_members,
)
from transfer.errors import IntegrityError, PeerError, PolicyError
from transfer.package.errors import (
    EntryMismatchError,
    NotAddressedToUsError,
    PackageFormatError,
    PackageLimitError,
    PackageTamperedError,
    UnknownSenderError,
    UnsafeTarError,
)
from transfer.package.layout import (
    EntrySource,
    KeySetSenderKeys,
    Limits,
    PinnedSenderKey,
    read_package_tar,
    write_package_tar,
)
from transfer.package.tar import TarReader, TarWriter


@pytest.fixture
def p() -> Parties:
    return parties()


def _read(p: Parties, data: bytes, **kw: object) -> object:
    return read_package_tar(
        io.BytesIO(data),
        sender_keys=kw.pop("sender_keys", p.sender_keys),  # type: ignore[arg-type]
        addressee=kw.pop("addressee", p.addressee),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def _refused(p: Parties, data: bytes, error: type[Exception], text: str, **kw: object) -> str:
    with pytest.raises(error) as info:
        _read(p, data, **kw)
    message = str(info.value)
    assert text in message, message
    assert "\n" not in message
    return message


# ----------------------------------------------------------------- good ones


def test_a_good_package_verifies_and_streams_every_entry(p: Parties) -> None:
    sources = sample_entries()
    seen: dict[str, bytes] = {}

    def on_entry(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        seen[entry.path] = b"".join(chunks)

    result = read_package_tar(
        io.BytesIO(plain_package(p, sources)),
        sender_keys=p.sender_keys,
        addressee=p.addressee,
        on_entry=on_entry,
    )
    assert result.entries_checked
    assert result.manifest.sender.org_id == p.sender.org_id
    assert result.signature.trusted_comment.startswith("handover-manifest-v1 package=")
    assert seen == {s.path: b"".join(s.opener()) for s in sources}


def test_the_tar_is_standard_and_manifest_comes_first(p: Parties) -> None:
    data = plain_package(p)
    assert len(data) % 10240 == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        names = tar.getnames()
        assert names[:2] == ["manifest.json", "manifest.json.minisig"]
        manifest = tar.extractfile("manifest.json")
        assert manifest is not None
        for entry in make_manifest(p, sample_entries()).entries:
            member = tar.extractfile(entry.path)
            assert member is not None
            assert hashlib.sha256(member.read()).hexdigest() == entry.sha256


def test_an_empty_package_and_an_empty_entry_verify(p: Parties) -> None:
    _read(p, plain_package(p, []))
    _read(p, plain_package(p, [EntrySource.from_bytes("records/empty.json", b"")]))


def test_a_package_addressed_to_an_earlier_key_of_ours_verifies(p: Parties) -> None:
    data = plain_package(p)
    rotated = p.recipient.rotate()
    _read(p, data, addressee=Parties(p.sender, rotated).addressee)


def test_a_revoked_sender_key_is_refused_for_packages_after_revocation(p: Parties) -> None:
    data = plain_package(p)  # created 2026-11-20 09:30
    keys = KeySetSenderKeys({p.sender.org_id: p.sender})
    _read(p, data, sender_keys=keys)
    before = p.sender.revoke(at=datetime(2026, 11, 21, tzinfo=UTC))
    _read(p, data, sender_keys=KeySetSenderKeys({p.sender.org_id: before}))
    after = p.sender.revoke(at=datetime(2026, 11, 1, tzinfo=UTC))
    with pytest.raises(KeyRevokedError):
        _read(p, data, sender_keys=KeySetSenderKeys({p.sender.org_id: after}))


# ------------------------------------------------------- who signed, for whom


def test_unknown_sender_key_is_refused(p: Parties) -> None:
    stranger = KeySet.generate("urn:school:100009")
    msg = _refused(
        p,
        plain_package(p),
        UnknownSenderError,
        "not a known key",
        sender_keys=PinnedSenderKey(stranger.minisign_public_key),
    )
    assert p.sender.key_id_hex in msg
    _refused(
        p,
        plain_package(p),
        UnknownSenderError,
        "not a known key",
        sender_keys=KeySetSenderKeys({stranger.org_id: stranger}),
    )


def test_a_pinned_key_of_another_organisation_is_refused(p: Parties) -> None:
    pinned = PinnedSenderKey(p.sender.minisign_public_key, "urn:school:100003")
    _refused(p, plain_package(p), UnknownSenderError, "claims to come from", sender_keys=pinned)


def test_a_package_for_another_school_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources, recipient_org="urn:school:123456")
    msg = _refused(
        p, raw_tar(head + source_members(sources)), NotAddressedToUsError, "another organisation"
    )
    assert "urn:school:123456" in msg
    assert issubclass(NotAddressedToUsError, PolicyError)


def test_a_package_for_another_key_of_ours_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources, recipient_fingerprint="AAAA-BBBB-CCCC-DDDD")
    _refused(
        p, raw_tar(head + source_members(sources)), NotAddressedToUsError, "not one of our keys"
    )


# ------------------------------------------------------------------ tampering


def test_altered_manifest_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _manifest, head = signed_members(p, sources)
    head[0] = RawMember("manifest.json", head[0].data.replace(b"Smith", b"Smyth"))
    msg = _refused(p, raw_tar(head + source_members(sources)), PackageTamperedError, "altered")
    assert msg.startswith("the package was altered after it was signed")


def test_altered_entry_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources)
    body = source_members(sources)
    body[0] = RawMember(body[0].name, body[0].data.replace(b"Smith", b"Smyth"))
    msg = _refused(p, raw_tar(head + body), PackageTamperedError, "records/pupil.json")
    assert "SHA-256" in msg


def test_a_signature_with_another_context_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _manifest, head = signed_members(p, sources)
    sig = minisign.sign(
        p.sender.minisign_secret_key(), head[0].data, trusted_comment="handover-receipt-v1 x=1"
    )
    head[1] = RawMember("manifest.json.minisig", sig.encode())
    _refused(p, raw_tar(head + source_members(sources)), PackageFormatError, "another purpose")


def test_a_trusted_comment_for_another_package_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _manifest, head = signed_members(p, sources)
    sig = minisign.sign(
        p.sender.minisign_secret_key(),
        head[0].data,
        trusted_comment=f"handover-manifest-v1 package=00000000-0000-0000-0000-000000000000 "
        f"recipient={p.recipient.org_id} sha256={hashlib.sha256(head[0].data).hexdigest()}",
    )
    head[1] = RawMember("manifest.json.minisig", sig.encode())
    _refused(p, raw_tar(head + source_members(sources)), PackageTamperedError, "trusted comment")


def test_entry_larger_than_declared_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources)
    body = source_members(sources)
    body[2] = RawMember(body[2].name, body[2].data + b"more bytes than signed")
    _refused(p, raw_tar(head + body), PackageTamperedError, "the manifest says")


def test_entry_not_in_manifest_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources)
    body = [*source_members(sources), RawMember("records/extra.json", b"{}")]
    _refused(p, raw_tar(head + body), PackageTamperedError, "does not list")


def test_missing_entry_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources)
    _refused(p, raw_tar(head + source_members(sources)[:-1]), PackageTamperedError, "is missing")


def test_duplicate_entry_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources)
    body = source_members(sources)
    _refused(p, raw_tar(head + body[:1] + body), UnsafeTarError, "twice")
    _refused(p, raw_tar(head + head[:1] + body), UnsafeTarError, "twice")


def test_entries_out_of_order_are_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources)
    body = source_members(sources)
    _refused(p, raw_tar(head + body[::-1]), PackageFormatError, "order")


def test_manifest_not_first_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources)
    body = source_members(sources)
    _refused(p, raw_tar(body[:1] + head + body[1:]), PackageFormatError, "does not start with")
    _refused(p, raw_tar(head[::-1] + body), PackageFormatError, "does not start with")


def test_missing_signature_is_refused(p: Parties) -> None:
    sources = sample_entries()
    _, head = signed_members(p, sources)
    _refused(
        p, raw_tar(head[:1] + source_members(sources)), PackageFormatError, "no manifest signature"
    )
    bad = [head[0], RawMember("manifest.json.minisig", b"not a signature")]
    _refused(
        p, raw_tar(bad + source_members(sources)), PackageFormatError, "signature is malformed"
    )


def test_no_manifest_at_all_is_refused(p: Parties) -> None:
    _refused(p, raw_tar([]), PackageFormatError, "starts with nothing")
    _refused(p, b"", UnsafeTarError, "no end-of-archive")
    _refused(p, b"\x00" * 10240, PackageFormatError, "starts with nothing")


# ---------------------------------------------------------------- hostile tar


def _hostile(p: Parties, member: RawMember, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    sources = sample_entries()
    _, head = signed_members(p, sources)
    return raw_tar([*head, member, *source_members(sources)], fmt=fmt)


@pytest.mark.parametrize(
    ("member", "text"),
    [
        (RawMember("/etc/passwd", b"x"), "absolute path"),
        (RawMember("../../etc/cron.d/x", b"x"), "climbs out"),
        (RawMember("records/../../x", b"x"), "climbs out"),
        (RawMember("records/./x", b"x"), "'.' part"),
        (RawMember("records//x", b"x"), "empty or '.' part"),
        (RawMember("records/a\x01b", b"x"), "control characters"),
        (RawMember("records\\x", b"x"), "backslash"),
        (RawMember("records/link", type=tarfile.SYMTYPE, linkname="/etc/passwd"), "symbolic link"),
        (RawMember("records/hard", type=tarfile.LNKTYPE, linkname="manifest.json"), "hard link"),
        (RawMember("records/dev", type=tarfile.CHRTYPE), "character device"),
        (RawMember("records/blk", type=tarfile.BLKTYPE), "block device"),
        (RawMember("records/fifo", type=tarfile.FIFOTYPE), "FIFO"),
        (RawMember("records", type=tarfile.DIRTYPE), "directory"),
    ],
)
def test_hostile_members_are_refused(p: Parties, member: RawMember, text: str) -> None:
    msg = _refused(p, _hostile(p, member), UnsafeTarError, text)
    assert issubclass(UnsafeTarError, PeerError)
    assert "\x01" not in msg


def test_gnu_long_names_are_refused(p: Parties) -> None:
    long = RawMember("records/" + "x" * 150, b"x")
    _refused(p, _hostile(p, long, fmt=tarfile.GNU_FORMAT), UnsafeTarError, "not POSIX")


def test_a_huge_pax_header_is_refused_before_it_is_read(p: Parties) -> None:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 4 * 1024**3
    block = header.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    _refused(p, block + bytes(1024), UnsafeTarError, "extended header of")


def test_a_pax_path_override_is_checked_too(p: Parties) -> None:
    info = tarfile.TarInfo("innocent")
    info.pax_headers = {"path": "../escape"}
    info.size = 1
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"x"))
    _refused(p, out.getvalue(), UnsafeTarError, "climbs out")


def test_a_bad_header_checksum_is_refused(p: Parties) -> None:
    data = bytearray(plain_package(p))
    data[10] ^= 0x01  # in manifest.json's name: the checksum no longer matches
    _refused(p, bytes(data), UnsafeTarError, "bad checksum")


def test_data_after_the_archive_is_refused(p: Parties) -> None:
    _refused(p, plain_package(p) + b"\x00" * 512 + b"trailing", UnsafeTarError, "after the end")
    _read(p, plain_package(p) + b"\x00" * 4096)  # zero padding is fine


def test_a_truncated_stream_is_refused(p: Parties) -> None:
    data = plain_package(p)
    for cut in (100, 700, 1500, len(data) - 10240 + 100):
        with pytest.raises((UnsafeTarError, PackageTamperedError, PackageFormatError)):
            _read(p, data[:cut])


# -------------------------------------------------------------------- limits


def test_total_size_limit(p: Parties) -> None:
    big = [EntrySource.from_bytes("documents/" + "cd" * 32, bytes(100_000))]
    data = plain_package(p, big)
    _refused(p, data, PackageLimitError, "over the limit", limits=Limits(max_total_bytes=50_000))
    _read(p, data, limits=Limits(max_total_bytes=len(data)))
    # A member whose tar header alone exceeds the limit is refused before its data is read.
    _, head = signed_members(p, big)
    out = io.BytesIO()
    writer = TarWriter(out)
    for m in head:
        writer.add(m.name, len(m.data), [m.data])
    header = tarfile.TarInfo(big[0].path)
    header.size = 10**9  # only the header claims a gigabyte: a short stream follows
    lying = out.getvalue() + header.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict") + bytes(4096)
    _refused(
        p,
        lying,
        PackageLimitError,
        "larger than the limit",
        limits=Limits(max_total_bytes=10**6),
        addressee=None,
    )
    assert issubclass(PackageLimitError, PolicyError)


def test_manifest_and_entry_count_limits(p: Parties) -> None:
    data = plain_package(p)
    _refused(p, data, PackageLimitError, "manifest is", limits=Limits(max_manifest_bytes=100))
    _refused(p, data, PackageLimitError, "entries", limits=Limits(max_entries=2))


# -------------------------------------------------------------------- writer


def test_writer_refuses_sources_that_do_not_match(p: Parties) -> None:
    good = sample_entries()
    manifest = make_manifest(p, good)
    from transfer.package.layout import sign_manifest

    data, sig = sign_manifest(manifest, p.sender.minisign_secret_key())
    for bad in (
        replace(good[2], opener=lambda: [bytes(good[2].size)]),
        replace(good[2], opener=lambda: [bytes(good[2].size + 1)]),
        replace(good[2], opener=lambda: [bytes(good[2].size - 1)]),
    ):
        with pytest.raises(EntryMismatchError, match="the package was not made"):
            write_package_tar(io.BytesIO(), manifest, data, sig, [*good[:2], bad])
    assert issubclass(EntryMismatchError, IntegrityError)


def test_tar_writer_and_reader_round_trip_large_sizes_via_pax() -> None:
    out = io.BytesIO()
    w = TarWriter(out)
    long_name = "documents/" + "a" * 150
    w.add(long_name, 3, [b"abc"])
    w.close()
    r = TarReader(io.BytesIO(out.getvalue()), max_total=10**6)
    member = r.next()
    assert member is not None and member.path == long_name and r.read_all() == b"abc"
    assert r.next() is None
    r.finish()


class _FullDisk(io.BytesIO):
    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.room:
            raise OSError(28, "No space left on device")
        return super().write(data)


@pytest.mark.parametrize("failure", ["too many bytes", "disk full"])
def test_an_entry_that_stops_half_way_closes_its_source_there_and_then(failure: str) -> None:
    """The source's own clean-up (for a stored document: closing its reader on the event
    loop) runs on the writing thread as the entry fails, not whenever and wherever the
    garbage collector finalises the abandoned generator."""
    closed: list[str] = []

    def source() -> Iterator[bytes]:
        try:
            for _ in range(4):
                yield b"x" * 1000
        finally:
            closed.append("closed")

    out = _FullDisk(2000) if failure == "disk full" else io.BytesIO()
    chunks = source()
    with pytest.raises((EntryMismatchError, OSError)):
        TarWriter(out).add("documents/a", 1500 if failure == "too many bytes" else 4000, chunks)
    assert closed == ["closed"]  # chunks is still referenced here: closed by add itself
