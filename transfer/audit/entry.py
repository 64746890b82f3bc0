"""The canonical encoding of one audit entry (pure).

An entry is a JSON object encoded with sorted keys, no whitespace
(``separators=(",", ":")``), non-ASCII characters as UTF-8 (``ensure_ascii=False``)
and no floats. Its fields::

    v           1 (the encoding version)
    seq         its 0-based position in the log
    prev        hex of the previous entry's leaf hash (64 zeros for entry 0)
    time        UTC, "YYYY-MM-DDTHH:MM:SS.ffffffZ"
    action      e.g. "store.pupil.read"
    actor, org, request_id   string or null
    targets     {kind: id}, e.g. {"pupil": "..."}
    outcome     "ok" | "refused" | "failed"
    detail      {key: string | integer | boolean | null}, small

The leaf hash is ``SHA-256(0x00 || bytes)`` (RFC 6962). Because each entry
names its own position and its predecessor's hash, a deleted entry shows as a
gap, a moved one as out of sequence, an inserted one as a second claim on a
position, and an edit as a hash that no longer matches.

The database keeps copies of a few fields beside each entry, for searching
(:data:`COLUMNS`: ``at``, ``action``, ``actor``, ``org``, ``pupil``, ``person``).
They are not hashed, so verification compares each with what its entry says
(:func:`column_mismatch`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from schemas.auditing import AuditEvent
from transfer.errors import InputError, IntegrityError

VERSION = 1
ZERO_HASH = bytes(32)
MAX_BODY = 8192
MAX_TEXT = 200
MAX_DETAIL_TEXT = 500
MAX_DETAIL_KEYS = 32
OUTCOMES = ("ok", "refused", "failed")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

Scalar = str | int | bool | None
#: The search columns stored beside each entry, in the order :data:`Columns` holds them.
COLUMNS = ("at", "action", "actor", "org", "pupil", "person")
#: Their values: the time and five strings.
Columns = tuple[datetime, str, str | None, str | None, str | None, str | None]
_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class EntryFormatError(IntegrityError):
    """Stored bytes are not a canonical audit entry."""


@dataclass(frozen=True)
class Entry:
    seq: int
    prev: bytes
    time: datetime
    action: str
    actor: str | None = None
    org: str | None = None
    targets: dict[str, str] = field(default_factory=dict)
    outcome: str = "ok"
    request_id: str | None = None
    detail: dict[str, Scalar] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "seq": self.seq,
            "prev": self.prev.hex(),
            "time": format_time(self.time),
            "action": self.action,
            "actor": self.actor,
            "org": self.org,
            "targets": dict(self.targets),
            "outcome": self.outcome,
            "request_id": self.request_id,
            "detail": dict(self.detail),
        }

    def encode(self) -> bytes:
        return canonical(self.to_json())

    @property
    def pupil(self) -> str | None:
        return self.targets.get("pupil")

    @property
    def person(self) -> str | None:
        return self.targets.get("staff") or self.targets.get("person")

    def columns(self) -> Columns:
        """The search columns stored beside this entry (see :data:`COLUMNS`)."""
        return (self.time, self.action, self.actor, self.org, self.pupil, self.person)


_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical(obj: dict[str, Any]) -> bytes:
    return _dumps(obj).encode("utf-8")


def format_time(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return when.astimezone(UTC).strftime(TIME_FORMAT)


def _text(name: str, value: object, limit: int = MAX_TEXT, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InputError(f"audit field {name!r} must be a non-empty string of at most {limit}")


def entry_from_event(event: AuditEvent, seq: int, prev: bytes, when: datetime) -> Entry:
    """Check an event (ids, not text) and make the entry for position ``seq``."""
    _text("action", event.action, 100, optional=False)
    for name in ("actor", "org", "request_id"):
        _text(name, getattr(event, name), 100)
    if event.outcome not in OUTCOMES:
        raise InputError(f"audit outcome must be one of {', '.join(OUTCOMES)}")
    for tk, tv in event.targets.items():
        _text("targets key", tk, 40, optional=False)
        _text(f"targets.{tk}", tv, 100, optional=False)
    if len(event.detail) > MAX_DETAIL_KEYS:
        raise InputError(f"audit detail may have at most {MAX_DETAIL_KEYS} keys")
    for k, v in event.detail.items():
        _text("detail key", k, 40, optional=False)
        if isinstance(v, str) and len(v) > MAX_DETAIL_TEXT:
            raise InputError(
                f"audit detail {k!r} is longer than {MAX_DETAIL_TEXT} characters: "
                "the audit log holds ids and short facts, never free text"
            )
        if not (v is None or isinstance(v, str | int | bool)):
            raise InputError(f"audit detail {k!r} must be a string, integer, boolean or null")
    entry = Entry(
        seq=seq,
        prev=prev,
        time=when,
        action=event.action,
        actor=event.actor,
        org=event.org,
        targets=dict(event.targets),
        outcome=event.outcome,
        request_id=event.request_id,
        detail=dict(event.detail),
    )
    if len(entry.encode()) > MAX_BODY:
        raise InputError(f"an audit entry may be at most {MAX_BODY} bytes")
    return entry


_FIELDS = {
    "v",
    "seq",
    "prev",
    "time",
    "action",
    "actor",
    "org",
    "targets",
    "outcome",
    "request_id",
    "detail",
}


def check(body: bytes) -> tuple[int, bytes]:
    """Fast check used by verification: ``(seq, prev)`` if ``body`` is a canonical entry."""
    seq, prev, _ = _check(body)
    return seq, prev


def _check(body: bytes) -> tuple[int, bytes, dict[str, Any]]:
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise EntryFormatError("not UTF-8 JSON") from None
    if type(obj) is not dict or obj.keys() != _FIELDS or obj["v"] != VERSION:
        raise EntryFormatError("not an audit entry of a known version")
    seq, prev_hex, when = obj["seq"], obj["prev"], obj["time"]
    if type(seq) is not int or seq < 0 or type(prev_hex) is not str or len(prev_hex) != 64:
        raise EntryFormatError("a field has the wrong type")
    if type(when) is not str or not _TIME_RE.fullmatch(when) or type(obj["action"]) is not str:
        raise EntryFormatError("a field has the wrong type")
    try:
        prev = bytes.fromhex(prev_hex)
    except ValueError:
        raise EntryFormatError("a field has the wrong type") from None
    if _dumps(obj).encode("utf-8") != body:
        raise EntryFormatError("not in canonical form")
    return seq, prev, obj


def stored_time_text(time_field: str) -> str:
    """An entry's ``time`` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``) as its ``at`` column is read
    for verification: ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC), the text SQLite holds."""
    return f"{time_field[:10]} {time_field[11:-1]}"


def column_mismatch(obj: dict[str, Any], stored: Sequence[object]) -> str | None:
    """The first search column (of :data:`COLUMNS`) whose stored value is not what the
    entry ``obj`` (its parsed, checked JSON) says; None if all agree.

    ``stored`` holds the six columns as read for verification: ``at`` as the text
    ``YYYY-MM-DD HH:MM:SS.ffffff`` (:func:`stored_time_text`), the others as stored.
    """
    targets = obj["targets"] if type(obj["targets"]) is dict else {}
    said = (
        stored_time_text(obj["time"]),
        obj["action"],
        obj["actor"],
        obj["org"],
        targets.get("pupil"),
        targets.get("staff") or targets.get("person"),
    )
    if tuple(stored) == said:
        return None
    for name, held, expected in zip(COLUMNS, stored, said, strict=False):
        if type(held) is not type(expected) or held != expected:
            return name
    return COLUMNS[min(len(stored), len(COLUMNS) - 1)]


def decode(body: bytes) -> Entry:
    """Parse stored bytes; raise :class:`EntryFormatError` unless they are canonical."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise EntryFormatError("not UTF-8 JSON") from None
    if not isinstance(obj, dict) or set(obj) != _FIELDS or obj["v"] != VERSION:
        raise EntryFormatError("not an audit entry of a known version")
    try:
        seq = obj["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("seq")
        prev = bytes.fromhex(obj["prev"])
        if len(prev) != 32:
            raise ValueError("prev")
        if not _TIME_RE.fullmatch(obj["time"]):
            raise ValueError("time")
        when = datetime.fromisoformat(obj["time"])
        entry = Entry(
            seq=seq,
            prev=prev,
            time=when,
            action=obj["action"],
            actor=obj["actor"],
            org=obj["org"],
            targets=dict(obj["targets"]),
            outcome=obj["outcome"],
            request_id=obj["request_id"],
            detail=dict(obj["detail"]),
        )
    except (TypeError, ValueError, AttributeError):
        raise EntryFormatError("a field has the wrong type") from None
    if canonical(obj) != body:
        raise EntryFormatError("not in canonical form")
    return entry


#: What :func:`check_many` returns per body: ``(seq, prev, leaf hash, column)`` or the
#: reason it failed; ``column`` names the first search column that disagrees with the
#: entry (None: they agree, or no columns were given).
Checked = tuple[int, bytes, bytes, str | None] | str

#: A stored row as verification reads it: ``(row seq, body, stored leaf hash, at, action,
#: actor, org, pupil, person)``, the time as text (see :func:`column_mismatch`).
Row = tuple[int, bytes, bytes, object, object, object, object, object, object]


def check_many(
    bodies: list[bytes], columns: Sequence[Sequence[object]] | None = None
) -> list[Checked]:
    """:func:`check` and the RFC 6962 leaf hash of each body (run in worker processes);
    with ``columns`` (the six stored search columns of each body), also whether they
    agree with it (:func:`column_mismatch`)."""
    out: list[Checked] = []
    for i, body in enumerate(bodies):
        try:
            seq, prev, obj = _check(body)
        except EntryFormatError as exc:
            out.append(exc.message)
            continue
        column = None if columns is None else column_mismatch(obj, columns[i])
        out.append((seq, prev, sha256(b"\x00" + body).digest(), column))
    return out


def check_run(rows: list[Row]) -> tuple[bytes, list[bytes]] | list[Checked]:
    """Check a run of stored rows (:data:`Row`) in one go.

    If every row is canonical, numbered ``rows[0][0], rows[0][0] + 1, ...`` in
    its row and its body, matches its stored leaf hash and its search columns,
    and links to the row before, return ``(prev of the first row, leaf hashes)``;
    otherwise the per-row results of :func:`check_many`, so the caller can name
    the problem.
    """
    checked = check_many([r[1] for r in rows], [r[3:] for r in rows])
    if not rows:
        return checked
    first = rows[0][0]
    leaves: list[bytes] = []
    last = b""
    for i, (row, c) in enumerate(zip(rows, checked, strict=True)):
        if isinstance(c, str):
            return checked
        seq, prev, leaf, column = c
        if (
            seq != first + i
            or row[0] != seq
            or leaf != row[2]
            or column is not None
            or (i and prev != last)
        ):
            return checked
        leaves.append(leaf)
        last = leaf
    first_c = checked[0]
    assert not isinstance(first_c, str)
    return first_c[1], leaves
