"""An auditor's export of the log, and its verifier (which needs no database).

Layout of an export directory::

    log.vkey            the log's verifier key (<name>+<hash>+<base64 key>)
    checkpoint.note     the checkpoint everything is proved against (size N)
    checkpoints/        every earlier checkpoint the log signed, <size>.note
    entries.jsonl       canonical entry bytes, one per line
    proofs.json         {"size": N, "complete": bool,
                         "inclusion": {seq: [base64 hash, ...]},   (partial exports)
                         "consistency": {size: [base64 hash, ...]}} (each earlier checkpoint)

A complete export holds entries 0..N-1 and is checked by re-hashing them all;
a partial one (filtered) holds some entries, each with an inclusion proof.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transfer.audit.verifier import ExportSummary, b64, verify_export_files
from transfer.errors import InputError
from transfer.store.exports import ArchiveFile, archive_stream, in_memory

if TYPE_CHECKING:  # verifying an export needs no database
    from transfer.audit.log import AuditLog

MAX_INCLUSION_EXPORT = 100_000


@dataclass(frozen=True)
class ExportParts:
    """An export before it is written: its files in order (each read when its turn
    comes), and what it holds."""

    files: list[ArchiveFile]
    summary: ExportSummary


async def export_parts(log: AuditLog, *, filters: dict[str, Any] | None = None) -> ExportParts:
    """The files of an export of ``log`` (the layout above), for a directory or a stream.

    A complete export's ``entries.jsonl`` is read from the database twice (its size
    first, a tar member needs it up front; then its bytes while it is sent): entries
    below the checkpoint's size never change, and a log that did is refused when the
    bytes do not add up. A filtered export's entries (at most
    :data:`MAX_INCLUSION_EXPORT`) and every proof are held in memory.
    """
    latest = await log.checkpoint()
    size = latest.size
    verifier = await log.verifier()
    files = [
        in_memory("log.vkey", (verifier.vkey + "\n").encode()),
        in_memory("checkpoint.note", latest.note.encode()),
    ]
    consistency: dict[str, list[str]] = {}
    earlier = {cp.size: cp for cp in await log.checkpoints() if 0 < cp.size < size}
    for cp_size, cp in sorted(earlier.items()):
        files.append(in_memory(f"checkpoints/{cp_size}.note", cp.note.encode()))
        consistency[str(cp_size)] = [b64(h) for h in await log.consistency_proof(cp_size, size)]
    inclusion: dict[str, list[str]] = {}
    if filters:
        shown = [s for s in await log.show(**filters) if s.seq < size]
        if len(shown) > MAX_INCLUSION_EXPORT:
            raise InputError("too many entries for a filtered export; narrow the filters")
        lines = bytearray()
        for s in shown:
            body, _ = await log.entry(s.seq)
            lines += body + b"\n"
            inclusion[str(s.seq)] = [b64(h) for h in await log.inclusion_proof(s.seq, size)]
        files.append(in_memory("entries.jsonl", bytes(lines)))
        count = len(shown)
    else:
        total = 0
        async for rows in log.iter_chunks(below=size):
            total += sum(len(body) + 1 for _, body, _ in rows)

        async def entries() -> AsyncIterator[bytes]:
            async for rows in log.iter_chunks(below=size):
                yield b"".join(body + b"\n" for _, body, _ in rows)

        files.append(ArchiveFile("entries.jsonl", total, entries))
        count = size
    proofs = {
        "size": size,
        "complete": not filters,
        "inclusion": inclusion,
        "consistency": consistency,
    }
    files.append(in_memory("proofs.json", json.dumps(proofs, indent=1).encode()))
    return ExportParts(files, ExportSummary(size, count, not filters, len(earlier) + 1))


async def write_export(
    log: AuditLog, out: Path, *, filters: dict[str, Any] | None = None
) -> ExportSummary:
    """Write an export of ``log`` into the (new or empty) directory ``out``."""
    _prepare(out)
    parts = await export_parts(log, filters=filters)
    for item in parts.files:
        with (out / item.path).open("wb") as f:
            async for chunk in item.read():
                f.write(chunk)
    return parts.summary


def export_stream(parts: ExportParts, name: str, *, mtime: int = 0) -> AsyncIterator[bytes]:
    """The export as a tar stream (every file under the folder ``name``), built while it
    is sent: nothing of it is written on the node."""
    return archive_stream(name, parts.files, mtime=mtime)


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty; choose a new directory for the export")
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None


def verify_export(directory: Path, vkey: str | None = None) -> ExportSummary:
    """Check an export using only its files and the log's public key; raise if anything fails.

    ``vkey`` is the key the auditor obtained independently; when given, the
    export's ``log.vkey`` must be the same key. The checking itself is
    :func:`transfer.audit.verifier.verify_export_files` (pure).
    """
    return verify_export_files(
        log_vkey=_read(directory / "log.vkey"),
        checkpoint_note=_read(directory / "checkpoint.note"),
        proofs_json=_read(directory / "proofs.json"),
        earlier=[(p.name, _read(p)) for p in sorted((directory / "checkpoints").glob("*.note"))],
        entries=(directory / "entries.jsonl").read_bytes(),
        vkey=vkey,
    )
