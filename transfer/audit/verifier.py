"""Verifying the audit log, its exports and checkpoints (pure: no database, no I/O).

Everything here takes bytes, entries, signed notes and keys and either returns a
result or raises :class:`TamperError` naming the first thing wrong:

- :class:`TreeChecker` streams stored rows (or an export's entries), re-hashes them
  into the Merkle tree and holds the tree to the checkpoints given;
- :func:`check_rows` is what verification's worker processes run over a chunk;
- :func:`verify_export_files` checks an auditor's export from the contents of its
  files (``transfer.audit.export.verify_export`` reads them from a directory);
- :func:`witness_problem` and :func:`recheck_witnessed` check counterparts'
  checkpoints and consistency proofs against the ones already held.

The database side (reading the rows, in worker processes on a large log) is
``transfer.audit.verification``; ``AuditLog.verify`` runs it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas import jsontext
from transfer.audit import merkle
from transfer.audit.checkpoint import Checkpoint, NoteError, Verifier, verify_checkpoint
from transfer.audit.entry import (
    COLUMNS,
    ZERO_HASH,
    Checked,
    Columns,
    EntryFormatError,
    Row,
    check_many,
    check_run,
    decode,
)
from transfer.errors import InputError, IntegrityError
from transfer.wording import plural


class TamperError(IntegrityError):
    """The stored log does not match itself or a checkpoint: something was altered."""

    #: "changed", "inserted", "removed", "reordered", "truncated", "rolled-back",
    #: "contradicted", "head" or "checkpoint".
    kind: str = "changed"

    def __init__(
        self, kind: str, message: str, *, seq: int | None = None, column: str | None = None
    ) -> None:
        super().__init__(message, detail={"kind": kind, "seq": seq})
        self.kind = kind
        self.seq = seq
        #: The search column found changed (``pupil``, ``at``...), when that is what is wrong.
        self.column = column


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def own_checkpoint(note: str, verifier: Verifier, source: str) -> Checkpoint:
    """The checkpoint in ``note``, which must be signed by this log's key (``source`` names
    where it came from, for the error)."""
    try:
        return verify_checkpoint(note, verifier)
    except NoteError as exc:
        raise TamperError(
            "checkpoint", f"{source} is not a valid checkpoint of this log: {exc.message}"
        ) from None


# ------------------------------------------------------------------ search columns


def first_difference(entry: Columns, stored: Columns) -> str | None:
    """The first of :data:`COLUMNS` whose stored value differs from the entry's."""
    for name, said, held in zip(COLUMNS, entry, stored, strict=True):
        if name == "at":
            if (
                not isinstance(held, datetime)
                or (held if held.tzinfo else held.replace(tzinfo=UTC)) != said
            ):
                return name
        elif held != said:
            return name
    return None


def column_changed(seq: int, column: str) -> TamperError:
    return TamperError(
        "changed",
        f"entry #{seq}'s {column!r} column was changed: it no longer says what the entry says, "
        f"so searching the log by {column} (audit show) would miss or misplace it",
        seq=seq,
        column=column,
    )


# ------------------------------------------------------------------ witnessing


def witness_problem(
    cp: Checkpoint, held: Sequence[tuple[int, bytes]], since: int | None, proof: Sequence[bytes]
) -> str | None:
    """What contradicts ``cp`` among the ``(size, root)`` pairs held from its log and
    the consistency ``proof`` from size ``since`` it came with (None: nothing)."""
    for size, root in held:
        if size == cp.size and root != cp.root:
            return f"a different root for size {size}"
    if proof:
        if since is None:
            return "a consistency proof without the size it starts from"
        old = [root for size, root in held if size == since]
        if not old:
            return f"a consistency proof from size {since}, which we do not hold"
        try:
            merkle.verify_consistency(since, cp.size, old[0], cp.root, proof)
        except merkle.ProofError as exc:
            return f"the consistency proof from size {since} fails ({exc.message})"
    return None


def recheck_witnessed(rows: Sequence[dict[str, Any]]) -> None:
    """Re-check counterparts' checkpoints: signatures, equal sizes, stored proofs."""
    by_origin: dict[str, dict[int, bytes]] = {}
    for w in rows:
        src = f"the checkpoint from {w['from_org']} (log {w['origin']}, size {w['size']})"
        try:
            cp = verify_checkpoint(w["note"], Verifier.from_vkey(w["vkey"]))
        except NoteError as exc:
            raise TamperError("checkpoint", f"{src} was altered: {exc.message}") from None
        if cp.size != int(w["size"]) or cp.root != bytes(w["root"]) or cp.origin != w["origin"]:
            raise TamperError("checkpoint", f"{src} no longer matches its stored size or root")
        seen = by_origin.setdefault(cp.origin, {})
        if w["status"] != "conflict":
            if cp.size in seen and seen[cp.size] != cp.root:
                raise TamperError("contradicted", f"{src} contradicts another we hold")
            if w["proof"]:
                prev = seen.get(int(w["prev_size"]))
                proof = [unb64(p) for p in json.loads(w["proof"])]
                try:
                    if prev is None:
                        raise merkle.ProofError("the checkpoint it extends is gone")
                    merkle.verify_consistency(int(w["prev_size"]), cp.size, prev, cp.root, proof)
                except merkle.ProofError as exc:
                    raise TamperError("contradicted", f"{src}: {exc.message}") from None
            seen[cp.size] = cp.root


