"""Unit tests of the age implementation in transfer.age (no outside tools)."""

from __future__ import annotations

import base64
import gc
import hashlib
import io
import os
import tarfile
import tracemalloc
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from keys import agekeys
from transfer.age import (
    CHUNK_SIZE,
    AgeArmorError,
    AgeError,
    AgeHeaderError,
    AgeHMACError,
    AgeKeyError,
    AgeNoMatchError,
    AgePayloadError,
    AgeReader,
    AgeWriter,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
    decrypt,
    decrypt_stream,
    encrypt,
    encrypt_stream,
    parse_identity,
    parse_recipient,
    read_identities_file,
    read_recipients_file,
)
from transfer.errors import HandoverError, InputError, IntegrityError

# From the CCTV "x25519" vector; the recipient was derived by Debian's `age-keygen -y`.
CCTV_IDENTITY = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 5]
TAG = 16
HEADER_END = b"\n--- "


@pytest.fixture(scope="module")
def key() -> X25519Identity:
    return X25519Identity.generate()


def header_length(blob: bytes) -> int:
    """Length of the header (through the MAC line) of a binary age file."""
    i = blob.index(HEADER_END)
    return blob.index(b"\n", i + 1) + 1


def payload_start(blob: bytes) -> int:
    return header_length(blob) + 16


# --- keys ---------------------------------------------------------------


def test_identity_string_round_trip(key: X25519Identity) -> None:
    text = key.to_string()
    assert text.startswith("AGE-SECRET-KEY-1") and text == text.upper()
    again = X25519Identity.from_string(text)
    assert again.to_string() == text
    assert again.recipient == key.recipient
    assert X25519Identity.from_private_bytes(key.private_bytes()).recipient == key.recipient


def test_recipient_string_round_trip(key: X25519Identity) -> None:
    text = key.recipient.to_string()
    assert text.startswith("age1") and text == text.lower()
    assert X25519Recipient.from_string(text) == key.recipient
    assert parse_recipient(f"  {text}\n") == key.recipient
    raw = key.recipient.public_bytes
    assert X25519Recipient.from_public_bytes(raw) == key.recipient


def test_known_identity_gives_known_recipient() -> None:
    ident = parse_identity(CCTV_IDENTITY)
    assert ident.to_string() == CCTV_IDENTITY
    assert ident.recipient.to_string() == (
        "age1xmwwc06ly3ee5rytxm9mflaz2u56jjj36s0mypdrwsvlul66mv4q47ryef"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "age1",
        "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
        "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN",
    ],
)
def test_bad_recipient_strings(text: str) -> None:
    with pytest.raises(AgeKeyError):
        parse_recipient(text)


def test_bad_identity_strings_never_echo_the_secret() -> None:
    damaged = CCTV_IDENTITY[:-1] + ("0" if CCTV_IDENTITY[-1] != "0" else "2")
    for text in [damaged, CCTV_IDENTITY.lower()[:-3], "AGE-SECRET-KEY-PQ-1XYZ", "age1abc"]:
        with pytest.raises(AgeKeyError) as info:
            parse_identity(text)
        assert text not in str(info.value)
        assert CCTV_IDENTITY[16:] not in str(info.value)
        assert "\n" not in str(info.value)


def test_repr_never_shows_secret(key: X25519Identity) -> None:
    assert key.to_string() not in repr(key)
    assert key.to_string()[16:30] not in repr(key)
    assert "hunter2" not in repr(ScryptIdentity(b"hunter2"))
    assert "hunter2" not in repr(ScryptRecipient(b"hunter2", log_n=10))


def test_read_identities_file(key: X25519Identity) -> None:
    other = X25519Identity.generate()
    text = (
        "# created: 2026-11-23T08:00:00Z\n"
        f"# public key: {key.recipient.to_string()}\n"
        f"{key.to_string()}\n"
        "\n"
        f"  {other.to_string()}  \r\n"
    )
    got = read_identities_file(text)
    assert [i.recipient for i in got] == [key.recipient, other.recipient]


def test_read_identities_file_errors() -> None:
    with pytest.raises(AgeKeyError, match="no identity"):
        read_identities_file("# only a comment\n\n")
    with pytest.raises(AgeKeyError, match="line 2") as info:
        read_identities_file(f"{CCTV_IDENTITY}\nAGE-SECRET-KEY-1NOTAKEY\n")
    assert "NOTAKEY" not in str(info.value)


def test_read_recipients_file(key: X25519Identity) -> None:
    got = read_recipients_file(f"# school\n{key.recipient.to_string()}\n")
    assert got == [key.recipient]
    with pytest.raises(AgeKeyError, match="line 1"):
        read_recipients_file("age1nope\n")


