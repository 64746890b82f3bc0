"""The minisign format: our own signatures, and fixed vectors made by Debian's minisign 0.11."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from nacl.signing import SigningKey, VerifyKey

from keys import minisign
from keys.minisign import (
    KeyMismatchError,
    MinisignFormatError,
    PublicKey,
    SecretKey,
    Signature,
    SignatureError,
)
from transfer.errors import HandoverError, InputError, IntegrityError

# Made with: minisign -G -W -p pk -s sk; minisign -S -s sk -m msg -t "..."
# (and -l for the legacy one). Not produced by this code.
VECTOR_PK = (
    "untrusted comment: minisign public key 23BF69CCE43C3CD1\n"
    "RWTRPDzkzGm/IyVkKxlh7G+yuhh+YhFdC8IpI8w1Nu2rvIuRKbUzBY2d\n"
)
VECTOR_MSG = b"Handover minisign test vector\n"
VECTOR_SIG = (
    "untrusted comment: signature from minisign secret key\n"
    "RUTRPDzkzGm/I62FOdBFSCCoNVZypO+9KTB8PWR35j5yNzsX1EOcpP/tD8eUrqhlfYVGOGtOlUbxpmmGI9IV8z3AumGVNZChVAk=\n"
    "trusted comment: handover-test-vector-v1 made by minisign 0.11\n"
    "G2715+zLwcVvwrlWilDHmHzx2ExP55scJXN7yFTUf5viebrzl7mhY15eGoY+HDBZUwPtevoWjqH6bUAvwB5GAg==\n"
)
VECTOR_LEGACY_SIG = (
    "untrusted comment: signature from minisign secret key\n"
    "RWTRPDzkzGm/I75zMY8mZA2fXgZ2fZWlOyjZBu24RIgjlqymZ6/ZM1xv50e//4v8V2AhvD/C1oIP7nWnYdGtb6GfxvwS4S4VdA8=\n"
    "trusted comment: legacy vector\n"
    "LVm6krVDIWPa1t9mIf7NfOnGH8TgPbVh33yWTElJlzt+dsjniMI4sA5BVrgO43XE/sA+cwvdjS8zmvMWhsffDA==\n"
)


@pytest.fixture
def secret() -> SecretKey:
    return SecretKey.generate()


def _lines(sig_text: str) -> list[str]:
    return sig_text.rstrip("\n").split("\n")


# ------------------------------------------------------------ fixed vectors


def test_vector_from_minisign_verifies() -> None:
    pk = PublicKey.from_text(VECTOR_PK)
    assert pk.key_id_hex == "23BF69CCE43C3CD1"
    result = minisign.verify(pk, VECTOR_MSG, VECTOR_SIG)
    assert result.trusted_comment == "handover-test-vector-v1 made by minisign 0.11"
    assert result.prehashed is True
    assert result.key_id_hex == "23BF69CCE43C3CD1"
    assert result.require_context("handover-test-vector-v1") == "made by minisign 0.11"


def test_vector_with_altered_message_is_refused() -> None:
    pk = PublicKey.from_text(VECTOR_PK)
    with pytest.raises(SignatureError, match="does not match its signature"):
        minisign.verify(pk, VECTOR_MSG + b"x", VECTOR_SIG)
    with pytest.raises(SignatureError, match="does not match its signature"):
        minisign.verify(pk, b"", VECTOR_SIG)


def test_vector_with_altered_trusted_comment_is_refused() -> None:
    pk = PublicKey.from_text(VECTOR_PK)
    forged = VECTOR_SIG.replace("minisign 0.11", "minisign 0.12")
    with pytest.raises(SignatureError, match="trusted comment was altered"):
        minisign.verify(pk, VECTOR_MSG, forged)


def test_untrusted_comment_is_not_signed() -> None:
    pk = PublicKey.from_text(VECTOR_PK)
    changed = VECTOR_SIG.replace("signature from minisign secret key", "anything at all")
    assert minisign.verify(pk, VECTOR_MSG, changed).trusted_comment.startswith("handover-")


def test_legacy_vector_refused_unless_allowed() -> None:
    pk = PublicKey.from_text(VECTOR_PK)
    with pytest.raises(SignatureError, match="legacy"):
        minisign.verify(pk, VECTOR_MSG, VECTOR_LEGACY_SIG)
    with pytest.raises(SignatureError, match="legacy"):
        minisign.verify_stream(pk, [VECTOR_MSG], VECTOR_LEGACY_SIG)
    ok = minisign.verify(pk, VECTOR_MSG, VECTOR_LEGACY_SIG, allow_legacy=True)
    assert ok.prehashed is False
    assert ok.trusted_comment == "legacy vector"
    with pytest.raises(SignatureError, match="does not match"):
        minisign.verify(pk, VECTOR_MSG + b"!", VECTOR_LEGACY_SIG, allow_legacy=True)


# ------------------------------------------------------- our own signatures


def test_signature_layout_checked_independently(secret: SecretKey) -> None:
    """Check the bytes with plain PyNaCl and hashlib, not with our verifier."""
    message = b"manifest bytes"
    text = minisign.sign(secret, message, trusted_comment="handover-manifest-v1 id=1")
    lines = _lines(text)
    assert len(lines) == 4 and text.endswith("\n")
    assert lines[0] == f"untrusted comment: signature from handover key {secret.key_id_hex}"
    assert lines[2] == "trusted comment: handover-manifest-v1 id=1"
    raw = base64.b64decode(lines[1])
    assert raw[:2] == b"ED"
    assert raw[2:10] == secret.key_id
    sig = raw[10:]
    vk = VerifyKey(secret.public_key.key)
    vk.verify(hashlib.blake2b(message, digest_size=64).digest(), sig)
    vk.verify(sig + b"handover-manifest-v1 id=1", base64.b64decode(lines[3]))


def test_round_trip_and_context(secret: SecretKey) -> None:
    text = minisign.sign(secret, b"abc", trusted_comment="handover-receipt-v1 pkg=7")
    result = minisign.verify(secret.public_key, b"abc", text)
    assert result.trusted_comment == "handover-receipt-v1 pkg=7"
    assert result.require_context("handover-receipt-v1") == "pkg=7"
    with pytest.raises(SignatureError, match="another purpose"):
        result.require_context("handover-manifest-v1")
    with pytest.raises(SignatureError, match="another purpose"):
        result.require_context("handover-receipt")  # a prefix of the word is not the context


def test_empty_message_and_bytes_signature(secret: SecretKey) -> None:
    text = minisign.sign(secret, b"", trusted_comment="t")
    assert minisign.verify(secret.public_key, b"", text.encode()).trusted_comment == "t"
    with pytest.raises(SignatureError):
        minisign.verify(secret.public_key, b"\x00", text)


def test_tampered_message_refused(secret: SecretKey) -> None:
    text = minisign.sign(secret, b"hello world", trusted_comment="c")
    with pytest.raises(SignatureError, match="altered"):
        minisign.verify(secret.public_key, b"hello worle", text)


def test_tampered_trusted_comment_refused(secret: SecretKey) -> None:
    text = minisign.sign(secret, b"m", trusted_comment="handover-manifest-v1 to=A")
    forged = text.replace("to=A", "to=B")
    with pytest.raises(SignatureError, match="trusted comment"):
        minisign.verify(secret.public_key, b"m", forged)


def test_tampered_signature_bytes_refused(secret: SecretKey) -> None:
    text = minisign.sign(secret, b"m", trusted_comment="c")
    lines = _lines(text)
    raw = bytearray(base64.b64decode(lines[1]))
    raw[20] ^= 1
    lines[1] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SignatureError):
        minisign.verify(secret.public_key, b"m", "\n".join(lines) + "\n")
    lines = _lines(text)
    glob = bytearray(base64.b64decode(lines[3]))
    glob[0] ^= 0x80
    lines[3] = base64.b64encode(bytes(glob)).decode()
    with pytest.raises(SignatureError, match="trusted comment"):
        minisign.verify(secret.public_key, b"m", "\n".join(lines) + "\n")


def test_wrong_key_refused(secret: SecretKey) -> None:
    text = minisign.sign(secret, b"m", trusted_comment="c")
    other = SecretKey.generate()
    with pytest.raises(KeyMismatchError, match=other.key_id_hex):
        minisign.verify(other.public_key, b"m", text)
    # Same key id, different key: refused by the signature itself.
    impostor = PublicKey(key_id=secret.key_id, key=other.public_key.key)
    with pytest.raises(SignatureError, match="does not match"):
        minisign.verify(impostor, b"m", text)


def test_errors_are_handover_errors(secret: SecretKey) -> None:
    assert issubclass(SignatureError, IntegrityError)
    assert issubclass(KeyMismatchError, SignatureError)
    assert issubclass(MinisignFormatError, InputError)
    text = minisign.sign(secret, b"m", trusted_comment="c")
    with pytest.raises(HandoverError) as info:
        minisign.verify(secret.public_key, b"n", text)
    assert "\n" not in str(info.value)


def test_streaming_equals_one_shot(secret: SecretKey, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    chunks = [data[i : i + 7777] for i in range(0, len(data), 7777)]
    streamed = minisign.sign_stream(secret, chunks, trusted_comment="s")
    one_shot = minisign.sign(secret, data, trusted_comment="s")
    assert streamed == one_shot  # Ed25519 is deterministic
    assert minisign.verify(secret.public_key, data, streamed).trusted_comment == "s"
    assert minisign.verify_stream(secret.public_key, iter(chunks), one_shot)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert minisign.sign_file(secret, path, trusted_comment="s") == one_shot
    minisign.verify_file(secret.public_key, path, one_shot)
    path.write_bytes(data[:-1] + b"\x00")
    with pytest.raises(SignatureError):
        minisign.verify_file(secret.public_key, path, one_shot)
    h = minisign.new_prehash()
    for c in chunks:
        h.update(c)
    assert minisign.verify_prehashed(secret.public_key, h.digest(), one_shot).prehashed


def test_comment_rules(secret: SecretKey) -> None:
    with pytest.raises(InputError, match="single line"):
        minisign.sign(secret, b"m", trusted_comment="a\nb")
    with pytest.raises(InputError, match="single line"):
        minisign.sign(secret, b"m", trusted_comment="c", untrusted_comment="x\r")
    with pytest.raises(InputError, match="longer than"):
        minisign.sign(secret, b"m", trusted_comment="x" * (minisign.MAX_TRUSTED_COMMENT_BYTES + 1))
    long_ok = "y" * minisign.MAX_TRUSTED_COMMENT_BYTES
    text = minisign.sign(secret, b"m", trusted_comment=long_ok)
    assert minisign.verify(secret.public_key, b"m", text).trusted_comment == long_ok
    unicode_tc = "handover-manifest-v1 school=Sainte-Bénédicte ✓"
    text = minisign.sign(secret, b"m", trusted_comment=unicode_tc, untrusted_comment="")
    assert minisign.verify(secret.public_key, b"m", text).trusted_comment == unicode_tc


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda t: "\n".join(_lines(t)[:3]), "four lines"),
        (lambda t: t + "extra\n", "four lines"),
        (lambda t: t.replace("untrusted comment: ", "comment: "), "first line"),
        (lambda t: t.replace("trusted comment: c", "trusted: c"), "third line"),
        (lambda t: t.replace(_lines(t)[1], "!!!notbase64"), "base64"),
        (lambda t: t.replace(_lines(t)[1], _lines(t)[1][:-8]), "base64|wrong length"),
        (lambda t: t.replace(_lines(t)[3], base64.b64encode(b"x" * 63).decode()), "wrong length"),
    ],
)
def test_malformed_signature_files(secret: SecretKey, mangle: object, match: str) -> None:
    text = minisign.sign(secret, b"m", trusted_comment="c")
    assert callable(mangle)
    with pytest.raises(MinisignFormatError, match=match):
        minisign.verify(secret.public_key, b"m", mangle(text))


def test_unknown_algorithm_refused(secret: SecretKey) -> None:
    text = minisign.sign(secret, b"m", trusted_comment="c")
    lines = _lines(text)
    raw = base64.b64decode(lines[1])
    lines[1] = base64.b64encode(b"XX" + raw[2:]).decode()
    with pytest.raises(MinisignFormatError, match="unknown algorithm"):
        Signature.from_text("\n".join(lines))


def test_crlf_signature_accepted(secret: SecretKey) -> None:
    text = minisign.sign(secret, b"m", trusted_comment="c")
    assert minisign.verify(secret.public_key, b"m", text.replace("\n", "\r\n"))


def test_public_key_file_round_trip(secret: SecretKey) -> None:
    pk = secret.public_key
    text = pk.to_text()
    first, second = text.rstrip("\n").split("\n")
    assert first == f"untrusted comment: minisign public key {pk.key_id_hex}"
    raw = base64.b64decode(second)
    assert raw == b"Ed" + secret.key_id + bytes(SigningKey(secret.seed).verify_key)
    # minisign shows the little-endian key id
    assert pk.key_id_hex == secret.key_id[::-1].hex().upper()
    assert PublicKey.from_text(text) == pk
    assert PublicKey.from_text(text.encode()) == pk
    assert PublicKey.from_base64(pk.to_base64()) == pk
    assert PublicKey.from_text(pk.to_base64()) == pk
    assert pk.matches(PublicKey.from_text(text))
    assert not pk.matches(SecretKey.generate().public_key)


def test_bad_public_keys() -> None:
    good = base64.b64decode(VECTOR_PK.split("\n")[1])
    with pytest.raises(MinisignFormatError, match="not an Ed25519"):
        PublicKey.from_base64(base64.b64encode(b"XX" + good[2:]).decode())
    with pytest.raises(MinisignFormatError, match="wrong length"):
        PublicKey.from_base64(base64.b64encode(good[:-1]).decode())
    with pytest.raises(MinisignFormatError, match="base64"):
        PublicKey.from_base64("not base64 at all")
    with pytest.raises(MinisignFormatError, match="one comment line"):
        PublicKey.from_text("untrusted comment: x\n")


def test_secret_never_in_repr(secret: SecretKey) -> None:
    assert secret.seed.hex() not in repr(secret)
    assert repr(secret.seed) not in repr(secret)