# ------------------------------------------------------------------ the tree


@dataclass(frozen=True)
class Chunk:
    """A chunk of rows as a worker checked it: a clean run (``run``: the first row's
    ``prev`` and every leaf hash), or each row ``(row seq, checked, stored leaf)``."""

    first: int
    run: tuple[bytes, list[bytes]] | None
    rows: list[tuple[int, Checked, bytes]]


def check_rows(rows: list[Row], detail: bool = False) -> Chunk:
    """:func:`check_run` over ``rows`` (in a worker process); ``detail``: row by row."""
    first = rows[0][0] if rows else 0
    result = check_many([r[1] for r in rows], [r[3:] for r in rows]) if detail else check_run(rows)
    if isinstance(result, tuple):
        return Chunk(first, result, [])
    return Chunk(first, None, [(r[0], c, r[2]) for r, c in zip(rows, result, strict=True)])


class TreeChecker:
    """Streams stored rows, re-hashes them and names the first thing wrong (pure).

    ``targets`` are checkpoints of this log to hold the recomputed tree to.
    """

    def __init__(self, targets: Sequence[tuple[Checkpoint, str]] = ()) -> None:
        self._targets: dict[int, list[tuple[Checkpoint, str]]] = {}
        for cp, src in targets:
            self._targets.setdefault(cp.size, []).append((cp, src))
        self._tree = merkle.CompactRange()
        self._expected = 0
        self.last = ZERO_HASH
        self._gap: tuple[int, int, int] | None = None  # (first missing, seq found, row)
        self._later: set[int] = set()
        #: The first entry whose search columns disagree with it, and which column: reported
        #: by :meth:`check_columns`, after anything wrong with the entries themselves.
        self.column_problem: tuple[int, str] | None = None
        self._check_targets()

    def _check_targets(self) -> None:
        for cp, src in self._targets.get(self._tree.size, ()):
            if self._tree.root() != cp.root:
                raise TamperError(
                    "contradicted",
                    f"the log contradicts {src} (size {cp.size}): its first "
                    f"{plural(cp.size, 'entry')} "
                    "are not the ones that were signed (changed, or rolled back and rewritten)",
                    seq=cp.size,
                )

    def add(self, row: int, body: bytes, stored_leaf: bytes) -> None:
        self.add_checked(row, check_many([body])[0], stored_leaf)

    def add_run(self, first: int, first_prev: bytes, leaves: list[bytes]) -> bool:
        """Take a run of rows :func:`check_run` found clean; False if it does not follow on."""
        if self._gap is not None or first != self._expected or first_prev != self.last:
            return False
        tree, targets = self._tree, self._targets
        end = tree.size + len(leaves)
        if any(tree.size < size <= end for size in targets):
            for leaf in leaves:
                tree.push(leaf)
                if tree.size in targets:
                    self._check_targets()
        else:
            push = tree.push
            for leaf in leaves:
                push(leaf)
        self._expected += len(leaves)
        self.last = leaves[-1]
        return True

    def add_checked(self, row: int, checked: Checked, stored_leaf: bytes) -> None:
        """Take one row whose body was already parsed and hashed by :func:`check_many`."""
        if self._gap is not None:
            if not isinstance(checked, str):
                self._later.add(checked[0])
            return
        if row < 0:
            raise TamperError(
                "inserted", f"a row with the impossible sequence number {row} was inserted", seq=row
            )
        if isinstance(checked, str):
            raise TamperError(
                "changed", f"entry #{row} was changed: its stored bytes are {checked}", seq=row
            )
        s, prev, leaf, column = checked
        if s == self._expected:
            if leaf != stored_leaf:
                raise TamperError(
                    "changed",
                    f"entry #{s} was changed: it no longer matches the hash recorded when it "
                    "was appended",
                    seq=s,
                )
            if prev != self.last:
                raise TamperError(
                    "changed",
                    f"entry #{s - 1} was changed: entry #{s} links to a different hash",
                    seq=s - 1,
                )
            if row != s:
                raise TamperError(
                    "reordered", f"entry #{s} was moved: it is stored as row {row}", seq=s
                )
            if column is not None and self.column_problem is None:
                self.column_problem = (s, column)
            self._tree.push(leaf)
            self._expected += 1
            self.last = leaf
            self._check_targets()
        elif s < self._expected:
            raise TamperError(
                "inserted",
                f"an entry was inserted at row {row}: it claims to be entry #{s}, "
                f"which the log already holds",
                seq=s,
            )
        else:
            self._gap = (self._expected, s, row)

    def finish(self) -> int:
        if self._gap is not None:
            missing, found, row = self._gap
            if missing in self._later:
                raise TamperError(
                    "reordered",
                    f"the entries were reordered: entry #{found} is stored at row {row}, "
                    f"before entry #{missing}",
                    seq=missing,
                )
            upto = found - 1
            what = (
                f"entry #{missing} was"
                if upto == missing
                else f"entries #{missing} to #{upto} were"
            )
            raise TamperError("removed", f"{what} removed: the log jumps to #{found}", seq=missing)
        return self._tree.size

    def check_columns(self) -> None:
        """Raise for the first entry whose search columns were edited (see ``column_problem``)."""
        if self.column_problem is not None:
            raise column_changed(*self.column_problem)

    def check_beyond(self) -> None:
        """Every checkpoint larger than the log means it was truncated or rolled back."""
        count = self._tree.size
        for size, cps in sorted(self._targets.items()):
            if size > count:
                _, src = cps[0]
                raise TamperError(
                    "rolled-back",
                    f"the log was truncated or rolled back: {src} was signed at size {size} "
                    f"but the log holds only {plural(count, 'entry')}",
                    seq=count,
                )

    def root(self) -> bytes:
        return self._tree.root()