def test_error_hierarchy() -> None:
    for cls in (AgeHeaderError, AgeHMACError, AgeArmorError, AgePayloadError, AgeNoMatchError):
        assert issubclass(cls, AgeError)
        assert issubclass(cls, IntegrityError)
        assert issubclass(cls, HandoverError)
    # A bad key is the caller's input, not a damaged file; one class for the whole project.
    assert issubclass(AgeKeyError, InputError) and not issubclass(AgeKeyError, AgeError)
    assert AgeKeyError is agekeys.AgeKeyError
    assert AgeKeyError("x").exit_code == 2 and AgeKeyError("x").http_status == 400


# --- round trips and format ---------------------------------------------


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_sizes(key: X25519Identity, size: int, armor: bool) -> None:
    data = os.urandom(size)
    blob = encrypt(data, [key.recipient], armor=armor)
    assert decrypt(blob, [key]) == data
    if not armor:
        chunks = max(1, -(-size // CHUNK_SIZE))
        assert len(blob) == payload_start(blob) + size + TAG * chunks


def test_header_layout(key: X25519Identity) -> None:
    blob = encrypt(b"x", [key.recipient])
    lines = blob[: header_length(blob)].split(b"\n")
    assert lines[0] == b"age-encryption.org/v1"
    assert lines[1].startswith(b"-> X25519 ") and len(lines[1].split(b" ")) == 3
    assert len(lines[2]) == 43  # 32 bytes of wrapped key, unpadded base64
    assert lines[3].startswith(b"--- ") and len(lines[3]) == 4 + 43


def test_several_recipients_each_open(key: X25519Identity) -> None:
    others = [X25519Identity.generate() for _ in range(3)]
    blob = encrypt(b"for all of you", [key.recipient, *(o.recipient for o in others)])
    assert blob.count(b"\n-> X25519 ") == 4
    for ident in [key, *others]:
        assert decrypt(blob, [ident]) == b"for all of you"
    # An unrelated identity listed first does not get in the way.
    assert decrypt(blob, [X25519Identity.generate(), others[2]]) == b"for all of you"


def test_wrong_key_is_no_match(key: X25519Identity) -> None:
    blob = encrypt(b"secret", [key.recipient])
    with pytest.raises(AgeNoMatchError) as info:
        decrypt(blob, [X25519Identity.generate(), ScryptIdentity(b"pw")])
    assert str(info.value) == "this file is not encrypted to any of the given identities"


def test_scrypt_round_trip_and_wrong_passphrase() -> None:
    blob = encrypt(b"by passphrase", [ScryptRecipient(b"correct horse", log_n=10)])
    assert b"\n-> scrypt " in blob
    assert decrypt(blob, [ScryptIdentity(b"correct horse")]) == b"by passphrase"
    with pytest.raises(AgeNoMatchError):
        decrypt(blob, [ScryptIdentity(b"wrong horse")])
    with pytest.raises(AgeNoMatchError):
        decrypt(blob, [X25519Identity.generate()])


def test_scrypt_work_factor_limit() -> None:
    blob = encrypt(b"x", [ScryptRecipient(b"pw", log_n=12)])
    assert b" 12\n" in blob
    with pytest.raises(AgeHeaderError, match="work"):
        decrypt(blob, [ScryptIdentity(b"pw", max_log_n=11)])
    assert decrypt(blob, [ScryptIdentity(b"pw", max_log_n=12)]) == b"x"
    with pytest.raises(AgeKeyError):
        ScryptRecipient(b"pw", log_n=23)
    with pytest.raises(AgeKeyError):
        ScryptRecipient(b"", log_n=10)


def test_scrypt_must_be_alone(key: X25519Identity) -> None:
    with pytest.raises(AgeKeyError, match="only recipient"):
        encrypt(b"x", [ScryptRecipient(b"pw", log_n=10), key.recipient])


def test_no_recipients_or_identities(key: X25519Identity) -> None:
    with pytest.raises(AgeKeyError):
        encrypt(b"x", [])
    with pytest.raises(AgeKeyError):
        decrypt(encrypt(b"x", [key.recipient]), [])


def test_armor_format(key: X25519Identity) -> None:
    data = os.urandom(1000)
    text = encrypt(data, [key.recipient], armor=True)
    lines = text.decode("ascii").split("\n")
    assert lines[0] == "-----BEGIN AGE ENCRYPTED FILE-----"
    assert lines[-2] == "-----END AGE ENCRYPTED FILE-----" and lines[-1] == ""
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1]) and 0 < len(body[-1]) <= 64
    binary = base64.b64decode("".join(body), validate=True)
    assert binary.startswith(b"age-encryption.org/v1\n")
    assert base64.b64encode(binary).decode() == "".join(body)
    # The decoded bytes are a binary age file on their own.
    assert decrypt(binary, [key]) == data
    # CRLF line endings are accepted (as age does).
    assert decrypt(text.replace(b"\n", b"\r\n"), [key]) == data


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(b"-----END AGE ENCRYPTED FILE-----\n", b""),
        lambda t: t + b"garbage\n",
        lambda t: b"garbage\n" + t,
        lambda t: t.replace(b"\n", b" \n", 2),
        lambda t: t.lower(),
    ],
    ids=["no-end", "trailing", "leading", "space-eol", "lowercase"],
)
def test_bad_armor(key: X25519Identity, mangle: object) -> None:
    text = encrypt(b"armored", [key.recipient], armor=True)
    assert callable(mangle)
    with pytest.raises(AgeArmorError):
        decrypt(mangle(text), [key])


