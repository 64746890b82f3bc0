"""How ``directory.json`` (+ ``.minisig``, ``authority.pub``) here were made: by the code of
before entries had a ``town`` (main at 923693f, 6 December 2026), so
the tests can check that a directory signed then still verifies and imports.

Run from a checkout of that older code: ``python make_signed_directory.py OUT_DIR``. The
authority's secret key is thrown away; only its public half is kept.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from keys import minisign
from keys.keyset import KeySet
from transfer.directory.document import (
    add_organisation,
    entry_from_keyset,
    new_document,
    sign_document,
)

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


def main(out: Path) -> None:
    secret = minisign.SecretKey.generate()
    doc = new_document("Testshire County Council", now=T0, valid_for=timedelta(days=3650))
    for org_id, name in (("100001", "Hillside Primary"), ("100002", "Riverside Academy")):
        ks = KeySet.generate(org_id, now=T0)
        doc = add_organisation(
            doc,
            entry_from_keyset(
                ks, name=name, kind="school", urn=org_id, endpoint=f"https://{org_id}.example"
            ),
        )
    _, data, signature = sign_document(doc, secret, now=T0, valid_for=timedelta(days=3650))
    (out / "directory.json").write_bytes(data)
    (out / "directory.json.minisig").write_text(signature, encoding="utf-8")
    (out / "authority.pub").write_text(secret.public_key.to_text("test authority"), "utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
