"""Make the data directory in ``data-dir.tar.gz`` with the code of an older version.

Run from a checkout of that version (commit 0759aa8, the last before documents were
named by a keyed hash), with its dependencies installed::

    git archive 0759aa8 | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/assets/legacy-documents/make_data_dir.py OUT
    tar -C OUT -czf tests/assets/legacy-documents/data-dir.tar.gz .

It uses only store calls that exist in both versions. KEK: ``bytes(range(32))``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

from schemas.auditing import MemoryAudit
from schemas.records import NewPupil
from transfer.store.permissions import Role
from transfer.store.service import Store

KEK = bytes(range(32))
SHARED = b"%PDF-1.4 the same letter, sent home with both children\n" * 200
OWN = b"%PDF-1.4 a body map of the first child only\n" * 300


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def make(data_dir: Path) -> None:
    url = f"sqlite+aiosqlite:///{data_dir / 'handover.db'}"
    store = await Store.open(url, KEK, MemoryAudit(), data_dir=data_dir)
    try:
        await store.create_school(name="Harbourside Primary", urn="199001", laestab="8012000")
        admin = await store.actor_for(
            (
                await store.bootstrap_staff(
                    "199001", username="admin", display_name="Admin", roles=[Role.ADMINISTRATOR]
                )
            ).id
        )
        dsl = await store.actor_for(
            (
                await store.bootstrap_staff(
                    "199001", username="dsl", display_name="Dsl", roles=[Role.DSL]
                )
            ).id
        )
        pupils = []
        for upn, forename in (("H801200001001", "Amara"), ("X801200001002", "Ben")):
            pupil = await store.create_pupil(
                admin,
                NewPupil(
                    upn=upn, surname="Okafor", forename=forename, dob=date(2014, 1, 1), sex="F"
                ),
            )
            pupils.append(pupil.id)
        for pupil_id in pupils:
            await store.add_document(dsl, pupil_id, _once(SHARED), filename="letter.pdf")
        await store.add_document(dsl, pupils[0], _once(OWN), filename="body-map.pdf")
        # The same bytes twice for one pupil: one file, two rows.
        await store.add_document(dsl, pupils[0], _once(OWN), filename="body-map-copy.pdf")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(make(Path(sys.argv[1])))
