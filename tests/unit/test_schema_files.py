from __future__ import annotations

import json

from schemas.export import JSON_DIR, schema_texts


def test_every_schema_file_is_in_step_with_its_model() -> None:
    texts = schema_texts()
    assert "record-concern.schema.json" in texts and "manifest.schema.json" in texts
    on_disk = {p.name for p in JSON_DIR.glob("*.schema.json")}
    assert on_disk == set(texts), "run `python -m schemas.export`"
    for name, text in texts.items():
        assert (JSON_DIR / name).read_text(encoding="utf-8") == text, f"{name} is stale"


def test_record_schemas_carry_a_schema_version() -> None:
    for name, text in schema_texts().items():
        if name.startswith("record-"):
            props = json.loads(text).get("properties", {})
            assert "schema_version" in props, name
