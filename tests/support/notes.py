"""Damaged signed notes for tests: a checkpoint whose signature has the wrong length."""

from __future__ import annotations

from transfer.audit.checkpoint import NoteSignature, parse_note


def with_signature_length(note: str, length: int) -> str:
    """``note`` with its first signature cut or padded to ``length`` bytes (key hash kept)."""
    parsed = parse_note(note)
    sig = parsed.signatures[0]
    blob = (sig.signature + bytes(length))[:length]
    return parsed.text + "\n" + NoteSignature(sig.name, sig.key_hash, blob).line()