# --- tampering -----------------------------------------------------------


def test_header_mac_tamper(key: X25519Identity) -> None:
    blob = bytearray(encrypt(b"x" * 100, [key.recipient]))
    i = blob.index(HEADER_END) + 5
    blob[i] = ord("A") if blob[i] != ord("A") else ord("B")
    with pytest.raises((AgeHMACError, AgeHeaderError)):
        decrypt(bytes(blob), [key])


def test_grease_stanza_added_breaks_mac(key: X25519Identity) -> None:
    blob = encrypt(b"x", [key.recipient])
    forged = blob.replace(b"\n---", b"\n-> grease x\n\n---", 1)
    with pytest.raises(AgeHMACError):
        decrypt(forged, [key])


def test_payload_tamper_releases_only_verified_chunks(key: X25519Identity) -> None:
    data = os.urandom(3 * CHUNK_SIZE)
    blob = bytearray(encrypt(data, [key.recipient]))
    start = payload_start(bytes(blob))
    blob[start + (CHUNK_SIZE + TAG) + 10] ^= 1  # inside the second chunk
    reader = AgeReader(io.BytesIO(bytes(blob)), [key])
    released = bytearray()
    with pytest.raises(AgePayloadError, match="damaged or was altered"):
        while block := reader.read(5000):
            released += block
    assert bytes(released) == data[:CHUNK_SIZE]
    with pytest.raises(AgePayloadError):  # the error stays
        reader.read(1)


@pytest.mark.parametrize("cut", [1, TAG, CHUNK_SIZE + TAG, CHUNK_SIZE + TAG + 1])
def test_truncation(key: X25519Identity, cut: int) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 10)
    blob = encrypt(data, [key.recipient])
    with pytest.raises(AgePayloadError):
        decrypt(blob[:-cut], [key])


def test_truncation_at_full_chunk_boundary(key: X25519Identity) -> None:
    data = os.urandom(2 * CHUNK_SIZE)
    blob = encrypt(data, [key.recipient])
    # Cutting the last full chunk leaves a non-final full chunk at the end.
    with pytest.raises(AgePayloadError, match="truncated"):
        decrypt(blob[: -(CHUNK_SIZE + TAG)], [key])


def test_appended_data(key: X25519Identity) -> None:
    for size in (10, CHUNK_SIZE):
        blob = encrypt(os.urandom(size), [key.recipient])
        with pytest.raises(AgePayloadError):
            decrypt(blob + b"\x00", [key])


def test_swapped_chunks(key: X25519Identity) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 1)
    blob = encrypt(data, [key.recipient])
    s, c = payload_start(blob), CHUNK_SIZE + TAG
    swapped = blob[:s] + blob[s + c : s + 2 * c] + blob[s : s + c] + blob[s + 2 * c :]
    with pytest.raises(AgePayloadError):
        decrypt(swapped, [key])


def test_truncated_header(key: X25519Identity) -> None:
    blob = encrypt(b"x", [key.recipient])
    for cut in (5, header_length(blob) - 3, header_length(blob) + 8):
        with pytest.raises(AgeHeaderError):
            decrypt(blob[:cut], [key])


def test_hostile_long_lines_are_bounded(key: X25519Identity) -> None:
    with pytest.raises(AgeHeaderError, match="too long"):
        decrypt(b"age-encryption.org/v1\n-> " + b"a" * (1 << 21), [key])
    with pytest.raises(AgeArmorError, match="too long"):
        decrypt(b"-----BEGIN AGE ENCRYPTED FILE-----\n" + b"A" * (1 << 21), [key])


# --- the streaming objects -----------------------------------------------


def test_read_sizes_across_chunks(key: X25519Identity) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 123)
    reader = AgeReader(io.BytesIO(encrypt(data, [key.recipient])), [key])
    assert reader.readable()
    got = bytearray()
    for n in (1, 70_000, 0, 65_536, 50_000):
        part = reader.read(n)
        assert len(part) == n
        got += part
    got += reader.read()
    assert bytes(got) == data
    assert reader.read(10) == b""
    reader.close()
    with pytest.raises(ValueError):
        reader.read(1)


