"""C2SP signed notes and checkpoints, checked against the Go reference implementation's example."""

from __future__ import annotations

import base64
import sys

import pytest

from tests.support.notes import with_signature_length
from transfer.audit import merkle
from transfer.audit.checkpoint import (
    Checkpoint,
    NoteError,
    NoteSignature,
    Signer,
    Verifier,
    open_note,
    parse_checkpoint,
    parse_checkpoint_text,
    parse_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)

# golang.org/x/mod sumdb/note/note_test.go (golang/mod): the PeterNeumann key pair
# and the note it signs. Ed25519 is deterministic, so we must produce it byte for byte.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n"
    + "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfq"
    + "dngotpRZb6KE6RyyBwJnAM=\n"
)


def test_go_reference_key_and_note_byte_for_byte() -> None:
    signer = Signer.from_skey(GO_SKEY)
    assert signer.verifier.vkey == GO_VKEY
    assert signer.verifier.key_hash.hex() == "c74f20a3"
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE
    opened = open_note(GO_NOTE, [Verifier.from_vkey(GO_VKEY)])
    assert opened.text == GO_TEXT
    assert opened.signatures[0].name == "PeterNeumann"


def test_go_note_altered_anywhere_is_refused() -> None:
    verifier = Verifier.from_vkey(GO_VKEY)
    altered = GO_NOTE.replace("cryptography", "cryptographY")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(altered, [verifier])


def test_mangled_verifier_keys_are_refused() -> None:
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a3+!!!!",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(NoteError):
            Verifier.from_vkey(bad)


def _signer(name: str = "example.org/audit") -> Signer:
    return Signer(name, bytes(range(32)))


def test_checkpoint_round_trip_and_format() -> None:
    signer = _signer()
    root = merkle.leaf_hash(b"x")
    note = sign_checkpoint(Checkpoint("example.org/audit", 42, root), signer)
    lines = note.split("\n")
    assert lines[:4] == ["example.org/audit", "42", base64.b64encode(root).decode(), ""]
    assert lines[4].startswith("\u2014 example.org/audit ")
    blob = base64.b64decode(lines[4].split(" ")[2])
    assert blob[:4] == signer.verifier.key_hash and len(blob) == 68
    cp = verify_checkpoint(note, Verifier.from_vkey(signer.verifier.vkey))
    assert (cp.origin, cp.size, cp.root) == ("example.org/audit", 42, root)


def test_checkpoint_signature_covers_every_field() -> None:
    signer = _signer()
    root = merkle.leaf_hash(b"x")
    note = sign_checkpoint(Checkpoint("example.org/audit", 42, root), signer)
    for altered in (
        note.replace("\n42\n", "\n43\n"),
        note.replace("example.org/audit\n", "example.org/audiT\n", 1),
        note.replace(base64.b64encode(root).decode(), base64.b64encode(bytes(32)).decode()),
    ):
        with pytest.raises(NoteError):
            verify_checkpoint(altered, signer.verifier)


def test_wrong_key_and_wrong_origin_are_refused() -> None:
    a, b = _signer(), Signer("example.org/audit", bytes(32))
    note = sign_checkpoint(Checkpoint("example.org/audit", 1, merkle.leaf_hash(b"")), a)
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        verify_checkpoint(note, b.verifier)
    other = Signer("other.org/audit", bytes(range(32)))
    note2 = sign_checkpoint(Checkpoint("example.org/audit", 1, merkle.leaf_hash(b"")), other)
    with pytest.raises(NoteError, match="is for the log"):
        verify_checkpoint(note2, other.verifier)


def test_unknown_extra_signatures_are_ignored_but_known_bad_ones_are_not() -> None:
    a, witness = _signer(), Signer("witness.example", bytes(32))
    text = Checkpoint("example.org/audit", 7, merkle.leaf_hash(b"")).text()
    note = sign_note(text, [a, witness])
    assert verify_checkpoint(note, a.verifier).size == 7
    forged = parse_note(note)
    line = forged.signatures[0].line()
    bad_line = line[:-6] + ("A" if line[-6] != "A" else "B") + line[-5:]
    with pytest.raises(NoteError):
        open_note(note.replace(line, bad_line), [a.verifier])


@pytest.mark.parametrize("length", [1, 63, 65, 128])
def test_a_signature_of_the_wrong_length_is_a_note_error_not_a_crash(length: int) -> None:
    # Issue 17, items 9 and 12: PyNaCl raised its own ValueError for a signature that is not
    # 64 bytes, past the verifier (a 500 at the peer route, a traceback in the CLI).
    a = _signer()
    note = with_signature_length(
        sign_checkpoint(Checkpoint("example.org/audit", 3, merkle.leaf_hash(b"")), a), length
    )
    with pytest.raises(NoteError, match="does not verify"):
        verify_checkpoint(note, a.verifier)
    with pytest.raises(NoteError, match=f"is {length} bytes, not the 64"):
        parse_checkpoint(note)
    sig = parse_note(note).signatures[0]
    assert a.verifier.verifies(parse_note(note).text, sig) is False


def test_parse_checkpoint_ignores_other_signers_lengths() -> None:
    a = _signer()
    text = Checkpoint("example.org/audit", 3, merkle.leaf_hash(b"")).text()
    other = NoteSignature("witness.example", b"\x01\x02\x03\x04", bytes(100))
    note = sign_note(text, [a]) + other.line()
    signed, checkpoint = parse_checkpoint(note)
    assert checkpoint.size == 3 and len(signed.signatures) == 2
    assert verify_checkpoint(note, a.verifier).size == 3


@pytest.mark.parametrize(
    "text",
    [
        "example.org/audit\n42\n",  # no root
        "example.org/audit\n042\nAAAA\n",  # leading zero
        "example.org/audit\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "example.org/audit\n1\n" + base64.b64encode(bytes(31)).decode() + "\n",
        "example.org/audit\n1\n" + base64.b64encode(bytes(32)).decode(),  # no newline
    ],
)
def test_malformed_checkpoint_bodies(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint_text(text)


@pytest.mark.parametrize(
    "note",
    [
        "",
        "text\n",
        "text\n\n",
        "text\n\n- name AAAA\n",
        "text\n\n\u2014 name !!!!\n",
        "a\n\nb\n\n\u2014 name " + base64.b64encode(bytes(68)).decode() + "\n",
    ],
)
def test_malformed_notes(note: str) -> None:
    with pytest.raises(NoteError):
        open_note(note, [_signer().verifier])


def test_pure_modules_import_neither_sqlalchemy_nor_aiohttp() -> None:
    import subprocess

    code = (
        "import sys, transfer.audit.merkle, transfer.audit.checkpoint, transfer.audit.entry;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('sqlalchemy','aiohttp')];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
