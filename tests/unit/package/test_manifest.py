"""The manifest model: canonical bytes, strict parsing, and the exported JSON Schema."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.manifest import (
    FORMAT_VERSION,
    Manifest,
    ManifestDecodeError,
    ManifestEntry,
    json_schema_text,
)
from tests.unit.package.support import make_manifest, parties, sample_entries

SCHEMA_FILE = Path(__file__).resolve().parents[3] / "schemas" / "json" / "manifest.schema.json"


def _manifest() -> Manifest:
    return make_manifest(parties(), sample_entries())


def test_schema_file_is_in_step_with_the_model() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json_schema_text(), (
        "schemas/json/manifest.schema.json is out of date: regenerate it with "
        "`python -c 'from schemas.manifest import json_schema_text as t; "
        'open("schemas/json/manifest.schema.json","w").write(t())\'`'
    )


def test_canonical_bytes_are_sorted_compact_utf8_and_round_trip() -> None:
    m = _manifest()
    data = m.canonical_bytes()
    assert data == json.dumps(
        json.loads(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert b" " not in data.replace(b"Jo", b"")  # compact (the names hold no spaces)
    assert Manifest.from_bytes(data) == m
    parsed = json.loads(data)
    assert parsed["format"] == FORMAT_VERSION
    assert parsed["created_at"] == "2026-11-20T09:30:00Z"
    assert [e["path"] for e in parsed["entries"]] == [e.path for e in sample_entries()]


def test_non_ascii_is_written_as_utf8_not_escaped() -> None:
    m = _manifest().model_copy(
        update={"subject": _manifest().subject.model_copy(update={"surname": "Ōkafor-Brontë"})}
    )
    data = m.canonical_bytes()
    assert "Ōkafor-Brontë".encode() in data
    assert Manifest.from_bytes(data).subject.surname == "Ōkafor-Brontë"


def test_created_at_is_normalised_to_utc() -> None:
    m = _manifest()
    local = datetime(2026, 11, 20, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    again = Manifest.model_validate({**m.model_dump(), "created_at": local})
    assert json.loads(again.canonical_bytes())["created_at"] == "2026-11-20T09:30:00Z"
    with pytest.raises(ValidationError):
        Manifest.model_validate({**m.model_dump(), "created_at": datetime(2026, 11, 20)})


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.replace(b'{"created_at"', b'{ "created_at"', 1), "canonical"),
        (lambda d: d + b"\n", "canonical"),
        (
            lambda d: d.replace(b'"kind":"leaver_file"', b'"kind":"leaver_file","kind":"other"'),
            "twice",
        ),
        (lambda d: d.replace(b'"kind":"leaver_file"', b'"kind":"gossip"'), "kind"),
        (lambda d: d.replace(b'"kind":"leaver_file"', b'"kind":"leaver_file","extra":1'), "extra"),
        (lambda d: d.replace(b"handover-package/1", b"handover-package/2"), "format"),
        (lambda d: b"\xff" + d, "UTF-8"),
        (lambda d: b"[]", "object"),
        (lambda d: d[:-5], "JSON"),
    ],
)
def test_from_bytes_refuses_anything_but_a_valid_canonical_manifest(
    mutate: object, reason: str
) -> None:
    data = _manifest().canonical_bytes()
    assert callable(mutate)
    with pytest.raises(ManifestDecodeError) as info:
        Manifest.from_bytes(mutate(data))
    assert reason.lower() in str(info.value).lower()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../up",
        "records/../../up",
        "./records/x.json",
        "records//x.json",
        "records/x.json/",
        ".hidden",
        "back\\slash",
        "manifest.json",
        "manifest.json.minisig",
        "",
        "a" * 201,
        "sp ace",
    ],
)
def test_entry_paths_must_be_safe(path: str) -> None:
    with pytest.raises(ValidationError):
        ManifestEntry(path=path, size=1, sha256="0" * 64)


def test_entries_must_not_collide() -> None:
    m = _manifest()
    e = ManifestEntry(path="records/pupil.json", size=1, sha256="0" * 64)
    for clash in (e, ManifestEntry(path="RECORDS/pupil.json", size=1, sha256="0" * 64)):
        with pytest.raises(ValidationError, match="twice"):
            Manifest.model_validate({**m.model_dump(), "entries": [e, clash]})
    with pytest.raises(ValidationError, match="inside"):
        Manifest.model_validate(
            {
                **m.model_dump(),
                "entries": [
                    ManifestEntry(path="records", size=1, sha256="0" * 64),
                    ManifestEntry(path="records/pupil.json", size=1, sha256="0" * 64),
                ],
            }
        )


def test_sha256_is_lower_case_hex() -> None:
    with pytest.raises(ValidationError):
        ManifestEntry(path="a", size=1, sha256="A" * 64)
    with pytest.raises(ValidationError):
        ManifestEntry(path="a", size=-1, sha256="a" * 64)