def test_writer_small_writes_and_close_keeps_dst_open(key: X25519Identity) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 77)
    dst = io.BytesIO()
    writer = AgeWriter(dst, [key.recipient])
    for i in range(0, len(data), 1000):
        assert writer.write(data[i : i + 1000]) == len(data[i : i + 1000])
    writer.close()
    writer.close()  # idempotent
    assert not dst.closed
    with pytest.raises(ValueError):
        writer.write(b"more")
    assert decrypt(dst.getvalue(), [key]) == data


@pytest.mark.parametrize(
    "pieces",
    [
        [CHUNK_SIZE - 536, 536],
        [CHUNK_SIZE, CHUNK_SIZE],
        [1, CHUNK_SIZE - 1, CHUNK_SIZE],
        [CHUNK_SIZE - 1, 1, 0, 5],
        [3 * CHUNK_SIZE],
    ],
)
def test_writer_chunking_at_boundaries(key: X25519Identity, pieces: list[int]) -> None:
    """However the writes fall, chunks are full and the last is never an empty extra one."""
    data = os.urandom(sum(pieces))
    dst = io.BytesIO()
    with AgeWriter(dst, [key.recipient]) as writer:
        at = 0
        for n in pieces:
            writer.write(data[at : at + n])
            at += n
    blob = dst.getvalue()
    chunks = max(1, -(-len(data) // CHUNK_SIZE))
    assert len(blob) == payload_start(blob) + len(data) + TAG * chunks
    assert decrypt(blob, [key]) == data


def test_writer_exception_leaves_file_unfinished(key: X25519Identity) -> None:
    dst = io.BytesIO()
    with pytest.raises(RuntimeError), AgeWriter(dst, [key.recipient]) as writer:
        writer.write(b"half a record")
        raise RuntimeError("disk full")
    with pytest.raises(AgePayloadError, match="truncated"):
        decrypt(dst.getvalue(), [key])


def test_writer_dropped_without_close_is_not_finished(key: X25519Identity) -> None:
    dst = io.BytesIO()
    writer = AgeWriter(dst, [key.recipient])
    writer.write(b"x" * 1000)
    del writer
    gc.collect()
    with pytest.raises(AgePayloadError, match="truncated"):
        decrypt(dst.getvalue(), [key])


def test_tarfile_streams_through(key: X25519Identity) -> None:
    big = os.urandom(200_000)
    dst = io.BytesIO()
    with AgeWriter(dst, [key.recipient], armor=True) as writer:
        with tarfile.open(fileobj=writer, mode="w|") as tar:
            for name, content in [("manifest.json", b"{}"), ("doc.bin", big)]:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    dst.seek(0)
    reader = AgeReader(dst, [key])
    assert reader.armored
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        got = {}
        for member in tar:
            fh = tar.extractfile(member)
            assert fh is not None
            got[member.name] = fh.read()
    assert got == {"manifest.json": b"{}", "doc.bin": big}


def test_stream_helpers(key: X25519Identity, tmp_path: Path) -> None:
    data = os.urandom(5 * CHUNK_SIZE + 3)
    (tmp_path / "plain").write_bytes(data)
    with (tmp_path / "plain").open("rb") as src, (tmp_path / "enc").open("wb") as dst:
        encrypt_stream(src, dst, [key.recipient])
    with (tmp_path / "enc").open("rb") as src, (tmp_path / "dec").open("wb") as dst:
        decrypt_stream(src, dst, [key])
    assert (tmp_path / "dec").read_bytes() == data


# --- memory ----------------------------------------------------------------


class _Sink(io.RawIOBase):
    """Hashes what it is given and keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        data = memoryview(b).cast("B")  # type: ignore[arg-type]
        self.hash.update(data)
        return len(data)


def _streamed_peak(key: X25519Identity, size: int, path: Path) -> int:
    """Peak traced memory while encrypting ``size`` bytes to a file and decrypting it back."""
    block = os.urandom(256 * 1024)
    tracemalloc.start()
    try:
        with path.open("wb") as dst, AgeWriter(dst, [key.recipient]) as writer:
            for i in range(0, size, len(block)):
                writer.write(block[: min(len(block), size - i)])
        sink = _Sink()
        with path.open("rb") as src:
            decrypt_stream(src, cast(BinaryIO, sink), [key])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = hashlib.sha256()
    for i in range(0, size, len(block)):
        expected.update(block[: min(len(block), size - i)])
    assert sink.hash.digest() == expected.digest()
    return peak


def test_memory_does_not_grow_with_size(key: X25519Identity, tmp_path: Path) -> None:
    small = _streamed_peak(key, 1_000_000, tmp_path / "small.age")
    large = _streamed_peak(key, 50_000_000, tmp_path / "large.age")
    assert large < 2 * 1024 * 1024, large
    assert large - small < 512 * 1024, (small, large)
