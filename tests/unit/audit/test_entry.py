"""The canonical entry encoding: reproducible bytes, strict parsing, no free text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.auditing import AuditEvent
from transfer.audit.entry import (
    COLUMNS,
    ZERO_HASH,
    EntryFormatError,
    check,
    check_many,
    decode,
    entry_from_event,
)
from transfer.audit.merkle import leaf_hash
from transfer.errors import InputError

WHEN = datetime(2026, 9, 7, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))


def _entry() -> bytes:
    event = AuditEvent(
        action="store.pupil.read",
        actor="staff-1",
        org="school-a",
        targets={"pupil": "p-1", "concern": "c-\u00e9"},
        request_id="r-1",
        detail={"count": 3, "restricted": True, "note": None},
    )
    return entry_from_event(event, 0, ZERO_HASH, WHEN).encode()


def test_encoding_is_sorted_compact_utf8_json_in_utc() -> None:
    body = _entry()
    assert body == (
        '{"action":"store.pupil.read","actor":"staff-1","detail":{"count":3,"note":null,'
        '"restricted":true},"org":"school-a","outcome":"ok","prev":"' + "0" * 64 + '",'
        '"request_id":"r-1","seq":0,"targets":{"concern":"c-\u00e9","pupil":"p-1"},'
        '"time":"2026-09-07T09:00:00.123456Z","v":1}'
    ).encode("utf-8")
    entry = decode(body)
    assert entry.time == WHEN.astimezone(UTC) and entry.pupil == "p-1"
    assert entry.encode() == body
    assert check(body) == (0, ZERO_HASH)
    assert check_many([body, b"{}"]) == [
        (0, ZERO_HASH, leaf_hash(body), None),
        "not an audit entry of a known version",
    ]


def test_the_search_columns_are_checked_against_the_entry() -> None:
    body = _entry()
    entry = decode(body)
    assert entry.columns() == (WHEN, "store.pupil.read", "staff-1", "school-a", "p-1", None)
    at = WHEN.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # the text SQLite holds
    stored: list[object] = [at, "store.pupil.read", "staff-1", "school-a", "p-1", None]
    assert check_many([body], [stored])[0] == (0, ZERO_HASH, leaf_hash(body), None)
    changed: dict[str, object] = {
        "at": WHEN.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.000000"),
        "action": "store.pupil.list",
        "actor": None,
        "org": "school-b",
        "pupil": "p-2",
        "person": "staff-1",
    }
    for i, name in enumerate(COLUMNS):
        edited = [*stored[:i], changed[name], *stored[i + 1 :]]
        assert check_many([body], [edited])[0][-1] == name
    # The same time in another form is not what SQLite compares when searching by time.
    other_form = [WHEN.astimezone(UTC).isoformat(sep=" "), *stored[1:]]
    assert check_many([body], [other_form])[0][-1] == "at"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.replace(b",", b", ", 1),  # whitespace
        lambda b: b.replace(b'"v":1}', b'"v":1,"x":1}'),  # extra field
        lambda b: b.replace(b'"seq":0', b'"seq":-1'),
        lambda b: b.replace(b'"seq":0', b'"seq":0.0'),
        lambda b: b.replace(b'"v":1', b'"v":2'),
        lambda b: b.replace(b"\xc3\xa9", b"\\u00e9"),  # escaped non-ASCII
        lambda b: b.replace(b".123456Z", b"Z"),
        lambda b: b[:-1],
        lambda b: b"\xff" + b,
    ],
)
def test_anything_but_the_canonical_bytes_is_refused(mutate: object) -> None:
    assert callable(mutate)
    bad = mutate(_entry())
    with pytest.raises(EntryFormatError):
        decode(bad)
    with pytest.raises(EntryFormatError):
        check(bad)


def test_duplicate_keys_are_refused() -> None:
    body = _entry()
    dup = body.replace(b'"actor":"staff-1",', b'"actor":"staff-1","actor":"staff-2",')
    assert json.loads(dup)["actor"] == "staff-2"
    with pytest.raises(EntryFormatError):
        check(dup)


@pytest.mark.parametrize(
    "event",
    [
        AuditEvent(action=""),
        AuditEvent(action="x" * 101),
        AuditEvent(action="a", outcome="maybe"),  # type: ignore[arg-type]
        AuditEvent(action="a", detail={"text": "x" * 501}),
        AuditEvent(action="a", detail={f"k{i}": i for i in range(33)}),
        AuditEvent(action="a", detail={"f": 1.5}),  # type: ignore[dict-item]
        AuditEvent(action="a", targets={"pupil": ""}),
    ],
)
def test_bad_events_are_refused(event: AuditEvent) -> None:
    with pytest.raises(InputError):
        entry_from_event(event, 0, ZERO_HASH, WHEN)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        entry_from_event(AuditEvent(action="a"), 0, ZERO_HASH, datetime(2026, 1, 1))
