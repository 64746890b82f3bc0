"""Key sealing is bound to its owner; the record schemas are versioned and strict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from keys import aead
from schemas.records import (
    SCHEMA_VERSION,
    SCHEMAS,
    ChronologyEntry,
    ConcernRecord,
    NewConcern,
    Provenance,
)
from transfer.store.keyring import KeyRing, field_aad, org_key_aad, pupil_key_aad

NOW = datetime(2026, 9, 7, 9, tzinfo=UTC)


def test_org_key_is_sealed_under_the_kek_for_that_org_only() -> None:
    kek = aead.new_key()
    ring = KeyRing(kek)
    org_key = aead.new_key()
    sealed = ring.seal_org_key("199001", org_key)
    assert aead.unseal(kek, sealed, org_key_aad("199001")) == org_key
    with pytest.raises(aead.UnsealError):
        aead.unseal(kek, sealed, org_key_aad("199002"))
    with pytest.raises(ValueError):
        KeyRing(b"short")


def test_aads_separate_every_dimension() -> None:
    base = field_aad("concerns", "account", "c1", "p1")
    others = {
        field_aad("actions", "account", "c1", "p1"),
        field_aad("concerns", "location", "c1", "p1"),
        field_aad("concerns", "account", "c2", "p1"),
        field_aad("concerns", "account", "c1", "p2"),
    }
    assert base not in others and len(others) == 4
    assert pupil_key_aad("o", "p") != pupil_key_aad("o", "q") != org_key_aad("o")


def test_records_carry_a_schema_version_and_refuse_unknown_fields() -> None:
    assert SCHEMA_VERSION == 1
    record = ConcernRecord(
        id="c1",
        org_id="199001",
        pupil_ids=("p1",),
        category="bullying",
        restricted=False,
        happened_at=NOW,
        recorded_at=NOW,
        recorded_by="s1",
        location="",
        account="a",
        people_involved="",
        status="open",
        provenance=Provenance(
            source_org_id="199002",
            source_org_name="Hill",
            package_id="pkg1",
            received_at=NOW,
            original_id="orig",
        ),
    )
    data = record.model_dump(mode="json")
    assert data["schema_version"] == 1
    assert ConcernRecord.model_validate(data) == record
    with pytest.raises(ValidationError):
        ConcernRecord.model_validate({**data, "surprise": 1})
    with pytest.raises(ValidationError):
        ConcernRecord.model_validate({**data, "schema_version": 2})
    with pytest.raises(ValidationError):
        ConcernRecord.model_validate({**data, "happened_at": "2026-09-07T09:00:00"})  # naive
    entry = ChronologyEntry(
        kind="concern",
        id="c1",
        pupil_id="p1",
        occurred_at=NOW,
        recorded_at=NOW,
        record=record,
        provenance=record.provenance,
    )
    again = ChronologyEntry.model_validate_json(entry.model_dump_json())
    assert isinstance(again.record, ConcernRecord) and again == entry


def test_inputs_validate() -> None:
    with pytest.raises(ValidationError):
        NewConcern(pupil_ids=(), category="x", happened_at=NOW, account="a")
    with pytest.raises(ValidationError):
        NewConcern(pupil_ids=("p",), category="x", happened_at=NOW, account="")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_record_schema_exports_with_its_version(name: str) -> None:
    schema = SCHEMAS[name].model_json_schema()
    assert schema["properties"]["schema_version"]["const"] == 1
    assert schema.get("additionalProperties") is False
