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
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from transfer.auditing import AuditEvent
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
    return seq, prev


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


#: What :func:`check_many` returns per body: ``(seq, prev, leaf hash)`` or the reason it failed.
Checked = tuple[int, bytes, bytes] | str


def check_many(bodies: list[bytes]) -> list[Checked]:
    """:func:`check` and the RFC 6962 leaf hash of each body (run in worker processes)."""
    out: list[Checked] = []
    for body in bodies:
        try:
            seq, prev = check(body)
        except EntryFormatError as exc:
            out.append(exc.message)
            continue
        out.append((seq, prev, sha256(b"\x00" + body).digest()))
    return out


def check_run(
    rows: list[tuple[int, bytes, bytes]],
) -> tuple[bytes, list[bytes]] | list[Checked]:
    """Check a run of stored rows ``(row seq, body, stored leaf hash)`` in one go.

    If every row is canonical, numbered ``rows[0][0], rows[0][0] + 1, ...`` in
    its row and its body, matches its stored leaf hash and links to the row
    before, return ``(prev of the first row, leaf hashes)``; otherwise the
    per-row results of :func:`check_many`, so the caller can name the problem.
    """
    bodies = [body for _, body, _ in rows]
    checked = check_many(bodies)
    if not rows:
        return checked
    first = rows[0][0]
    leaves: list[bytes] = []
    last = b""
    for i, ((row, _, stored), c) in enumerate(zip(rows, checked, strict=True)):
        if isinstance(c, str):
            return checked
        seq, prev, leaf = c
        if seq != first + i or row != seq or leaf != stored or (i and prev != last):
            return checked
        leaves.append(leaf)
        last = leaf
    first_c = checked[0]
    assert not isinstance(first_c, str)
    return first_c[1], leaves