# ------------------------------------------------------------------ exports


@dataclass(frozen=True)
class ExportSummary:
    size: int
    entries: int
    complete: bool
    checkpoints: int


def verify_export_files(
    *,
    log_vkey: str,
    checkpoint_note: str,
    proofs_json: str,
    earlier: Sequence[tuple[str, str]],
    entries: bytes,
    vkey: str | None = None,
) -> ExportSummary:
    """Check an export from its files' contents and the log's public key; raise if anything
    fails (the layout is in ``transfer.audit.export``).

    ``log_vkey``, ``checkpoint_note``, ``proofs_json`` and ``entries`` are the files
    ``log.vkey``, ``checkpoint.note``, ``proofs.json`` and ``entries.jsonl``; ``earlier``
    holds each ``checkpoints/<size>.note`` as ``(file name, text)``, in name order.
    ``vkey`` is the key the auditor obtained independently; when given, the export's
    ``log.vkey`` must be the same key.
    """
    in_export = log_vkey.strip()
    if vkey is not None and vkey.strip() != in_export:
        raise TamperError("checkpoint", "the export's log.vkey is not the key you gave")
    try:
        verifier = Verifier.from_vkey(vkey.strip() if vkey else in_export)
        latest = verify_checkpoint(checkpoint_note, verifier)
    except NoteError as exc:
        raise TamperError("checkpoint", f"checkpoint.note: {exc.message}") from None
    try:
        proofs = jsontext.loads(proofs_json)
        size = int(proofs["size"])
        complete = bool(proofs["complete"])
        inclusion: dict[str, list[str]] = proofs["inclusion"]
        consistency: dict[str, list[str]] = proofs["consistency"]
    except (ValueError, KeyError, TypeError):
        raise InputError("proofs.json is not a valid proofs file") from None
    if size != latest.size:
        raise TamperError("checkpoint", "proofs.json is for a different size than checkpoint.note")
    targets = [(latest, "checkpoint.note")]
    for name, text in earlier:
        src = f"checkpoints/{name}"
        try:
            cp = verify_checkpoint(text, verifier)
            merkle.verify_consistency(
                cp.size, size, cp.root, latest.root, [unb64(h) for h in consistency[str(cp.size)]]
            )
        except (NoteError, KeyError) as exc:
            raise TamperError("checkpoint", f"{src} does not check: {exc}") from None
        except merkle.ProofError as exc:
            raise TamperError(
                "contradicted", f"{src} is not consistent with checkpoint.note: {exc.message}"
            ) from None
        targets.append((cp, src))
    lines = entries.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if complete:
        checker = TreeChecker(targets)
        for row, body in enumerate(lines):
            checker.add(row, body, merkle.leaf_hash(body))
        count = checker.finish()
        checker.check_beyond()
        if count != size:
            raise TamperError("inserted", f"the export holds {plural(count, 'entry')}, not {size}")
    else:
        for body in lines:
            try:
                seq = decode(body).seq
                proof = [unb64(h) for h in inclusion[str(seq)]]
            except (EntryFormatError, KeyError):
                raise TamperError(
                    "changed", "an entry in entries.jsonl has no valid proof"
                ) from None
            try:
                merkle.verify_inclusion(seq, size, merkle.leaf_hash(body), proof, latest.root)
            except merkle.ProofError:
                raise TamperError(
                    "changed", f"entry #{seq} in the export is not the one the log signed", seq=seq
                ) from None
        count = len(lines)
    return ExportSummary(size, count, complete, len(targets))
