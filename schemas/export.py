"""Write the JSON Schema of every record type to ``schemas/json/``.

Run ``python -m schemas.export`` after changing a model; a test fails while
the files and the models disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas import directory, manifest, peer, receipt
from schemas.records import SCHEMAS
from schemas.referrals import SCHEMAS as REFERRAL_SCHEMAS

JSON_DIR = Path(__file__).resolve().parent / "json"


def schema_texts() -> dict[str, str]:
    """File name to exact file text, for every exported schema."""
    texts = {
        f"record-{name}.schema.json": json.dumps(
            model.model_json_schema(), indent=2, sort_keys=True
        )
        + "\n"
        for name, model in SCHEMAS.items()
    }
    texts["manifest.schema.json"] = manifest.json_schema_text()
    texts["receipt.schema.json"] = receipt.json_schema_text()
    texts["directory.schema.json"] = (
        json.dumps(directory.json_schema(), indent=2, sort_keys=True) + "\n"
    )
    texts["directory-entry.schema.json"] = (
        json.dumps(directory.entry_json_schema(), indent=2, sort_keys=True) + "\n"
    )
    for name, body in peer.WIRE_BODIES.items():
        texts[f"{name}.schema.json"] = (
            json.dumps(body.model_json_schema(), indent=2, sort_keys=True) + "\n"
        )
    for name, model in REFERRAL_SCHEMAS.items():
        texts[f"{name}.schema.json"] = (
            json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        )
    return texts


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for name, text in schema_texts().items():
        (JSON_DIR / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(schema_texts())} schemas to {JSON_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
